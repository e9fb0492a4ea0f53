"""Display units. Everything inside the core is degC; only screens convert."""

from __future__ import annotations

from appliance.screening.settings import Unit


def to_unit(celsius: float, unit: Unit) -> float:
    return celsius * 9.0 / 5.0 + 32.0 if unit == "F" else celsius


def format_temperature(celsius: float | None, unit: Unit, decimals: int = 1) -> str:
    """'37.2 °C' / '99.0 °F'; a missing estimate shows as a dash, never as a number."""
    if celsius is None:
        return f"-- °{unit}"
    return f"{to_unit(celsius, unit):.{decimals}f} °{unit}"
