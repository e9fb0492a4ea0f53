"""The kiosk's indicators through gpiozero: green LED, red LED, buzzer and an optional door relay.

The mapping from what the screening shows to what the outputs do is the pure ``indication``;
``Outputs`` is the thin shell that drives the pins. What it means at the door:

    result normal     green on, one short chirp, the relay (if fitted and enabled) opens for
                      gpio.relay_open_s and then closes
    result elevated   red on, three longer beeps, the relay is closed at once
    fault             red on, the relay is closed at once
    anything else     LEDs off (a "retry" result is told on the screen, without a sound)

Pins come from [gpio]; a pin set to none is not fitted. GPIO is never allowed to stop
screening: a device that cannot be set up or driven is logged, reported in ``problems`` (the
daemon turns that into a degraded health; a device that works again leaves it) and skipped.
``close`` switches everything off, the relay closed first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from appliance.bus.topics import ResultName, ScreeningStateName
from appliance.config import GpioConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Beep:
    """``n`` beeps of ``on_s`` seconds, ``off_s`` apart."""

    on_s: float
    off_s: float
    n: int

    @property
    def duration_s(self) -> float:
        return self.n * self.on_s + (self.n - 1) * self.off_s


# Distinct by count and length so they can be told apart without looking; both short, so
# the next person is not kept waiting: under a second in all.
NORMAL_BEEP = Beep(on_s=0.08, off_s=0.0, n=1)
ELEVATED_BEEP = Beep(on_s=0.2, off_s=0.1, n=3)

RelayAction = Literal["open", "close"] | None


@dataclass(frozen=True, slots=True)
class Indication:
    green: bool = False
    red: bool = False
    beep: Beep | None = None  # sound once, now
    relay: RelayAction = None  # "open": for relay_open_s; "close": now; None: leave as it is


def indication(state: ScreeningStateName, shown: ResultName | None, decided: ResultName | None) -> Indication:
    """What the outputs do for a published state.

    ``shown``: the result the state displays (with state "result"); ``decided``: the result
    decided on this very step, if any, which alone triggers the one-shot sound and relay
    (a state published again, or a retained value seen again, must not open the door twice).
    """
    green = state == "result" and shown == "normal"
    red = state == "fault" or (state == "result" and shown == "elevated")
    beep = None
    relay: RelayAction = None
    if decided == "normal":
        beep, relay = NORMAL_BEEP, "open"
    elif decided == "elevated":
        beep, relay = ELEVATED_BEEP, "close"
    if state == "fault":
        relay = "close"
    return Indication(green=green, red=red, beep=beep, relay=relay)


def pin_factory(name: str) -> Any:
    """gpiozero's pin factory by config name; None means gpiozero's own default ("auto")."""
    if name == "auto":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    raise ValueError(f"unknown gpio.pin_factory {name!r}")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# Run a callback after a delay; asyncio's loop.call_later in the daemon. Timing the beeps and
# the relay ourselves, rather than with gpiozero's blink()/beep(), starts no thread per
# result: a thread start right after a result competed for the CPU with the alert on its way
# to the broker (measured: 1.3 ms per result in the daemon, on two cores).
CallLater = Callable[[float, Callable[[], None]], Cancellable]


def thread_call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    """A CallLater for code without an event loop (tools, tests)."""
    timer = threading.Timer(delay, callback)
    timer.daemon = True
    timer.start()
    return timer


class Outputs:
    """The devices, each optional; every call is safe whatever failed before."""

    def __init__(self, gpio: GpioConfig, *, factory: Any = None, call_later: CallLater | None = None) -> None:
        """``factory``: a gpiozero pin factory to use instead of ``gpio.pin_factory`` (tests);
        ``call_later``: the timer for beeps and the relay (the daemon passes its loop's)."""
        self.relay_open_s = gpio.relay_open_s
        self.call_later = call_later or thread_call_later
        self.problems: dict[str, str] = {}
        self.factory: Any = None
        self.green: Any = None
        self.red: Any = None
        self.buzzer: Any = None
        self.relay: Any = None
        self._timers: dict[str, list[Cancellable]] = {"buzzer": [], "relay": []}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.factory = factory if factory is not None else pin_factory(gpio.pin_factory)
        except Exception as exc:
            self._problem("pin factory", f"{gpio.pin_factory}: {exc}")
            return
        from gpiozero import LED, Buzzer, DigitalOutputDevice

        self.green = self._make("green LED", gpio.green_led, LED)
        self.red = self._make("red LED", gpio.red_led, LED)
        self.buzzer = self._make("buzzer", gpio.buzzer, Buzzer)
        if gpio.relay_enabled and gpio.relay is not None:
            # active_high with initial_value False: the door stays shut from the first moment.
            self.relay = self._make("relay", gpio.relay, DigitalOutputDevice, initial_value=False)

    @property
    def degraded(self) -> bool:
        return bool(self.problems)

    def summary(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.problems.items())

    def _problem(self, what: str, reason: str) -> None:
        if self.problems.get(what) != reason:
            log.error("GPIO %s failed: %s (screening goes on without it)", what, reason)
        self.problems[what] = reason

    def _make(self, what: str, pin: int | None, cls: Any, **kwargs: Any) -> Any:
        if pin is None:
            return None
        try:
            return cls(pin, pin_factory=self.factory, **kwargs)
        except Exception as exc:
            self._problem(what, f"GPIO{pin}: {exc}")
            return None

    def _set(self, what: str, device: Any, on: bool) -> None:
        if device is None:
            return
        try:
            if on:
                device.on()
            else:
                device.off()
        except Exception as exc:
            self._problem(what, f"{'on' if on else 'off'}: {exc}")
            return
        if what in self.problems:
            # A glitch that passed: health must not stay degraded until the next restart.
            log.info("GPIO %s works again", what)
            del self.problems[what]

    def _later(self, group: str, delay: float, what: str, device: Any, on: bool) -> None:
        def fire() -> None:
            with self._lock:
                if self._closed:
                    return
                self._set(what, device, on)

        try:
            self._timers[group].append(self.call_later(delay, fire))
        except Exception as exc:  # a loop that is closing: the device stays as it is now
            self._problem(what, f"timer: {exc}")

    def _cancel(self, group: str) -> None:
        for timer in self._timers[group]:
            timer.cancel()
        self._timers[group] = []

    def apply(self, ind: Indication) -> None:
        with self._lock:
            if self._closed:
                return
            # The relay first: closing a door must not wait behind an LED that fails slowly.
            if ind.relay is not None and self.relay is not None:
                self._cancel("relay")
                self._set("relay", self.relay, ind.relay == "open")
                if ind.relay == "open":
                    self._later("relay", self.relay_open_s, "relay", self.relay, False)
            self._set("green LED", self.green, ind.green)
            self._set("red LED", self.red, ind.red)
            if ind.beep is not None and self.buzzer is not None:
                b = ind.beep
                self._cancel("buzzer")
                self._set("buzzer", self.buzzer, True)
                t = b.on_s
                self._later("buzzer", t, "buzzer", self.buzzer, False)
                for _ in range(b.n - 1):
                    t += b.off_s
                    self._later("buzzer", t, "buzzer", self.buzzer, True)
                    t += b.on_s
                    self._later("buzzer", t, "buzzer", self.buzzer, False)

    def off(self) -> None:
        with self._lock:
            for group in self._timers:
                self._cancel(group)
            self._set("relay", self.relay, False)
            self._set("buzzer", self.buzzer, False)
            self._set("green LED", self.green, False)
            self._set("red LED", self.red, False)

    def close(self) -> None:
        """Everything off (the relay closed first) and the pins released."""
        self.off()
        with self._lock:
            self._closed = True
            for what in ("relay", "buzzer", "red", "green"):
                device = getattr(self, what)
                if device is not None:
                    try:
                        device.close()
                    except Exception as exc:
                        log.warning("GPIO %s: close failed: %s", what, exc)
                    setattr(self, what, None)
