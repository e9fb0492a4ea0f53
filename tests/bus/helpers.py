"""Shared by the bus tests: a raw frame-level client and a wait helper.

RawClient speaks the wire format over a bare socket, so a test can send what BusClient never
would (wrong types, unknown topics, garbage) and can stop reading to play a slow consumer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from appliance.bus.framing import ErrorInfo, Frame, FrameDecoder, Kind, encode_frame, encode_payload

NIL = b"\xc0"


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition the broker reaches asynchronously; fail naming it if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class RawClient:
    """A bus connection on a plain non-blocking socket; reads only when asked to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(64 * 1024 * 1024)
        self.frames: list[Frame] = []
        self.eof = False

    @classmethod
    async def connect(cls, path: str | os.PathLike[str], *, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, str(path))
        return cls(sock)

    async def send(
        self,
        kind: Kind,
        topic: str,
        payload: object = None,
        *,
        raw_payload: bytes | None = None,
        seq: int = 0,
        attachment: bytes | None = None,
    ) -> None:
        body = raw_payload if raw_payload is not None else encode_payload(payload)
        await self.send_bytes(encode_frame(kind, topic, body, seq=seq, attachment=attachment))

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _read_more(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 256 * 1024)
        if not data:
            self.eof = True
            return
        for frame in self.decoder.feed(data):
            # Keep the frame past this read: its raw bytes are a view into `data`.
            self.frames.append(Frame(frame.env, frame.attachment, memoryview(bytes(frame.raw))))
        assert self.decoder.error is None, self.decoder.error

    async def recv(self, timeout: float = 10.0) -> Frame:
        async with asyncio.timeout(timeout):
            while not self.frames:
                if self.eof:
                    raise EOFError("the broker closed the connection")
                await self._read_more()
        return self.frames.pop(0)

    async def read_all(self, timeout: float = 10.0) -> list[Frame]:
        """Every frame until the broker closes the connection."""
        out: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    out.append(await self.recv(timeout))
                except EOFError:
                    return out

    async def closed_with(self, timeout: float = 10.0) -> ErrorInfo:
        """Read to the end; the last frame must be the broker's err with seq 0. Returns it."""
        frames = await self.read_all(timeout)
        assert frames, "the broker closed without saying why"
        last = frames[-1]
        assert last.env.kind == "err" and last.env.seq == 0, last.env
        return msgspec.msgpack.decode(last.env.payload, type=ErrorInfo)

    def close(self) -> None:
        self.sock.close()


def short_socket_path(base: Path) -> Path:
    path = base / "bus.sock"
    assert len(str(path)) < 100, f"{path} is too long for a Unix socket"
    return path


class NotifySocket:
    """What systemd listens on: a datagram socket a daemon finds in $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def recv(self, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        msg = data.decode()
        self.messages.append(msg)
        return msg

    async def expect(self, line: str, timeout: float = 15.0) -> str:
        """The next message holding this line (messages before it are kept in .messages)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                if line in msg.split("\n"):
                    return msg

    def close(self) -> None:
        self.sock.close()


def daemon_env(run_dir: Path, notify: NotifySocket | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))}
    env.pop("INVOCATION_ID", None)
    env.pop("JOURNAL_STREAM", None)
    config = run_dir / "appliance.toml"
    if not config.exists():
        config.write_text("[bus]\nallowed_groups = []\n")
    env.update(APPLIANCE_RUN_DIR=str(run_dir), APPLIANCE_STATE_DIR=str(run_dir), APPLIANCE_CONFIG=str(config))
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
    env.update(extra)
    return env


class BrokerProcess:
    def __init__(self, run_dir: Path, listen_sock: socket.socket | None = None) -> None:
        self.run_dir = run_dir
        self.listen_sock = listen_sock
        self.notify = NotifySocket(run_dir / "notify.sock")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        cmd = [sys.executable, "-m", "appliance", "run", "bus"]
        env = daemon_env(self.run_dir, self.notify)
        if self.listen_sock is None:
            self.proc = await asyncio.create_subprocess_exec(*cmd, env=env)
        else:
            # Socket activation as systemd does it: the listening socket is fd 3, LISTEN_PID is us.
            env["LISTEN_FDS"] = "1"
            fd = self.listen_sock.fileno()
            self.proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                'LISTEN_PID=$$ exec "$0" "$@"',
                *cmd,
                env=env,
                pass_fds=(fd, 3),  # close_fds runs after preexec_fn: keep the dup2 target
                preexec_fn=lambda: os.dup2(fd, 3),
            )
        await self.notify.expect("READY=1")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        return await self.proc.wait()
