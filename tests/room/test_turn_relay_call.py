"""A call relayed by a real coturn: iceTransportPolicy "relay" in a real Chromium.

coturn (Debian's turnserver) runs on 127.0.0.1 with use-auth-secret; the room service (in this
process, on a real socket) puts it in every welcome with TURN REST credentials; the kiosk's
publisher (the real PublisherService with the sim camera, paired through the device flow) and
the viewer page in Chromium both get it. The page's RTCPeerConnection is made with
iceTransportPolicy "relay" (an init script adds it to the page's own configuration), so the
only way media can reach it is through coturn: video frames arrive and the selected candidate
pair's local candidate is a relay one, allocated on the test's coturn.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.camera.base import StreamSettings
from appliance.camera.daemon import CameraService
from appliance.camera.sim_backend import SimBackend
from appliance.camera.transform import Orientation
from appliance.config import parse_config
from appliance.publisher.service import PublisherService
from appliance.publisher.signaling import Credentials
from appliance.room.config import turn_secret

from .helpers import admin_makes_room, room_config, running_room
from .test_turn import TURNSERVER, allocate_when_up, run_coturn

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TURNSERVER is None, reason="coturn (turnserver) is not installed"),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"),
]

# The page builds its RTCPeerConnection from the welcome's iceServers; force the relay policy
# on it, and keep the connection where the test can ask it for its stats.
RELAY_ONLY = """
(() => {
  const Native = window.RTCPeerConnection;
  function RelayOnly(config, ...rest) {
    const pc = new Native({ ...(config || {}), iceTransportPolicy: "relay" }, ...rest);
    window.__pcs = (window.__pcs || []).concat([pc]);
    return pc;
  }
  RelayOnly.prototype = Native.prototype;
  Object.setPrototypeOf(RelayOnly, Native);
  window.RTCPeerConnection = RelayOnly;
})();
"""

# The page's newest connection as its stats tell it: every transport's selected candidate pair
# with both candidates, and the types of all its local candidates.
SELECTED_PAIRS = """
async () => {
  const pc = (window.__pcs || []).at(-1);
  if (!pc) return null;
  const report = await pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const describe = (c) => c && { type: c.candidateType, address: c.address, port: c.port,
                                 relayProtocol: c.relayProtocol, url: c.url };
  const selected = [];
  const localTypes = [];
  report.forEach((s) => {
    if (s.type === "local-candidate") localTypes.push(s.candidateType);
    if (s.type !== "transport" || !s.selectedCandidatePairId) return;
    const pair = byId.get(s.selectedCandidatePairId);
    if (!pair) return;
    selected.push({
      state: pair.state,
      bytesReceived: pair.bytesReceived || 0,
      local: describe(byId.get(pair.localCandidateId)),
      remote: describe(byId.get(pair.remoteCandidateId)),
    });
  });
  return { selected, localTypes, policy: pc.getConfiguration().iceTransportPolicy };
}
"""


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """test_turn's coturn, allowed to relay to peers on this host (the kiosk is one)."""
    with run_coturn(tmp_path, "allow-loopback-peers") as server:
        yield server


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def bus_path(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Path]:
    run_dir = tmp_path_factory.mktemp("relay")  # short: a Unix socket path fits in 108 bytes
    broker = Broker()
    await broker.start(run_dir / "bus.sock")
    yield run_dir
    await broker.close()


async def test_a_call_relayed_by_coturn_with_ice_transport_policy_relay(
    coturn: tuple[int, str], tmp_path: Path, bus_path: Path, chromium: Any
) -> None:
    port, secret = coturn
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    turn_url = f"turn:127.0.0.1:{port}?transport=udp"
    config = room_config(
        tmp_path,
        turn={"secret_file": str(secret_file), "ttl_s": 600},
        ice_servers=[{"urls": [turn_url], "turn_credentials": True}],
    )
    tasks: list[asyncio.Task[Any]] = []
    clients: list[BusClient] = []
    service: PublisherService | None = None
    async with running_room(config, turn_secret=turn_secret(config)) as room, aiohttp.ClientSession() as http:
        _, invite, token = await admin_makes_room(room, http, "Relayed entrance", pair=True)
        assert token is not None
        # coturn takes its time to listen on a loaded machine: wait until it allocates.
        probe = room.s.ice.for_peer("probe", room.clock())[0]
        assert probe.username is not None and probe.credential is not None
        await allocate_when_up(port, probe.username, probe.credential)

        try:
            # The kiosk: its camera (sim, small frames) and its publisher, paired with the room.
            def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
                task = asyncio.ensure_future(coro)
                task.set_name(name)
                tasks.append(task)
                return task

            async def bus(name: str) -> BusClient:
                client = BusClient(bus_path / "bus.sock", name)
                await client.connect(10)
                clients.append(client)
                return client

            settings = StreamSettings(
                width=160,
                height=120,
                fps=15,
                bitrate=200_000,
                keyframe_interval_s=2.0,
                orientation=Orientation(),
                preview_width=80,
                preview_height=60,
            )
            camera_bus = await bus("camera")
            camera = CameraService(
                camera_bus,
                parse_config({"camera": {"backend": "sim"}}),
                ring=None,
                backend_factory=lambda: SimBackend(settings),
            )
            camera_bus.serve("camera.keyframe", camera.keyframe)
            spawn(camera.run(), "camera")
            async with asyncio.timeout(20):
                await camera.first_attempt.wait()
            assert camera.state == "ok", camera.status_line

            kiosk_config = parse_config(
                {
                    "paths": {"run_dir": str(bus_path), "state_dir": str(bus_path)},
                    "publisher": {"audio_backend": "sim"},
                    "camera": {"backend": "sim"},
                }
            )

            async def credentials() -> Credentials:
                return Credentials(room.url, token)

            service = PublisherService(await bus("publisher"), kiosk_config, credentials)
            await service.start(spawn)

            # The viewer: the page, its peer connection relay-only.
            page = await chromium.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.add_init_script(RELAY_ONLY)
            await page.goto(f"{room.url}/view/{invite}")
            await page.wait_for_function(
                "window.viewer && window.viewer.firstFrameAt !== null", timeout=30000
            )
            # Frames keep coming, and through coturn.
            before = (await page.evaluate("window.viewer.stats()"))["framesDecoded"]
            await page.wait_for_function(
                f"window.viewer.stats().then(s => s.framesDecoded >= {before + 10})",
                timeout=10000,
                polling=200,
            )
            await page.wait_for_function("window.viewer.readStamp() !== null", timeout=10000, polling=100)
            # Media flows on a selected pair. Chromium may still switch pairs (all of them relayed)
            # while checks go on, so the stats asserted on are the snapshot that showed it.
            # Polled from here, not through wait_for_function's handle: that handle once came
            # back as null although the predicate had been met.
            stats = None
            async with asyncio.timeout(10):
                while True:
                    stats = await page.evaluate(f"({SELECTED_PAIRS})()")
                    if stats and any(
                        p["state"] == "succeeded" and p["bytesReceived"] > 0 for p in stats["selected"]
                    ):
                        break
                    await asyncio.sleep(0.2)
            print(f"selected pairs: {stats}")
            assert stats["policy"] == "relay", stats
            # Only relay candidates were gathered: whatever the page received came through
            # coturn. The pair carrying the media has its local end on the test's coturn.
            assert stats["localTypes"] and set(stats["localTypes"]) == {"relay"}, stats
            live = [p for p in stats["selected"] if p["state"] == "succeeded" and p["bytesReceived"] > 0]
            assert live, stats
            for pair in live:
                local = pair["local"]
                assert local["type"] == "relay" and local["address"] == "127.0.0.1", pair
                assert 49152 <= local["port"] <= 65535 and local["relayProtocol"] == "udp", pair
                assert local["url"] is None or f"127.0.0.1:{port}" in local["url"], pair
            assert await page.evaluate("window.viewer.connectionState") == "connected"
            assert errors == [], errors
            # The kiosk's side sees its one viewer in the call.
            assert len(service.call.viewers) == 1
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if service is not None:
                with contextlib.suppress(Exception):
                    await service.aclose()
            for client in clients:
                await client.close()
