from __future__ import annotations

import pytest

from .helpers import CollectingSink


@pytest.fixture
def sink() -> CollectingSink:
    return CollectingSink()
