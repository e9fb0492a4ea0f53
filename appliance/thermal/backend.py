"""Where the thermal daemon's sensor comes from: the AMG8833 on the Pi, or the simulated one.

Either way the daemon gets a `Hardware`: a blocking `connect()` that returns the real driver
(appliance.thermal.amg8833.AMG8833) talking to an I2C bus, and the gpiozero pin factory and pin number of
the INT line. There is one driver and one code path: in the sim the bus is FakeI2C with FakeAMG8833 on it,
rendered from the scenario by ThermalScene, and the fake's INT output is a gpiozero MockFactory pin that
the daemon's DigitalInputDevice listens on, so interrupts reach the daemon through gpiozero's callback
machinery exactly as a real edge does.

Sim time is scene time (appliance.sim.clock), so the thermal sim and the camera sim show the same moment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.config import AppConfig
from appliance.errors import ConfigError, SensorFault
from appliance.sim.clock import load_sim_scenario, scene_time
from appliance.sim.scenario import Scenario
from appliance.sim.thermal_scene import ThermalScene
from appliance.thermal.amg8833 import AMG8833
from appliance.thermal.fake_amg8833 import FakeAMG8833, FakeI2C, FaultState

log = logging.getLogger(__name__)


@dataclass
class Hardware:
    description: str  # for logs and the status line
    address: int
    connect: Callable[[], AMG8833]  # blocking; SensorFault when the sensor does not answer
    int_pin: int | None  # BCM number of INT, None: no wire, presence from frames only
    pin_factory: Any | None  # gpiozero factory for INT; None: gpiozero's own choice
    # The simulated chip's clock: call at least every 0.1 s, from the thread that does the I2C work
    # (the fake is not thread-safe). None on real hardware, whose clock runs by itself.
    tick: Callable[[], None] | None = None
    close: Callable[[], None] = field(default=lambda: None)


def open_hardware(config: AppConfig) -> Hardware:
    """The backend config.thermal.backend names. Config mistakes raise ConfigError; an absent or silent
    sensor does not (connect() raises SensorFault, and the daemon keeps retrying)."""
    if config.thermal.backend == "sim":
        return open_sim(config)
    return open_amg8833(config)


# -- gpiozero pin factories ------------------------------------------------------------------------------


def make_pin_factory(name: str) -> Any | None:
    """config gpio.pin_factory -> a gpiozero factory; "auto" -> None (gpiozero picks, as it always does)."""
    if name == "auto":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    try:
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
    except ImportError as exc:
        raise ConfigError(
            "config", "gpio.pin_factory", f"{name} is not installed here ({exc}); install the [pi] extra"
        ) from None
    except Exception as exc:  # gpiozero raises its own errors when the chip is not there (not on a Pi)
        raise ConfigError("config", "gpio.pin_factory", f"{name} cannot start here: {exc}") from None
    raise ConfigError("config", "gpio.pin_factory", f"unknown pin factory {name!r}")


# -- the real sensor ---------------------------------------------------------------------------------------


def open_i2c(bus: int) -> Any:
    """/dev/i2c-<bus> as a busio.I2C (what adafruit_bus_device expects), for any adapter number.

    busio.I2C(board.SCL, board.SDA) only knows the header's bus 1; thermal.i2c_bus may name another
    (an i2c-gpio overlay), so this opens the numbered adapter through Blinka's generic Linux I2C, as
    adafruit-extended-bus does. The bus speed is the kernel's (dtparam=i2c_arm_baudrate=400000 in
    config.txt for the 3 ms frame burst), not something user space can set.
    """
    path = f"/dev/i2c-{bus}"
    if not os.path.exists(path):
        raise SensorFault(f"{path} does not exist: enable I2C (raspi-config) or check thermal.i2c_bus")
    try:
        import busio
        from adafruit_blinka.microcontroller.generic_linux.i2c import (  # type: ignore[import-untyped]
            I2C as LinuxI2C,
        )
    except ImportError as exc:
        raise SensorFault(f"cannot open {path}: Blinka is missing ({exc}); install the [pi] extra") from None

    class NumberedI2C(busio.I2C):
        def __init__(self, number: int) -> None:
            self._i2c = LinuxI2C(number, mode=LinuxI2C.MASTER)
            self._lock = threading.RLock()

    try:
        return NumberedI2C(bus)
    except (OSError, RuntimeError) as exc:
        raise SensorFault(f"cannot open {path}: {exc}") from exc


def open_amg8833(config: AppConfig) -> Hardware:
    thermal = config.thermal
    factory = make_pin_factory(config.gpio.pin_factory) if thermal.int_pin is not None else None
    bus: list[Any] = []  # opened on first connect, kept across reconnects

    def connect() -> AMG8833:
        if not bus:
            bus.append(open_i2c(thermal.i2c_bus))
        return AMG8833(bus[0], thermal.address)

    def close() -> None:
        for each in bus:
            each.deinit()
        if factory is not None:
            factory.close()

    return Hardware(
        description=f"AMG8833 at 0x{thermal.address:02x} on /dev/i2c-{thermal.i2c_bus}",
        address=thermal.address,
        connect=connect,
        int_pin=thermal.int_pin,
        pin_factory=factory,
        close=close,
    )


# -- the simulated sensor ----------------------------------------------------------------------------------


class SceneClockScene:
    """ThermalScene as the fake sees it, on the shared scene clock.

    The fake asks for field(t) and faults_at(t) with t in seconds since it was made; this maps that to
    scene time (appliance.sim.clock), the same moment the camera sim shows.
    """

    def __init__(self, scene: ThermalScene, origin: float, epoch: float | None = None) -> None:
        self.scene = scene
        self.scenario: Scenario = scene.scenario
        self.origin = origin  # monotonic time of the fake's t = 0
        self.epoch = epoch

    def scene_time(self, t: float) -> float:
        return scene_time(self.scenario, self.origin + t, epoch=self.epoch)

    def field(self, t: float) -> tuple[list[float], float]:
        return self.scene.field(self.scene_time(t))

    def faults_at(self, t: float) -> FaultState:
        return self.scene.faults_at(self.scene_time(t))


@dataclass
class SimRig:
    """The parts of the simulated sensor, for the daemon and for tests that look inside."""

    scenario: Scenario
    scene: SceneClockScene
    device: FakeAMG8833
    i2c: FakeI2C
    pin_factory: Any | None
    pin: Any | None  # the MockPin the fake drives; the daemon listens on the same one


def build_sim(config: AppConfig, *, epoch: float | None = None) -> SimRig:
    """Scenario -> ThermalScene -> FakeAMG8833 on FakeI2C at thermal.address, INT on a MockFactory pin."""
    factory_name = config.gpio.pin_factory
    if factory_name not in ("mock", "auto"):
        # A simulated chip can only pull a simulated line low.
        raise ConfigError(
            "config",
            "gpio.pin_factory",
            f'thermal.backend = "sim" drives a simulated INT pin: use "mock" or "auto", not {factory_name!r}',
        )
    scenario = load_sim_scenario(config.sim.scenario)
    origin = time.monotonic()
    scene = SceneClockScene(ThermalScene(scenario), origin, epoch)
    factory: Any | None = None
    pin: Any | None = None
    if config.thermal.int_pin is not None:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
        try:
            pin = factory.pin(config.thermal.int_pin)
        except Exception as exc:  # gpiozero's PinInvalidPin for a number the mock board lacks
            raise ConfigError(
                "config", "thermal.int_pin", f"no such pin on the simulated board: {exc}"
            ) from None
    device = FakeAMG8833(scene, clock=time.monotonic, seed=config.sim.seed, int_pin=pin, faults=scene)
    # The fake's t = 0 is its construction; re-read the origin so the two clocks agree to the microsecond.
    scene.origin = time.monotonic() - device.scene_time()
    i2c = FakeI2C(devices={config.thermal.address: device})
    return SimRig(scenario, scene, device, i2c, factory, pin)


def open_sim(config: AppConfig) -> Hardware:
    rig = build_sim(config)
    address = config.thermal.address

    def close() -> None:
        if rig.pin_factory is not None:
            rig.pin_factory.close()

    return Hardware(
        description=f"simulated AMG8833 at 0x{address:02x} (scenario {rig.scenario.name})",
        address=address,
        connect=lambda: AMG8833(rig.i2c, address),
        int_pin=config.thermal.int_pin,
        pin_factory=rig.pin_factory,
        tick=rig.device.tick,
        close=close,
    )
