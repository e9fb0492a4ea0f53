"""One exception tree for the whole package.

ApplianceError
 +-- ConfigError            a config file or value is invalid (names file, key, reason)
 +-- StateError             state on disk is unreadable or cannot be written
 +-- BusError
 |    +-- FrameError        a bus frame is malformed, oversized or of the wrong type
 |    +-- NotConnected      the bus client has no connection right now
 |    +-- RequestTimeout    no reply to a request in time
 |    +-- RemoteError       the serving side of a request reported an error
 |    +-- NoSuchMethod      nobody serves the requested method
 +-- HardwareError          a device failed (I2C, camera, GPIO)
 |    +-- SensorFault       the thermal sensor failed or returned implausible data
 +-- RecordingError         a thermal recording is malformed (names the line)
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ApplianceError):
    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class StateError(ApplianceError):
    pass


class BusError(ApplianceError):
    pass


class FrameError(BusError):
    pass


class NotConnected(BusError):
    pass


class RequestTimeout(BusError):
    pass


class RemoteError(BusError):
    pass


class NoSuchMethod(RemoteError):
    pass


class HardwareError(ApplianceError):
    pass


class SensorFault(HardwareError):
    pass


class RecordingError(ApplianceError):
    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        super().__init__(f"{source}:{line}: {reason}")
