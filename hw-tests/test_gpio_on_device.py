"""On a device: the screening daemon's outputs (green LED, red LED, buzzer, door relay) on real GPIO.

Drives the pins through the daemon's own Outputs (appliance/screening/outputs.py) with the pin
library the config names, and reads each line back from the kernel's GPIO character device
(lgpio's gpio_read on the claimed line), so a pin that cannot be claimed or driven fails here.
Whether the LED lights and the buzzer sounds is for a person to see and hear: with
APPLIANCE_HW_EYES=1 (and -s) the test pauses on each output and asks.

    sudo systemctl stop appliance-screening        # it owns the pins while it runs
    APPLIANCE_HW_EYES=1 .venv/bin/pytest hw-tests/test_gpio_on_device.py -s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import AppConfig, load_config
from appliance.screening.outputs import Outputs, indication


@pytest.fixture
def config(raspberry_pi: str) -> AppConfig:
    config = load_config()
    if config.gpio.pin_factory == "mock":
        pytest.skip("gpio.pin_factory is mock in this config: no real pins to drive")
    if not list(Path("/dev").glob("gpiochip*")):
        pytest.skip("no /dev/gpiochip*: this kernel exposes no GPIO character device")
    systemctl = shutil.which("systemctl")
    if systemctl is not None:
        active = subprocess.run([systemctl, "is-active", "--quiet", "appliance-screening"], check=False)
        if active.returncode == 0:
            pytest.skip("the screening daemon owns the pins: systemctl stop appliance-screening first")
    return config


@pytest.fixture
def outputs(config: AppConfig) -> Iterator[Outputs]:
    out = Outputs(config.gpio)
    try:
        yield out
    finally:
        out.close()


def level(device: Any) -> bool:
    """The line's level as the kernel reports it, not gpiozero's idea of it."""
    return bool(device.pin.state)


def confirm(what: str) -> None:
    if os.environ.get("APPLIANCE_HW_EYES") != "1":
        return
    answer = input(f"\n  {what} -- is it so? [y/N] ")
    assert answer.strip().lower().startswith("y"), f"the technician says no: {what}"


def test_every_configured_output_is_claimed(outputs: Outputs) -> None:
    assert not outputs.degraded, outputs.summary()


@pytest.mark.parametrize("name", ["green", "red", "buzzer", "relay"])
def test_each_output_switches_on_and_off(config: AppConfig, outputs: Outputs, name: str) -> None:
    device = getattr(outputs, name)
    if device is None:
        why = "relay_enabled is false or no relay pin" if name == "relay" else "no pin configured"
        pytest.skip(f"{name}: {why} in [gpio]")
    device.on()
    time.sleep(0.3)
    assert level(device) == bool(device.active_high), f"{name} on: the line did not follow"
    confirm(f"the {name} output is ON (LED lit / buzzer sounding / relay clicked)")
    device.off()
    time.sleep(0.1)
    assert level(device) != bool(device.active_high), f"{name} off: the line did not follow"
    confirm(f"the {name} output is OFF again")


def test_an_elevated_result_shows_red_and_beeps(outputs: Outputs) -> None:
    if outputs.red is None or outputs.buzzer is None:
        pytest.skip("needs the red LED and the buzzer configured")
    outputs.apply(indication("result", "elevated", "elevated"))
    time.sleep(0.05)
    assert outputs.red.is_lit and not (outputs.green and outputs.green.is_lit)
    assert level(outputs.buzzer) == bool(outputs.buzzer.active_high), "the buzzer did not start"
    confirm("red LED lit, green off, the buzzer beeping")
    time.sleep(3)
    outputs.off()


def test_the_relay_stays_shut_unless_enabled(config: AppConfig, outputs: Outputs) -> None:
    if config.gpio.relay_enabled:
        assert outputs.relay is not None and not outputs.relay.value, "the relay must start shut"
    else:
        assert outputs.relay is None, "relay_enabled is false: the relay pin must not be claimed"
