"""Tests that need a real Raspberry Pi with the kiosk's hardware attached.

Each test says what it needs; elsewhere it is skipped with the reason, never failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pi_model() -> str | None:
    try:
        return Path("/proc/device-tree/model").read_text().rstrip("\0")
    except OSError:
        return None


@pytest.fixture
def raspberry_pi() -> str:
    model = pi_model()
    if model is None or "Raspberry Pi" not in model:
        pytest.skip("not a Raspberry Pi (no /proc/device-tree/model naming one)")
    return model
