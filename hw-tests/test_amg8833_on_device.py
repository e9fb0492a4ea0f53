"""On a device: the AMG8833 on I2C answers, streams at 10 fps, and a hand over it fires the interrupt.

Needs a Raspberry Pi with the sensor on thermal.i2c_bus (default 1: header pins 3 and 5) and INT wired to
thermal.int_pin, as the device's config says (/etc/appliance/appliance.toml, or $APPLIANCE_CONFIG). The
tests drive the sensor themselves, so they skip while the thermal daemon runs:

    sudo systemctl stop appliance-thermal
    APPLIANCE_HW_HAND=1 .venv/bin/pytest hw-tests/test_amg8833_on_device.py -s

The hand test needs a person and runs only with APPLIANCE_HW_HAND=1 (and -s, to see the prompt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.config import AppConfig, load_config
from appliance.thermal import registers as reg
from appliance.thermal.amg8833 import AMG8833, InterruptConfig, InterruptMode
from appliance.thermal.backend import make_pin_factory, open_i2c

ADDRESSES = (reg.ADDRESS_ALT, reg.ADDRESS_DEFAULT)


@pytest.fixture
def config(raspberry_pi: str) -> AppConfig:
    config = load_config()
    bus = config.thermal.i2c_bus
    if not Path(f"/dev/i2c-{bus}").exists():
        pytest.skip(f"/dev/i2c-{bus} does not exist: enable I2C (raspi-config nonint do_i2c 0) and reboot")
    systemctl = shutil.which("systemctl")
    if systemctl is not None:
        active = subprocess.run([systemctl, "is-active", "--quiet", "appliance-thermal"], check=False)
        if active.returncode == 0:
            pytest.skip("the thermal daemon owns the sensor: systemctl stop appliance-thermal first")
    return config


@pytest.fixture
def i2c(config: AppConfig) -> Iterator[Any]:
    bus = open_i2c(config.thermal.i2c_bus)
    yield bus
    bus.deinit()


@pytest.fixture
def driver(config: AppConfig, i2c: Any) -> AMG8833:
    return AMG8833(i2c, config.thermal.address)


def test_sensor_answers_at_0x68_or_0x69(config: AppConfig, i2c: Any) -> None:
    while not i2c.try_lock():
        time.sleep(0.001)
    try:
        found = [a for a in i2c.scan() if a in ADDRESSES]
    finally:
        i2c.unlock()
    bus = config.thermal.i2c_bus
    assert found, f"no AMG8833 on /dev/i2c-{bus} (i2cdetect -y {bus}): check wiring (SDA, SCL, 3V3, GND)"
    assert config.thermal.address in found, (
        f"the sensor answers at {', '.join(f'0x{a:02x}' for a in found)}, "
        f"but thermal.address is 0x{config.thermal.address:02x}: change the config"
    )
    sensor = AMG8833(i2c, config.thermal.address)
    thermistor = sensor.read_thermistor()
    assert 0.0 < thermistor < 60.0, f"{thermistor} °C is no indoor temperature"
    time.sleep(0.2)
    frame = sensor.read_frame()
    assert len(frame) == 64  # row-major, row 0 at the top
    # An indoor scene sits near the sensor's own temperature; a wildly different median is a bad read.
    assert abs(float(np.median(frame)) - thermistor) < 15.0


def test_frames_arrive_at_10_fps(driver: AMG8833) -> None:
    driver.set_frame_rate(10)
    time.sleep(0.3)
    distinct = 0
    last: list[float] | None = None
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        frame = driver.read_frame()
        if last is None or frame != last:
            distinct += 1
            last = frame
        time.sleep(0.03)  # three reads per frame period: none is missed
    assert 27 <= distinct <= 33, f"{distinct} new frames in 3 s, expected ~30"


def test_hand_over_the_sensor_fires_the_interrupt(config: AppConfig, driver: AMG8833) -> None:
    if os.environ.get("APPLIANCE_HW_HAND") != "1":
        pytest.skip("needs a person: set APPLIANCE_HW_HAND=1, run with -s, and follow the prompt")
    pin = config.thermal.int_pin
    if pin is None:
        pytest.skip("thermal.int_pin is not set: INT is not wired")
    from gpiozero import DigitalInputDevice

    factory = make_pin_factory(config.gpio.pin_factory)
    device = DigitalInputDevice(pin, pull_up=True, pin_factory=factory)
    fired = threading.Event()
    device.when_activated = fired.set
    try:
        driver.set_frame_rate(10)
        time.sleep(0.3)
        background = float(np.median([np.median(driver.read_frame()) for _ in range(5)]))
        upper = background + config.thermal.presence_delta_c
        driver.configure_interrupt(InterruptConfig(upper, -20.0, 1.0, InterruptMode.ABSOLUTE))
        assert not fired.is_set(), f"INT fired with nobody there (level {upper:.2f} °C): check the scene"
        print(f"\n>>> Hold a hand 5-10 cm over the sensor now (20 s). Level {upper:.2f} °C on GPIO{pin}.")
        assert fired.wait(20.0), f"no falling edge on GPIO{pin} within 20 s: check the INT wire and pull-up"
        state = driver.read_interrupt()
        assert state.flagged, "INT went low but STAT.INTF is clear"
        assert state.count >= 4, f"only {state.count} pixel(s) latched: a hand at 5-10 cm covers many"
        driver.clear_interrupt()
    finally:
        driver.disable_interrupt()
        device.close()
        if factory is not None:
            factory.close()
