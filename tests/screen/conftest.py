"""The screen tests run SDL's dummy video and audio drivers: no window, no sound card."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before pygame is imported anywhere: SDL reads these when its subsystems start.
os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $APPLIANCE_ARTIFACTS/screen (kept by CI), else a temporary dir."""
    base = os.environ.get("APPLIANCE_ARTIFACTS")
    path = Path(base) / "screen" if base else tmp_path_factory.mktemp("screen-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
