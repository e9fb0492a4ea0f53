"""bench system's figures from /proc samples (the soak itself is tests/test_soak.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from appliance.bench import SUITES
from appliance.bench.system import (
    Demo,
    Sample,
    SetupVisit,
    daemon_pids,
    http_get_status,
    sample_process,
    setup_figures,
    soak_figures,
    visit_setup,
)


def proc(rss: float, fds: int = 10, nonfile: int = 4) -> dict[str, float]:
    return {
        "rss_mb": rss,
        "pss_mb": rss / 2,
        "uss_mb": rss / 3,
        "fds": fds,
        "nonfile_fds": nonfile,
        "threads": 2,
        "cpu_s": 1.0,
    }


def test_growth_per_daemon_and_total_and_a_restart_is_no_figure() -> None:
    samples = [
        Sample(
            float(t),
            {"bus": 1, "camera": 2, "room": 3},
            {"bus": proc(40), "camera": proc(b), "room": proc(50)},
        )
        for t, b in enumerate([100, 100, 100, 101, 102, 104, 104, 104])
    ]
    samples[-1].procs["bus"] = proc(40, fds=12, nonfile=5)
    samples[4].pids["room"] = 9  # restarted in between
    fig = soak_figures(samples, ["bus", "camera", "room"])
    assert fig["soak_rss_growth_pct_per_daemon"] == {"bus": 0.0, "camera": 4.0, "room": None}
    assert fig["soak_fd_growth_per_daemon"] == {"bus": 2, "camera": 0, "room": None}
    assert fig["soak_nonfile_fd_growth_per_daemon"] == {"bus": 1, "camera": 0, "room": None}
    assert fig["soak_rss_growth_pct"] == round(4 / 140 * 100, 2)  # the room is not the kiosk's
    assert fig["soak_fd_growth"] == 2


def test_children_found_by_parent_and_daemon_name() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(30)", "-m", "appliance", "run", "thermal"]
    )
    try:
        # Right after fork the child still has our command line, then execs the interpreter and
        # loads it: wait for both before looking.
        deadline = time.monotonic() + 20
        pids = daemon_pids(os.getpid())
        while pids.get("thermal") != child.pid and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = daemon_pids(os.getpid())
        assert pids.get("thermal") == child.pid
        got = sample_process(child.pid)
        while got is not None and got["rss_mb"] <= 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            got = sample_process(child.pid)
        assert got is not None and got["rss_mb"] > 1 and got["threads"] >= 1
        assert got["fds"] >= 3 and got["nonfile_fds"] >= 0
    finally:
        child.kill()
        child.wait()
    assert sample_process(child.pid) is None


def test_registered() -> None:
    assert SUITES["system"] == "appliance.bench.system:bench_system"


def test_setup_figures_add_the_visited_setup_to_the_steady_total() -> None:
    visit = SetupVisit(activation_s=1.234, rss_mb=[40.0, 42.0, 41.0])
    fig = setup_figures(visit, 200.0)
    assert fig["setup_activation_s"] == 1.234 and fig["setup_rss_mb"] == 41.0
    assert fig["rss_total_with_setup_mb"] == 241.0 and fig["setup_visit_error"] is None
    failed = setup_figures(SetupVisit(error="TimeoutError: "), 200.0)
    assert failed["setup_rss_mb"] is None and failed["rss_total_with_setup_mb"] is None
    assert failed["setup_visit_error"] == "TimeoutError: "
    assert setup_figures(None, 200.0)["setup_activation_s"] is None


async def test_any_http_answer_counts_as_a_visit_and_nothing_else_does() -> None:
    answers = [b"HTTP/1.1 303 See Other\r\nLocation: /login\r\n\r\n", b"SSH-2.0-nope\r\n"]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10):
            assert await http_get_status(f"http://127.0.0.1:{port}/") == "HTTP/1.1 303 See Other"
            visit = await visit_setup(f"http://127.0.0.1:{port}/", os.getpid())
        assert visit.activation_s is None and visit.error is not None and "SSH" in visit.error
    finally:
        server.close()
        await server.wait_closed()


async def test_the_bench_does_not_wait_for_a_socket_activated_setup_to_start() -> None:
    """The demo's setup page starts on its first visit: its daemon is not READY at the start,
    and the bench must not wait (for ever) for it."""
    demo = Demo(Path("/nonexistent"), 1.0)

    class Running:
        returncode = None

    demo.proc = Running()  # type: ignore[assignment]
    stream = asyncio.StreamReader()
    for line in [
        "appliance demo: running bus, room, thermal, setup (work dir /x)",
        "x demo INFO: bus ready in 0.20 s",
        "x demo INFO: room ready in 0.50 s",
        "x demo INFO: thermal ready in 0.30 s",
        "  setup page:   http://127.0.0.1:18080/ (starts on the first visit)",
        "  viewer link:  http://127.0.0.1:9/view/abc",
        "  kiosk:        paired with 'Demo entrance'",
    ]:
        stream.feed_data(line.encode() + b"\n")
    stream.feed_eof()
    await demo._read(stream)
    async with asyncio.timeout(5):
        await demo.wait_started(5)
    assert demo.setup_url == "http://127.0.0.1:18080/" and demo.on_demand == {"setup"}
