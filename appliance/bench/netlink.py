"""A userspace impairment link between two network namespaces: delay, loss and partition.

Issue 8 asks for the network faults to be made with veth and `tc netem`. The kernels this runs
on (the development VM, CI) have no sch_netem: `tc qdisc add dev lo root netem delay 10ms`
answers "Specified qdisc kind is unknown", and there is no module to load. So the two
namespaces are joined at the IP layer instead: one TUN device in each, point to point, and
this process relays every IP packet from one to the other, deciding per packet what netem
would have:

    delay        a fixed one-way delay, on each direction (as netem on both ends' egress:
                 "delay 200ms" on both is a 400 ms round trip)
    loss         each packet independently lost with a probability, on each direction
    partition    everything dropped, silently, both ways; packets in flight are lost too. A
                 black hole, as a cable pulled somewhere upstream: the interfaces stay up and
                 routed, so a sender learns of it only by its own timeouts (an interface taken
                 down would answer at once with ENETUNREACH, which no real outage does)

Packets leave in the order they came, per direction (a delay shortened meanwhile never lets
a later packet overtake). Only IPv4 between the link's two addresses is relayed; anything
else (IPv6 router solicitations, say) is dropped and counted, so nothing reaches any other
address.

`Lane` is the pure core (no I/O, no clock of its own): one direction's decisions. `TunLink`
is the thin shell around two of them: it opens the TUN devices and runs one thread that
sleeps in select() until a packet arrives or the next one is due.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import select
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_BATCH = 256  # packets taken from one device before the other gets its turn
MAX_PACKET = 65_535


@dataclass(frozen=True)
class Impairment:
    """What the link does to each packet, the same on both directions."""

    delay_s: float = 0.0
    loss: float = 0.0
    partitioned: bool = False

    def __post_init__(self) -> None:
        if self.delay_s < 0 or not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"delay must be >= 0 and loss in [0, 1]: {self}")


CLEAN = Impairment()


@dataclass
class Lane:
    """One direction of the link: which packets pass, and when (pure; `rng` is the seam)."""

    rng: random.Random = field(default_factory=random.Random)
    impairment: Impairment = CLEAN
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    passed: int = 0
    lost: int = 0
    blackholed: int = 0
    _last_due: float = float("-inf")

    def set(self, impairment: Impairment) -> None:
        if impairment.partitioned and not self.impairment.partitioned:
            # The cable is pulled: what was on the wire never arrives.
            self.blackholed += len(self.queue)
            self.queue.clear()
        self.impairment = impairment

    def offer(self, packet: bytes, now: float) -> bool:
        """A packet entering the link at `now`; True if it will come out (at its due time)."""
        imp = self.impairment
        if imp.partitioned:
            self.blackholed += 1
            return False
        if imp.loss > 0.0 and self.rng.random() < imp.loss:
            self.lost += 1
            return False
        due = max(now + imp.delay_s, self._last_due)  # never overtake an earlier packet
        self._last_due = due
        self.queue.append((due, packet))
        return True

    def pop_due(self, now: float) -> list[bytes]:
        """The packets whose time has come, oldest first."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            out.append(self.queue.popleft()[1])
        self.passed += len(out)
        return out

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None


def ipv4_between(packet: bytes, a: bytes, b: bytes) -> bool:
    """An IPv4 packet from a to b or from b to a (addresses as 4 bytes)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return False
    src, dst = packet[12:16], packet[16:20]
    return (src, dst) in ((a, b), (b, a))


def open_tun(name: str) -> int:
    """A new TUN device `name` (no packet info header) in this namespace; its fd, non-blocking.
    The device lives as long as the fd stays open."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class TunLink:
    """Two TUN devices and the relay between them.

        link = TunLink(("tunk", "tunr"), ("10.213.0.1", "10.213.0.2"), seed=1)
        link.open()                 # the devices exist now; move them into their namespaces
        link.set(Impairment(delay_s=0.2, loss=0.05))
        ...
        link.close()

    Lane 0 carries what enters device 0 (sent by its namespace) out of device 1, lane 1 the
    other way.
    """

    def __init__(
        self, names: tuple[str, str], addresses: tuple[str, str], *, seed: int | None = None
    ) -> None:
        self.names = names
        self._addrs = tuple(ipaddress.IPv4Address(a).packed for a in addresses)
        rng = random.Random(seed)
        self.lanes = (Lane(random.Random(rng.random())), Lane(random.Random(rng.random())))
        self.foreign = 0  # packets that were not IPv4 between the two addresses
        self.write_errors = 0
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        try:
            for name in self.names:
                self._fds.append(open_tun(name))
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
        except OSError:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="tun-link", daemon=True)
        self._thread.start()

    def set(self, impairment: Impairment) -> None:
        with self._lock:
            for lane in self.lanes:
                lane.set(impairment)
        self._wake()

    @property
    def impairment(self) -> Impairment:
        return self.lanes[0].impairment

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "passed": sum(lane.passed for lane in self.lanes),
                "lost": sum(lane.lost for lane in self.lanes),
                "blackholed": sum(lane.blackholed for lane in self.lanes),
                "foreign": self.foreign,
                "write_errors": self.write_errors,
            }

    def close(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for fd in [*self._fds, self._wake_r, self._wake_w]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds.clear()
        self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")

    def _run(self) -> None:
        fds = self._fds
        while not self._stopping:
            with self._lock:
                dues = [d for lane in self.lanes if (d := lane.next_due()) is not None]
            timeout = max(0.0, min(dues) - time.monotonic()) if dues else None
            try:
                ready, _, _ = select.select([*fds, self._wake_r], [], [], timeout)
            except OSError:
                return  # closed under us
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            now = time.monotonic()
            for i, fd in enumerate(fds):
                if fd in ready:
                    self._take(fd, self.lanes[i], now)
            with self._lock:
                out = [(fds[1 - i], lane.pop_due(time.monotonic())) for i, lane in enumerate(self.lanes)]
            for fd, packets in out:
                for packet in packets:
                    try:
                        os.write(fd, packet)
                    except OSError:
                        self.write_errors += 1  # the namespace is going away, or a full queue

    def _take(self, fd: int, lane: Lane, now: float) -> None:
        for _ in range(READ_BATCH):
            try:
                packet = os.read(fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not ipv4_between(packet, *self._addrs):
                self.foreign += 1
                continue
            with self._lock:
                lane.offer(packet, now)
