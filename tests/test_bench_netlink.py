"""The impairment link (appliance.bench.netlink): its decisions (Lane: loss, delay, order,
partition), and, where root can make namespaces, the real link between two of them."""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import sys

import pytest

from appliance.bench.netlink import CLEAN, Impairment, Lane, ipv4_between
from appliance.bench.netns import NamespacePair, unavailable


def packet(n: int) -> bytes:
    return n.to_bytes(4, "big")


def test_loss_follows_its_probability_with_a_seeded_rng() -> None:
    lane = Lane(random.Random(1), Impairment(loss=0.05))
    kept = sum(lane.offer(packet(i), 0.0) for i in range(20_000))
    # 5 % of 20,000 is 1,000 lost; three standard deviations (about 31 each) either side.
    assert 900 <= lane.lost <= 1100
    assert kept == 20_000 - lane.lost == len(lane.queue)
    # The same seed decides the same packets.
    again = Lane(random.Random(1), Impairment(loss=0.05))
    for i in range(20_000):
        again.offer(packet(i), 0.0)
    assert [p for _, p in again.queue] == [p for _, p in lane.queue]


def test_no_loss_and_total_loss() -> None:
    clean = Lane(random.Random(2))
    assert all(clean.offer(packet(i), 0.0) for i in range(1000)) and clean.lost == 0
    cut = Lane(random.Random(2), Impairment(loss=1.0))
    assert not any(cut.offer(packet(i), 0.0) for i in range(1000)) and cut.lost == 1000


def test_a_packet_comes_out_after_the_delay_and_not_before() -> None:
    lane = Lane(random.Random(3), Impairment(delay_s=0.2))
    lane.offer(packet(1), 10.0)
    lane.offer(packet(2), 10.05)
    assert lane.next_due() == pytest.approx(10.2)
    assert lane.pop_due(10.19) == []
    assert lane.pop_due(10.2) == [packet(1)]
    assert lane.pop_due(10.3) == [packet(2)]
    assert lane.next_due() is None and lane.passed == 2


def test_order_holds_when_the_delay_is_shortened_meanwhile() -> None:
    lane = Lane(random.Random(4), Impairment(delay_s=0.2))
    lane.offer(packet(1), 0.0)  # due at 0.2
    lane.set(CLEAN)
    lane.offer(packet(2), 0.01)  # would be due at 0.01: waits behind the first
    assert lane.pop_due(0.1) == []
    assert lane.pop_due(0.2) == [packet(1), packet(2)]


def test_a_partition_drops_everything_and_what_was_in_flight() -> None:
    lane = Lane(random.Random(5), Impairment(delay_s=0.2))
    lane.offer(packet(1), 0.0)
    lane.offer(packet(2), 0.0)
    lane.set(Impairment(partitioned=True))
    assert not lane.queue and lane.blackholed == 2
    assert not any(lane.offer(packet(i), 1.0) for i in range(10))
    assert lane.blackholed == 12 and lane.pop_due(100.0) == []
    lane.set(CLEAN)  # healed: packets pass again, at once
    assert lane.offer(packet(3), 2.0) and lane.pop_due(2.0) == [packet(3)]


def test_impairment_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(delay_s=-0.1)


def ipv4(src: str, dst: str, version: int = 4) -> bytes:
    header = bytearray(20)
    header[0] = (version << 4) | 5
    header[12:16] = ipaddress.IPv4Address(src).packed
    header[16:20] = ipaddress.IPv4Address(dst).packed
    return bytes(header)


def test_only_ipv4_between_the_two_addresses_is_relayed() -> None:
    a, b = ipaddress.IPv4Address("10.213.0.1").packed, ipaddress.IPv4Address("10.213.0.2").packed
    assert ipv4_between(ipv4("10.213.0.1", "10.213.0.2"), a, b)
    assert ipv4_between(ipv4("10.213.0.2", "10.213.0.1"), a, b)
    assert not ipv4_between(ipv4("10.213.0.1", "8.8.8.8"), a, b)
    assert not ipv4_between(ipv4("10.213.0.1", "10.213.0.2", version=6), a, b)
    assert not ipv4_between(b"\x45\x00", a, b)  # truncated


ECHO_SERVER = """
import socket
s = socket.socket()
s.bind(("10.213.0.2", 9000))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(100))
    c.close()
"""

ECHO_CLIENT = """
import socket, sys, time
t = time.monotonic()
try:
    with socket.create_connection(("10.213.0.2", 9000), timeout=float(sys.argv[1])) as c:
        c.sendall(b"hi")
        assert c.recv(10) == b"hi"
    print(round(time.monotonic() - t, 3))
except OSError as exc:
    print(type(exc).__name__)
"""


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_two_namespaces_joined_by_the_link_see_its_delay_and_partition() -> None:
    with NamespacePair.create(f"t{os.getpid()}", seed=1) as pair:
        server = subprocess.Popen(
            pair.exec_argv(pair.room, [sys.executable, "-c", ECHO_SERVER]),
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"

            def echo(timeout: float) -> str:
                argv = pair.exec_argv(pair.kiosk, [sys.executable, "-c", ECHO_CLIENT, str(timeout)])
                return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()

            assert float(echo(2.0)) < 0.1  # clean: loopback speed
            pair.link.set(Impairment(delay_s=0.1))
            # Connect and one echo: two round trips of 2 x 100 ms.
            assert 0.39 <= float(echo(2.0)) < 0.6
            pair.link.set(Impairment(partitioned=True))
            assert echo(1.0) == "TimeoutError"  # silence, not a refusal or an unreachable network
            pair.link.set(CLEAN)
            assert float(echo(2.0)) < 0.1
            stats = pair.link.stats()
            assert stats["blackholed"] >= 1 and stats["passed"] > 0
        finally:
            server.kill()
            server.wait()


def test_without_root_the_suite_says_why_it_did_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.bench.network import bench_network

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = bench_network()
    assert result["skipped"].startswith("needs root") and result["targets"] == {}
