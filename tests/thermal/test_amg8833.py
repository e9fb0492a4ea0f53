"""The driver fails loudly, never invents data, and recovers with reinit()."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.errors import HardwareError, SensorFault
from appliance.thermal import registers as reg
from appliance.thermal.amg8833 import AMG8833, InterruptConfig, InterruptMode
from appliance.thermal.fake_amg8833 import FakeI2C


def test_no_device_is_a_sensor_fault(exact_rig: Any) -> None:
    with pytest.raises(SensorFault, match="0x68"):
        AMG8833(exact_rig.bus, address=0x68)
    with pytest.raises(SensorFault):
        AMG8833(FakeI2C())


def test_i2c_errors_raise_sensor_fault_and_reinit_recovers(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    exact_rig.scene.field_c[3, 3] = 33.0
    exact_rig.frames(1)
    good = driver.read_frame()
    exact_rig.device.fail_next(4)
    with pytest.raises(SensorFault, match="Remote I/O"):
        driver.read_frame()
    with pytest.raises(HardwareError):  # SensorFault is a HardwareError
        driver.read_thermistor()
    with pytest.raises(SensorFault):
        driver.reinit()  # the probe writes, then retries with a read: both fail
    driver.reinit()
    exact_rig.frames(1)
    np.testing.assert_array_equal(driver.read_frame(), good)


def test_reinit_restores_settings_after_a_sensor_reset(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    driver.set_frame_rate(1)
    driver.set_moving_average(True)
    driver.configure_interrupt(InterruptConfig(31.0, 10.0, 0.5, InterruptMode.ABSOLUTE))
    exact_rig.bus.writeto(0x69, bytes([reg.RST, reg.RST_INITIAL]))  # a brown-out resets the chip
    assert exact_rig.device.regs[reg.FPSC] == 0 and exact_rig.device.regs[reg.INTC] == 0
    driver.reinit()
    regs = exact_rig.device.regs
    assert regs[reg.FPSC] == reg.FPSC_1FPS
    assert regs[reg.AVE] == reg.AVE_MAMOD
    assert regs[reg.INTC] == reg.INTC_ABSOLUTE | reg.INTC_INTEN
    assert reg.level_raw_to_c(reg.join_le16(regs[0x08], regs[0x09])) == 31.0


def test_stuck_frames_raise_and_clear(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    rng = np.random.default_rng(0)
    for _ in range(3):
        exact_rig.scene.field_c[:] = 22.0 + rng.normal(0, 0.5, (8, 8))
        exact_rig.frames(1)
        driver.read_frame()
    exact_rig.device.stuck = True
    with pytest.raises(SensorFault, match="stuck"):
        for _ in range(10):
            exact_rig.scene.field_c[:] = 22.0 + rng.normal(0, 0.5, (8, 8))
            exact_rig.frames(1)
            driver.read_frame()
    driver.reinit()  # a reset does not make the frozen frame fresh
    with pytest.raises(SensorFault, match="stuck"):
        driver.read_frame()
    exact_rig.device.stuck = False
    exact_rig.frames(1)
    frame = driver.read_frame()
    assert len(frame) == 64 and all(type(v) is float for v in frame)


def test_out_of_range_pixels_raise(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    exact_rig.device.out_of_range = True
    exact_rig.frames(1)
    with pytest.raises(SensorFault, match="outside"):
        driver.read_frame()
    assert exact_rig.device.regs[reg.STAT] & reg.STAT_OVF_IRS
    exact_rig.device.out_of_range = False
    exact_rig.frames(1)
    assert max(driver.read_frame()) == 22.0


def test_implausible_thermistor_raises(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    exact_rig.scene.ambient_c = 95.0
    exact_rig.frames(1)
    with pytest.raises(SensorFault, match="thermistor"):
        driver.read_thermistor()


def test_settings_are_validated(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    with pytest.raises(ValueError):
        driver.set_frame_rate(5)
    with pytest.raises(ValueError):
        driver.configure_interrupt(InterruptConfig(10.0, 20.0, 0.0))
    with pytest.raises(ValueError):
        driver.configure_interrupt(InterruptConfig(30.0, 20.0, -1.0))


def test_disable_interrupt_releases_pin(mock_pins: Any, make_rig: Any) -> None:
    pin = mock_pins.pin(22)
    rig = make_rig(seed=1, netd_c=0.0, offset_c=0.0, pixel_offset_std_c=0.0, int_pin=pin)
    driver = rig.driver()
    driver.configure_interrupt(InterruptConfig(30.0, 0.0, 0.0))
    rig.scene.field_c[0, 0] = 40.0
    rig.frames(1)
    assert pin.state == 0
    driver.disable_interrupt()
    rig.frames(2)
    assert pin.state == 1 and rig.device.regs[reg.INTC] == 0
