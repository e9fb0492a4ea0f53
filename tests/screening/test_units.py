import pytest

from appliance.screening.units import format_temperature, to_unit


def test_conversions() -> None:
    assert to_unit(37.0, "C") == 37.0
    assert to_unit(37.0, "F") == pytest.approx(98.6)
    assert format_temperature(38.04, "C") == "38.0 °C"
    assert format_temperature(38.0, "F") == "100.4 °F"
    assert format_temperature(None, "F") == "-- °F"
