from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .helpers import Browser, Room, room_config, running_room


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    async with running_room(room_config(tmp_path)) as running:
        running.add_admin()
        yield running


@pytest.fixture
async def browser(room: Room) -> AsyncIterator[Browser]:
    b = Browser(room)
    yield b
    await b.close()


@pytest.fixture
async def admin(browser: Browser) -> Browser:
    """A browser logged in as alice."""
    page = await browser.login()
    assert page.status == 200 and "Rooms" in page.text, page.text
    return browser


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
