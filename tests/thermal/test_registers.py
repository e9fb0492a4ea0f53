from __future__ import annotations

import pytest

from appliance.thermal import registers as reg


@pytest.mark.parametrize(
    ("raw", "celsius"),
    [
        (0x000, 0.0),
        (0x001, 0.25),
        (0x064, 25.0),
        (0x7FF, 511.75),
        (0xFFF, -0.25),
        (0x800, -512.0),
        (0xF9C, -25.0),
    ],
)
def test_pixel_twos_complement(raw: int, celsius: float) -> None:
    assert reg.pixel_raw_to_c(raw) == celsius
    assert reg.pixel_c_to_raw(celsius) == raw


def test_pixel_encoding_quantises_and_saturates() -> None:
    assert reg.pixel_c_to_raw(25.1) == 0x064  # nearest 0.25 step
    assert reg.pixel_c_to_raw(1000.0) == 0x7FF
    assert reg.pixel_c_to_raw(-1000.0) == 0x800


@pytest.mark.parametrize(
    ("raw", "celsius"), [(0x000, 0.0), (0x190, 25.0), (0x001, 0.0625), (0x801, -0.0625), (0x9F0, -31.0)]
)
def test_thermistor_sign_magnitude(raw: int, celsius: float) -> None:
    assert reg.thermistor_raw_to_c(raw) == celsius
    assert reg.thermistor_c_to_raw(celsius) == raw


def test_interrupt_level_encoding() -> None:
    assert reg.level_c_to_raw(30.0) == 0x078
    assert reg.split_le16(reg.level_c_to_raw(30.0)) == (0x78, 0x00)
    assert reg.split_le16(reg.level_c_to_raw(-5.0)) == (0xEC, 0x0F)  # two's complement 0xFEC
    assert reg.level_raw_to_c(reg.join_le16(0xEC, 0x0F)) == -5.0


def test_interrupt_table_to_mask() -> None:
    table = bytes([0b0000_0001, 0, 0b0000_0100, 0, 0, 0, 0, 0b1000_0000])
    mask = reg.decode_interrupt_table(table)
    assert mask == (1 << 0) | (1 << 18) | (1 << 63)
    grid = reg.mask_to_grid(mask)  # 64, row-major
    assert grid[0] and grid[2 * 8 + 2] and grid[63] and sum(grid) == 3
    assert reg.grid_to_mask(grid) == mask
    rows = [grid[r * 8 : r * 8 + 8] for r in range(8)]
    assert reg.grid_to_mask(rows) == mask  # 8 rows of 8 are the same grid
    with pytest.raises(ValueError):
        reg.grid_to_mask(grid[:63])
    assert reg.encode_interrupt_table(mask) == table
    with pytest.raises(ValueError):
        reg.decode_interrupt_table(b"\x00" * 7)


def test_pixel_block_round_trip() -> None:
    grid = [i * 0.25 - 4.0 for i in range(64)]
    data = reg.encode_pixels(grid)
    assert len(data) == 128
    assert data[0:2] == bytes([0xF0, 0x0F])  # pixel 1 = -4.0 °C = 0xFF0, low byte first
    assert reg.decode_pixels(data) == grid
    assert reg.encode_pixels([grid[r * 8 : r * 8 + 8] for r in range(8)]) == data  # or as 8 rows
    with pytest.raises(ValueError):
        reg.encode_pixels(grid[:60])


def test_pixel_encoding_rounds_half_to_even_and_saturates() -> None:
    # Exactly between two 0.25 °C steps the ADC model rounds to the even count, as numpy's rint did.
    values = [0.125, 0.375, -0.125, 1000.0, -1000.0] + [0.0] * 59
    assert reg.decode_pixels(reg.encode_pixels(values))[:5] == [0.0, 0.5, -0.0, 511.75, -512.0]


def test_register_order_is_image_rotated_180() -> None:
    # Pixel 1 (register index 0) is the bottom-right of the image; pixel 64 the top-left.
    registers = [0.0] * 64  # row-major
    registers[0 * 8 + 0] = 1.0
    registers[7 * 8 + 6] = 2.0
    image = reg.register_to_image(registers)
    assert image[7 * 8 + 7] == 1.0
    assert image[0 * 8 + 1] == 2.0
    assert reg.image_to_register(image) == registers
