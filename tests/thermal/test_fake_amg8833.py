"""The fake behaves like the chip: the real Adafruit driver and our driver run against it unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from adafruit_amg88xx import AMG88XX
from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory

from appliance.thermal import registers as reg
from appliance.thermal.fake_amg8833 import changed_registers


def test_adafruit_driver_initialises_against_fake(exact_rig: Any) -> None:
    exact_rig.scene.ambient_c = 24.0
    exact_rig.scene.field_c[:] = 24.0
    exact_rig.scene.field_c[0, 0] = 30.0  # image top-left
    # Leave garbage in the settings the library must reset.
    exact_rig.device.regs[reg.FPSC] = 1
    exact_rig.device.regs[reg.INTC] = 3
    amg = AMG88XX(exact_rig.bus)
    assert (reg.RST, reg.RST_INITIAL) in exact_rig.device.register_writes
    assert exact_rig.device.regs[reg.PCTL] == reg.PCTL_NORMAL
    assert exact_rig.device.regs[reg.FPSC] == reg.FPSC_10FPS
    assert exact_rig.device.regs[reg.INTC] == 0
    exact_rig.frames(1)
    assert amg.temperature == pytest.approx(24.5, abs=0.1)  # ambient + the thermistor's self-heating
    pixels = np.array(amg.pixels)
    # The library returns register order: image top-left is its last pixel.
    assert pixels[7, 7] == 30.0
    assert pixels[0, 0] == 24.0


def test_scan_and_missing_device(exact_rig: Any) -> None:
    assert exact_rig.bus.scan() == [0x69]
    with pytest.raises(OSError):
        exact_rig.bus.writeto(0x68, b"")


def test_register_auto_increment_on_burst_reads_and_writes(exact_rig: Any) -> None:
    exact_rig.bus.writeto(0x69, bytes([reg.INTHL, 0x78, 0x00, 0x28, 0x00]))
    out = bytearray(4)
    exact_rig.bus.writeto_then_readfrom(0x69, bytes([reg.INTHL]), out)
    assert bytes(out) == bytes([0x78, 0x00, 0x28, 0x00])
    # A read continues from where the pointer stopped.
    exact_rig.bus.writeto(0x69, bytes([reg.INTHL]))
    first, second = bytearray(2), bytearray(2)
    exact_rig.bus.readfrom_into(0x69, first)
    exact_rig.bus.readfrom_into(0x69, second)
    assert bytes(first + second) == bytes([0x78, 0x00, 0x28, 0x00])


def test_burst_read_is_one_transaction_and_the_exact_frame(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    rng = np.random.default_rng(3)
    exact_rig.scene.field_c[:] = np.round(rng.uniform(20, 36, (8, 8)) * 4) / 4
    exact_rig.frames(1)
    before = len(exact_rig.bus.log)
    frame = driver.read_frame()
    new = exact_rig.bus.log[before:]
    assert len(new) == 1
    assert new[0].kind == "write_read" and new[0].written == bytes([reg.PIXELS]) and new[0].read_len == 128
    held = reg.decode_pixels(exact_rig.device.regs[0x80:0x100])
    assert frame == reg.register_to_image(held)
    assert frame == exact_rig.scene.field_c.reshape(64).tolist()  # 64 values, row-major
    assert all(type(v) is float for v in frame)


def test_orientation_row0_is_top_of_image(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    exact_rig.scene.field_c[0, 1] = 35.0  # top row, second column from the left
    exact_rig.frames(1)
    frame = driver.read_frame()
    assert divmod(frame.index(max(frame)), 8) == (0, 1)
    # On the chip it is pixel 63 (index 62): bottom-right first, counting right to left, bottom to top.
    assert reg.decode_pixels(exact_rig.device.regs[0x80:0x100])[62] == 35.0


def test_thermistor_reading(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    exact_rig.scene.ambient_c = 26.3
    exact_rig.frames(1)
    value = driver.read_thermistor()
    assert value == pytest.approx(26.8, abs=0.1)
    assert value / reg.THERMISTOR_LSB_C == int(value / reg.THERMISTOR_LSB_C)


# -- interrupts -----------------------------------------------------------------------------------------


def test_interrupt_configuration_bytes_and_order(exact_rig: Any) -> None:
    from appliance.thermal.amg8833 import InterruptConfig, InterruptMode

    driver = exact_rig.driver()
    mark = len(exact_rig.device.register_writes)
    driver.configure_interrupt(InterruptConfig(upper_c=30.0, lower_c=-5.0, hysteresis_c=1.5))
    writes = changed_registers(exact_rig.device.register_writes[mark:], [*range(0x08, 0x0E), reg.INTC])
    assert writes == [
        (0x08, 0x78), (0x09, 0x00),  # upper 30.0 °C = 120 counts
        (0x0A, 0xEC), (0x0B, 0x0F),  # lower -5.0 °C = -20 counts, 12-bit two's complement
        (0x0C, 0x06), (0x0D, 0x00),  # hysteresis 1.5 °C = 6 counts
        (reg.INTC, reg.INTC_ABSOLUTE),  # mode first, output still off
        (reg.INTC, reg.INTC_ABSOLUTE | reg.INTC_INTEN),  # then enable
    ]  # fmt: skip
    assert bytes(exact_rig.device.regs[0x08:0x0E]) == bytes([0x78, 0x00, 0xEC, 0x0F, 0x06, 0x00])
    mark = len(exact_rig.device.register_writes)
    driver.configure_interrupt(InterruptConfig(2.0, -2.0, 0.5, InterruptMode.DIFFERENCE))
    intc = [v for a, v in exact_rig.device.register_writes[mark:] if a == reg.INTC]
    assert intc == [0x00, reg.INTC_INTEN]


def test_interrupt_fires_drives_pin_low_and_clears(mock_pins: MockFactory, make_rig: Any) -> None:
    from appliance.thermal.amg8833 import InterruptConfig

    pin = mock_pins.pin(17)
    int_line = DigitalInputDevice(17, pull_up=True)  # what the daemon will wait on: active low
    rig = make_rig(seed=1, netd_c=0.0, offset_c=0.0, pixel_offset_std_c=0.0, int_pin=pin)
    driver = rig.driver()
    driver.configure_interrupt(InterruptConfig(upper_c=30.0, lower_c=0.0, hysteresis_c=1.0))
    rig.frames(3)
    assert not int_line.is_active and pin.state == 1
    assert not driver.read_interrupt().flagged

    rig.scene.field_c[2, 5] = 34.0  # a hot object enters, third row, sixth column
    rig.frames(1)
    assert int_line.is_active and pin.state == 0
    state = driver.read_interrupt()
    assert state.flagged and state.count == 1
    assert state.pixels[2 * 8 + 5] and sum(state.pixels) == 1  # image order, row-major
    assert state.mask == 1 << (63 - (2 * 8 + 5))  # register order, rotated 180°

    driver.clear_interrupt()
    assert pin.state == 1 and not int_line.is_active
    assert not driver.read_interrupt().flagged and driver.read_interrupt().mask == 0

    rig.scene.field_c[2, 5] = 22.0  # it leaves
    rig.frames(3)
    assert pin.state == 1
    int_line.close()


def test_interrupt_hysteresis(mock_pins: MockFactory, make_rig: Any) -> None:
    from appliance.thermal.amg8833 import InterruptConfig

    pin = mock_pins.pin(4)
    rig = make_rig(seed=1, netd_c=0.0, offset_c=0.0, pixel_offset_std_c=0.0, int_pin=pin)
    driver = rig.driver()
    driver.configure_interrupt(InterruptConfig(upper_c=30.0, lower_c=0.0, hysteresis_c=1.0))
    rig.scene.field_c[4, 4] = 31.0
    rig.frames(1)
    assert pin.state == 0
    driver.clear_interrupt()
    rig.scene.field_c[4, 4] = 29.5  # below the upper level but not by the hysteresis: still active
    rig.frames(1)
    assert pin.state == 0 and driver.read_interrupt().pixels[4 * 8 + 4]
    driver.clear_interrupt()
    rig.scene.field_c[4, 4] = 28.75  # more than 1.0 below the level: released
    rig.frames(2)
    assert pin.state == 1 and not driver.read_interrupt().flagged


def test_difference_mode_fires_on_change_not_on_level(exact_rig: Any) -> None:
    from appliance.thermal.amg8833 import InterruptConfig, InterruptMode

    driver = exact_rig.driver()
    exact_rig.scene.field_c[:] = 35.0  # hot everywhere, but steady
    exact_rig.frames(2)
    driver.configure_interrupt(InterruptConfig(2.0, -2.0, 0.0, InterruptMode.DIFFERENCE))
    exact_rig.frames(3)
    assert not driver.read_interrupt().flagged
    exact_rig.scene.field_c[6, 0] = 38.0  # +3 °C in one frame
    exact_rig.frames(1)
    state = driver.read_interrupt()
    assert state.flagged and state.pixels[6 * 8 + 0] and state.count == 1


def test_interrupt_disabled_keeps_pin_released(mock_pins: MockFactory, make_rig: Any) -> None:
    pin = mock_pins.pin(5)
    rig = make_rig(seed=1, int_pin=pin)
    rig.driver()
    rig.scene.field_c[:] = 60.0
    rig.frames(3)
    assert pin.state == 1 and rig.device.regs[reg.STAT] & reg.STAT_INTF == 0


# -- frame rate and averaging ---------------------------------------------------------------------------


def test_frame_rate_1fps_vs_10fps(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    start = exact_rig.device.frames_output
    exact_rig.frames(30)
    assert exact_rig.device.frames_output - start == 30
    driver.set_frame_rate(1)
    assert exact_rig.device.regs[reg.FPSC] == reg.FPSC_1FPS
    start = exact_rig.device.frames_output
    exact_rig.frames(30)
    assert exact_rig.device.frames_output - start == 3


def test_1fps_registers_change_once_a_second(make_rig: Any) -> None:
    rig = make_rig(seed=2)
    driver = rig.driver()
    driver.set_frame_rate(1)
    rig.frames(10)
    previous = driver.read_frame()
    changes = 0
    for _ in range(40):  # four seconds, polled at 10 Hz
        rig.frames(1)
        frame = driver.read_frame()
        changes += int(frame != previous)
        previous = frame
    assert changes == 4


def test_moving_average_needs_unlock(exact_rig: Any) -> None:
    driver = exact_rig.driver()
    exact_rig.bus.writeto(0x69, bytes([reg.AVE, reg.AVE_MAMOD]))  # no unlock: ignored
    assert exact_rig.device.regs[reg.AVE] == 0
    for key in (0x50, 0x45):  # an incomplete sequence is no key either
        exact_rig.bus.writeto(0x69, bytes([reg.AVE_UNLOCK, key]))
    exact_rig.bus.writeto(0x69, bytes([reg.AVE, reg.AVE_MAMOD]))
    assert exact_rig.device.regs[reg.AVE] == 0
    exact_rig.bus.writeto(0x69, bytes([reg.AVE_UNLOCK, reg.AVE_LOCK]))

    driver.set_moving_average(True)
    assert exact_rig.device.regs[reg.AVE] == reg.AVE_MAMOD
    sequence = [(a, v) for a, v in exact_rig.device.register_writes if a in (reg.AVE, reg.AVE_UNLOCK)][-5:]
    assert sequence == [(0x1F, 0x50), (0x1F, 0x45), (0x1F, 0x57), (0x07, 0x20), (0x1F, 0x00)]
    # Locked again: a stray write cannot turn it off.
    exact_rig.bus.writeto(0x69, bytes([reg.AVE, 0x00]))
    assert exact_rig.device.regs[reg.AVE] == reg.AVE_MAMOD


def _noise(rig: Any, frames: int) -> tuple[float, float]:
    driver = rig.driver()
    return _measure(rig, driver, frames)


def _measure(rig: Any, driver: object, frames: int) -> tuple[float, float]:
    from appliance.thermal.amg8833 import AMG8833

    assert isinstance(driver, AMG8833)
    period = 10 if driver.frame_rate == 1 else 1
    stack = []
    for _ in range(frames):
        rig.frames(period)
        stack.append(driver.read_frame())
    data = np.stack(stack).astype(np.float64)
    per_pixel_std = data.std(axis=0, ddof=1)
    return float(np.sqrt((per_pixel_std**2).mean())), float((data - rig.scene.field_c.reshape(64)).mean())


def test_noise_and_quantisation_match_datasheet(make_rig: Any) -> None:
    rig = make_rig(seed=11, offset_c=0.0)
    rig.scene.field_c[:] = 25.1
    std, bias = _noise(rig, 300)
    # NETD 0.16 °C plus uniform quantisation error of 0.25 °C steps: sqrt(0.16² + 0.25²/12) = 0.176.
    expected = np.hypot(reg.NETD_10FPS_C, reg.PIXEL_LSB_C / np.sqrt(12))
    assert std == pytest.approx(expected, rel=0.12)
    assert abs(bias) < 0.05  # only the per-pixel fixed pattern (mean zero) remains
    readings = rig.driver().read_frame()
    assert np.all(np.mod(readings, reg.PIXEL_LSB_C) == 0)


def test_1fps_and_moving_average_lower_the_noise(make_rig: Any) -> None:
    rig = make_rig(seed=12, offset_c=0.0)
    rig.scene.field_c[:] = 25.1
    std_10, _ = _noise(rig, 200)

    rig = make_rig(seed=12, offset_c=0.0)
    rig.scene.field_c[:] = 25.1
    driver = rig.driver()
    driver.set_moving_average(True)
    std_avg, _ = _measure(rig, driver, 200)
    # The true noise falls by 1/sqrt(2); the quantisation share does not.
    assert std_avg == pytest.approx(np.hypot(0.16 / np.sqrt(2), 0.25 / np.sqrt(12)), rel=0.15)
    assert std_avg < 0.85 * std_10

    rig = make_rig(seed=13, offset_c=0.0)
    rig.scene.field_c[:] = 25.1
    driver = rig.driver()
    driver.set_frame_rate(1)
    std_1, _ = _measure(rig, driver, 60)
    assert std_1 < 0.6 * std_10  # datasheet: 0.05 °C at 1 fps vs 0.16 °C at 10 fps


def test_per_sensor_offset_is_seeded(make_rig: Any) -> None:
    a, b, c = make_rig(seed=5), make_rig(seed=5), make_rig(seed=6)
    assert a.device.offset_c == b.device.offset_c != c.device.offset_c
    assert abs(a.device.offset_c) <= 2.5  # datasheet accuracy
    np.testing.assert_array_equal(a.device.pixel_offsets_c, b.device.pixel_offsets_c)


def test_the_transaction_log_keeps_only_recent_entries(exact_rig: Any) -> None:
    from appliance.thermal import fake_amg8833

    driver = exact_rig.driver()
    for _ in range(2 * fake_amg8833.LOG_KEEP + 10):
        driver.read_thermistor()
    assert fake_amg8833.LOG_KEEP <= len(exact_rig.bus.log) <= 2 * fake_amg8833.LOG_KEEP
    assert exact_rig.bus.log[-1].kind == "write_read"
