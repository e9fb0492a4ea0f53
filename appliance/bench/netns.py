"""Two network namespaces joined by the impairment link (appliance.bench.netlink).

    with NamespacePair.create(tag=str(os.getpid())) as pair:
        argv = pair.exec_argv(pair.kiosk, [sys.executable, "-m", ...])   # run inside one
        pair.link.set(Impairment(delay_s=0.2, loss=0.05))

The kiosk's namespace holds 10.213.0.1, the room service's 10.213.0.2, each on a point-to-point
TUN device whose other end is the relay in this process; each has its own loopback up and no
other interface or route, so nothing in them reaches any other network. Names carry a tag (the
bench's pid) so runs side by side never meet; on exit, whatever happened, anything still running
in them is killed and they are deleted.

Only the network is separate: processes in the namespaces share the filesystem with this one,
so the bench reaches the kiosk's bus (a Unix socket) and databases directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from types import TracebackType

from appliance.bench.netlink import TunLink

KIOSK_ADDR = "10.213.0.1"
ROOM_ADDR = "10.213.0.2"
IP_TIMEOUT_S = 10.0


def unavailable() -> str | None:
    """Why the namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and TUN devices)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


def ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip() or out.returncode}")


@dataclass
class NamespacePair:
    kiosk: str
    room: str
    link: TunLink

    @classmethod
    def create(cls, tag: str, *, seed: int | None = None) -> NamespacePair:
        kiosk, room = f"appl-k-{tag}", f"appl-r-{tag}"
        devices = (f"apk{tag}"[:15], f"apr{tag}"[:15])  # IFNAMSIZ
        pair = cls(kiosk, room, TunLink(devices, (KIOSK_ADDR, ROOM_ADDR), seed=seed))
        try:
            ip("netns", "add", kiosk)
            ip("netns", "add", room)
            # The devices are made here (the relay's fds belong to this namespace) and then
            # moved; the fds keep working across the move.
            pair.link.open()
            for ns, dev, mine, peer in (
                (kiosk, devices[0], KIOSK_ADDR, ROOM_ADDR),
                (room, devices[1], ROOM_ADDR, KIOSK_ADDR),
            ):
                ip("link", "set", dev, "netns", ns)
                ip("-n", ns, "addr", "add", mine, "peer", peer, "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            pair.delete()
            raise
        return pair

    def exec_argv(self, namespace: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def delete(self) -> None:
        """Stop whatever still runs in the namespaces (a child the bench could not stop, the
        daemons of a demo that was killed: they have sessions of their own), then delete them."""
        for ns in (self.kiosk, self.room):
            for pid in self.pids(ns):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.link.close()
        for ns in (self.kiosk, self.room):
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                ip("netns", "del", ns)

    @staticmethod
    def pids(namespace: str) -> list[int]:
        """The processes in a namespace (none if it is gone)."""
        try:
            out = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=IP_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [int(word) for word in out.stdout.split() if word.isdigit()]

    def __enter__(self) -> NamespacePair:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()
