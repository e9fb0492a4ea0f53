"""LEDs, buzzer and relay: the pure mapping, and the pins through gpiozero's MockFactory."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import msgspec
import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory

from appliance.config import GpioConfig
from appliance.screening.outputs import (
    ELEVATED_BEEP,
    NORMAL_BEEP,
    Indication,
    Outputs,
    indication,
    pin_factory,
)

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 23


def gpio(**kw: object) -> GpioConfig:
    base: dict[str, object] = {
        "pin_factory": "mock",
        "relay": RELAY,
        "relay_enabled": True,
        "relay_open_s": 0.3,
    }
    base.update(kw)
    return msgspec.convert(base, GpioConfig)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def outputs(factory: MockFactory) -> Iterator[Outputs]:
    out = Outputs(gpio(), factory=factory)
    assert not out.degraded, out.problems
    yield out
    out.close()


def level(factory: MockFactory, pin: int) -> bool:
    return bool(factory.pin(pin).state)


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def beeps(factory: MockFactory) -> int:
    """Rising edges seen on the buzzer pin since it was set up."""
    states = [s.state for s in factory.pin(BUZZER).states]
    return sum(1 for a, b in itertools.pairwise(states) if b and not a)


# --- the mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "shown", "decided", "expected"),
    [
        ("result", "normal", "normal", Indication(green=True, beep=NORMAL_BEEP, relay="open")),
        ("result", "normal", None, Indication(green=True)),  # shown again: no second beep or opening
        ("result", "elevated", "elevated", Indication(red=True, beep=ELEVATED_BEEP, relay="close")),
        ("result", "elevated", None, Indication(red=True)),
        ("result", "retry", "retry", Indication()),
        ("fault", None, None, Indication(red=True, relay="close")),
        ("fault", None, "retry", Indication(red=True, relay="close")),  # a window cut by a fault
        ("idle", None, None, Indication()),
        ("measuring", None, None, Indication()),
        ("warming-up", None, None, Indication()),
    ],
)
def test_indication(state: str, shown: str | None, decided: str | None, expected: Indication) -> None:
    assert indication(state, shown, decided) == expected  # type: ignore[arg-type]


def test_the_two_sounds_differ_and_are_short() -> None:
    assert NORMAL_BEEP != ELEVATED_BEEP
    assert NORMAL_BEEP.n != ELEVATED_BEEP.n
    assert max(NORMAL_BEEP.duration_s, ELEVATED_BEEP.duration_s) < 1.0


# --- the pins ----------------------------------------------------------------------------------


def test_normal_result_lights_green_chirps_once_and_opens_the_relay_for_a_while(
    outputs: Outputs, factory: MockFactory
) -> None:
    outputs.apply(indication("result", "normal", "normal"))
    assert level(factory, GREEN) and not level(factory, RED)
    assert level(factory, RELAY)
    wait_for(lambda: not level(factory, BUZZER) and beeps(factory) >= 1)
    assert beeps(factory) == NORMAL_BEEP.n == 1
    wait_for(lambda: not level(factory, RELAY))
    # Open once, for relay_open_s (0.3 s) at least: timed by the pin's own record of its changes (the
    # time since the previous one), not by when this thread got to look.
    relay = factory.pin(RELAY).states
    assert [s.state for s in relay] == [False, True, False], relay
    assert relay[-1].timestamp >= 0.3, relay
    # The state is published again while the person stays: nothing new happens.
    outputs.apply(indication("result", "normal", None))
    assert not level(factory, RELAY) and beeps(factory) == 1 and level(factory, GREEN)


def test_elevated_result_lights_red_beeps_three_times_and_shuts_an_open_relay(
    outputs: Outputs, factory: MockFactory
) -> None:
    outputs.apply(indication("result", "normal", "normal"))
    assert level(factory, RELAY)
    wait_for(lambda: beeps(factory) == 1 and not level(factory, BUZZER))
    outputs.apply(indication("result", "elevated", "elevated"))
    assert not level(factory, RELAY), "the door must close at once on an elevated result"
    assert level(factory, RED) and not level(factory, GREEN)
    wait_for(lambda: beeps(factory) == 1 + ELEVATED_BEEP.n and not level(factory, BUZZER))


def test_fault_lights_red_and_keeps_the_relay_shut(outputs: Outputs, factory: MockFactory) -> None:
    outputs.apply(indication("result", "normal", "normal"))
    outputs.apply(indication("fault", None, None))
    assert level(factory, RED) and not level(factory, GREEN) and not level(factory, RELAY)
    outputs.apply(indication("idle", None, None))
    assert not level(factory, RED)


def test_close_switches_everything_off_with_the_relay_shut(factory: MockFactory) -> None:
    out = Outputs(gpio(), factory=factory)
    out.apply(indication("result", "normal", "normal"))
    out.apply(Indication(red=True, green=True))
    assert level(factory, RELAY) and level(factory, RED) and level(factory, GREEN)
    out.close()
    for pin in (GREEN, RED, BUZZER, RELAY):
        assert not level(factory, pin), pin
    out.close()  # twice is harmless
    out.apply(indication("result", "normal", "normal"))  # and so is a late state
    # The pins were released: another device can take them.
    LED(GREEN, pin_factory=factory).close()


def test_missing_pins_and_a_disabled_relay_are_simply_not_driven(factory: MockFactory) -> None:
    out = Outputs(gpio(buzzer=None, relay_enabled=False), factory=factory)
    try:
        assert out.buzzer is None and out.relay is None and not out.degraded
        out.apply(indication("result", "normal", "normal"))
        assert level(factory, GREEN)
        assert not level(factory, RELAY)  # never set up, never switched
    finally:
        out.close()


def test_a_device_that_fails_degrades_and_the_others_keep_working(factory: MockFactory) -> None:
    squatter = LED(RED, pin_factory=factory)  # the red LED's pin is taken
    try:
        out = Outputs(gpio(), factory=factory)
        assert out.degraded and "red LED" in out.problems
        out.apply(indication("result", "elevated", "elevated"))  # no exception
        wait_for(lambda: beeps(factory) == ELEVATED_BEEP.n)
        out.apply(indication("result", "normal", "normal"))
        assert level(factory, GREEN)
        # A device that breaks later (here: closed behind the daemon's back) is reported too.
        out.green.close()
        out.apply(indication("idle", None, None))
        assert "green LED" in out.problems
        out.close()
    finally:
        squatter.close()


def test_a_device_that_fails_once_and_works_again_is_no_longer_a_problem(factory: MockFactory) -> None:
    """A transient failure driving a pin (a glitch on the GPIO chip) must not leave health
    degraded until the daemon restarts: the next time the device works, the problem is gone."""
    out = Outputs(gpio(), factory=factory)
    try:
        real_on = out.green.on
        calls = []

        def glitchy_on() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise OSError(5, "Input/output error")
            real_on()

        out.green.on = glitchy_on
        out.apply(indication("result", "normal", "normal"))
        assert out.degraded and "green LED" in out.problems
        out.apply(indication("idle", None, None))  # the LED switched off: it works again
        out.apply(indication("result", "normal", "normal"))
        assert level(factory, GREEN) and not out.degraded, out.problems
    finally:
        out.close()


def test_pin_factories_by_name() -> None:
    assert isinstance(pin_factory("mock"), MockFactory)
    assert pin_factory("auto") is None
    with pytest.raises(ValueError, match="unknown"):
        pin_factory("banana")


def test_a_pin_library_that_cannot_load_leaves_screening_without_gpio() -> None:
    try:
        import lgpio  # noqa: F401

        pytest.skip("lgpio is installed here; its failure cannot be provoked")
    except ImportError:
        pass
    out = Outputs(gpio(pin_factory="lgpio"))
    assert out.degraded and "pin factory" in out.problems
    out.apply(indication("result", "normal", "normal"))
    out.close()
