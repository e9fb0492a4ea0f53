"""`appliance run room` as a real process, for the tests that need one (schemathesis, the
browser, the daemon itself)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_READY = re.compile(r"ready: listening on (https?://\S+)")


@dataclass
class RoomProcess:
    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


# Fuzzing should reach the handlers, not the rate limits (429 is described and allowed, but a
# run that only ever sees it proves little): `extra` for write_config.
GENEROUS_LIMITS = """
[accounts]
login_per_address_per_min = 100000
login_overall_per_min = 1000000
[pairing]
authorize_per_address_per_min = 100000
authorize_overall_per_min = 100000
token_per_address_per_min = 100000
token_overall_per_min = 100000
activate_per_address_per_min = 100000
[rooms]
viewer_session_per_address_per_min = 100000
viewer_session_overall_per_min = 100000
ws_connect_per_address_per_min = 100000
ws_connect_overall_per_min = 100000
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "room.toml"
    config.write_text(f'[service]\nport = 0\ndatabase = "{tmp_path / "db" / "room.db"}"\n{extra}')
    config.chmod(0o600)
    return config


def add_admin(config: Path, username: str, password: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "appliance", "room", "admin", "add", username, "--config", str(config)],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextmanager
def room_process(config: Path, timeout: float = 30.0) -> Iterator[RoomProcess]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "INVOCATION_ID")
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "room", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    running = RoomProcess(proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            running.lines.append(line.rstrip("\n"))
            if m := _READY.search(line):
                running.url = m.group(1)
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(timeout):
            raise AssertionError(f"the room service did not become ready:\n{running.log}")
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
