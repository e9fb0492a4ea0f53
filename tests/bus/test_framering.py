"""The shared-memory frame ring, between real processes.

Writers and readers run in separate processes started with "spawn", so nothing is shared but
the ring file or the fd sent over a socket. Processes hand off through queues, never sleeps:
no test depends on timing.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import platform
import socket
import struct
import zlib
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from appliance.bus.framering import (
    FrameRingReader,
    FrameRingWriter,
    frame_shape,
    ring_path,
)
from appliance.errors import StateError

CTX = mp.get_context("spawn")
WAIT = 60  # seconds a queue get may block before the test fails instead of hanging
W, H = 320, 240


def stamp(seq: int) -> npt.NDArray[np.uint8]:
    """The RGB value every pixel of frame seq carries: its seq's low 24 bits."""
    return np.array([seq & 0xFF, (seq >> 8) & 0xFF, (seq >> 16) & 0xFF], dtype=np.uint8)


def frame_for(seq: int, shape: tuple[int, ...] = (H, W, 3)) -> npt.NDArray[np.uint8]:
    frame = np.empty(shape, dtype=np.uint8)
    frame[...] = stamp(seq) if shape[-1] == 3 else seq & 0xFF
    return frame


# --- child processes -----------------------------------------------------------------------


def burst_writer(path: str, commands: Queue[int], done: Queue[object]) -> None:
    """Write frames in bursts of the size the parent asks for; 0 ends the process."""
    with FrameRingWriter.create(path, W, H, "RGB888", slots=4) as writer:
        done.put("ready")
        while n := commands.get(timeout=WAIT):
            for _ in range(n):
                seq = writer.last_seq + 1
                writer.write(frame_for(seq), capture_ts=seq / 10)
            done.put(writer.last_seq)


def fast_writer(path: str, checksum: bool, stop: Event, done: Queue[object]) -> None:
    """Write frames as fast as it can until told to stop; report the last seq."""
    with FrameRingWriter.create(path, W, H, "RGB888", slots=3, checksum=checksum) as writer:
        frame = np.empty((H, W, 3), dtype=np.uint8)
        while not stop.is_set():
            seq = writer.last_seq + 1
            frame[...] = stamp(seq)
            writer.write(frame, capture_ts=float(seq))
            if seq == 1:
                done.put("ready")
        done.put(writer.last_seq)


def crashing_writer(path: str, done: Queue[object]) -> None:
    """Write five frames, then wait to be killed without closing the ring."""
    writer = FrameRingWriter.create(path, 64, 48, "GRAY8")
    for seq in range(1, 6):
        writer.write(frame_for(seq, (48, 64)), capture_ts=float(seq))
    done.put(writer.layout.generation)
    done.get(timeout=WAIT)  # never answered: the parent kills this process


def memfd_reader(sock: socket.socket, out: Queue[object]) -> None:
    """Receive a ring over the socket, report its latest frame, and again when told."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    (fd,) = fds
    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    with FrameRingReader.from_fd(fd) as reader:
        os.close(fd)  # the mapping keeps the ring alive
        out.put(access == os.O_RDONLY)
        while sock.recv(16) == b"next":
            frame = reader.latest()
            assert frame is not None
            out.put(
                (
                    frame.seq,
                    frame.capture_ts,
                    frame.pixels.shape,
                    int(frame.pixels.min()),
                    int(frame.pixels.max()),
                )
            )
        out.put(reader.writer_closed)


# --- tests ---------------------------------------------------------------------------------


def test_reader_in_another_process_gets_latest_and_skips_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "camera-preview"
    commands: Queue[int] = CTX.Queue()
    done: Queue[object] = CTX.Queue()
    proc = CTX.Process(target=burst_writer, args=(str(path), commands, done))
    proc.start()
    try:
        assert done.get(timeout=WAIT) == "ready"
        with FrameRingReader.open(path) as reader:
            assert reader.layout.shape == (H, W, 3)
            assert reader.latest() is None

            commands.put(3)
            assert done.get(timeout=WAIT) == 3
            frame = reader.latest()
            assert frame is not None
            assert (frame.seq, frame.capture_ts) == (3, 0.3)
            assert (frame.pixels == stamp(3)).all()
            assert [f.seq for s in (1, 2, 3) if (f := reader.read(s))] == [1, 2, 3]

            # A slow reader: ten frames went by in a ring of four. Nothing queued for it.
            commands.put(10)
            assert done.get(timeout=WAIT) == 13
            frame = reader.latest()
            assert frame is not None and frame.seq == 13 and (frame.pixels == stamp(13)).all()
            assert [reader.read(s) for s in (1, 3, 9)] == [None, None, None]
            assert [f.seq for s in range(10, 14) if (f := reader.read(s))] == [10, 11, 12, 13]
            assert reader.read(14) is None  # not written yet
            assert reader.read(0) is None

            frame.pixels[...] = 0  # the copy is the reader's own
            assert (reader.read(13) or frame).pixels.max() == 13

            commands.put(0)
            proc.join(WAIT)
            assert proc.exitcode == 0
            assert reader.writer_closed
            assert not path.exists()
            assert reader.latest_seq == 13  # the unlinked ring stays readable
    finally:
        if proc.is_alive():
            proc.kill()


@pytest.mark.parametrize(
    "checksum",
    [
        True,
        pytest.param(
            False,
            marks=pytest.mark.skipif(
                platform.machine() not in ("x86_64", "AMD64"),
                reason="the seqlock alone is sound only under x86-64's store and load ordering",
            ),
        ),
    ],
    ids=["checksum", "seqlock-only"],
)
def test_no_torn_frame_is_accepted_under_a_concurrent_writer(tmp_path: Path, checksum: bool) -> None:
    path = tmp_path / "preview"
    stop = CTX.Event()
    done: Queue[object] = CTX.Queue()
    proc = CTX.Process(target=fast_writer, args=(str(path), checksum, stop, done))
    proc.start()
    try:
        assert done.get(timeout=WAIT) == "ready"
        with FrameRingReader.open(path) as reader:
            slots = reader.layout.slots
            accepted = 0
            for _ in range(3000):
                newest = reader.latest_seq
                # The newest frame, and the oldest: the slot the writer is about to overwrite.
                for seq in (newest, newest - slots + 1):
                    frame = reader.read(seq)
                    if frame is None:
                        continue
                    accepted += 1
                    assert frame.seq == seq and frame.capture_ts == float(seq)
                    bad = int((frame.pixels != stamp(seq)).any(axis=2).sum())
                    assert bad == 0, f"frame {seq}: {bad} pixels from another frame"
            stop.set()
            last = done.get(timeout=WAIT)
            proc.join(WAIT)
            assert proc.exitcode == 0
            assert accepted > 0
            final = reader.latest()
            assert final is not None and final.seq == last and (final.pixels == stamp(last)).all()
    finally:
        stop.set()
        if proc.is_alive():
            proc.kill()


def test_checksum_refuses_what_the_seqlock_cannot_see(tmp_path: Path) -> None:
    """Simulate what weak memory ordering can show a reader: a published seq over stale or
    half-written pixels. The slot seqs agree, so only the crc can refuse it."""
    path = tmp_path / "ring"
    with (
        FrameRingWriter.create(path, 64, 48, "GRAY8", slots=4) as writer,
        FrameRingReader.open(path) as reader,
    ):
        for seq in range(1, 3):
            writer.write(frame_for(seq, (48, 64)), capture_ts=float(seq))
        stride = reader.layout.slot_stride
        raw = np.memmap(path, dtype=np.uint8, mode="r+")
        slot1 = 128 + 1 * stride

        raw[slot1 + 64 + 100] ^= 0xFF  # a torn pixel under an intact seq
        assert reader.read(1) is None
        assert reader.checksum_failures == 1
        raw[slot1 + 64 + 100] ^= 0xFF
        assert reader.read(1) is not None

        # Seq 5 visible in slot 1 before any of its pixels: stale frame 1 under a new seq.
        raw[slot1 : slot1 + 8] = np.frombuffer(struct.pack("<Q", 5), dtype=np.uint8)
        raw[72:80] = np.frombuffer(struct.pack("<Q", 5), dtype=np.uint8)
        assert reader.read(5) is None
        assert reader.checksum_failures == 2
        frame = reader.latest()  # falls back to the newest frame that reads whole
        assert frame is not None and frame.seq == 2
        del raw


def test_without_checksum_a_damaged_frame_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    with FrameRingWriter.create(path, 64, 48, "GRAY8", checksum=False) as writer:
        writer.write(frame_for(1, (48, 64)), capture_ts=1.0)
        raw = np.memmap(path, dtype=np.uint8, mode="r+")
        raw[128 + writer.layout.slot_stride + 64] = 99
        del raw
        with FrameRingReader.open(path) as reader:
            frame = reader.read(1)
            assert frame is not None and frame.pixels[0, 0] == 99


def _valid_ring(path: Path) -> bytes:
    with FrameRingWriter.create(path, 64, 48, "GRAY8") as writer:
        writer.write(frame_for(1, (48, 64)), capture_ts=1.0)
        return path.read_bytes()


def _patched(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    """Change one header field and fix up the header checksum, as a careful forger would."""
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    struct.pack_into("<I", buf, 64, zlib.crc32(bytes(buf[:64])))
    return bytes(buf)


def _flipped(data: bytes, offset: int) -> bytes:
    buf = bytearray(data)
    buf[offset] ^= 0x01
    return bytes(buf)


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes | None], str]] = {
    "missing": (lambda ok: None, "no such file"),
    "empty": (lambda ok: b"", "shorter than a header"),
    "text": (lambda ok: b"not a ring at all\n" * 100, "not a frame ring \\(magic"),
    "truncated": (lambda ok: ok[: len(ok) // 2], "truncated: \\d+ bytes, its header needs \\d+"),
    "header-only": (lambda ok: ok[:128], "truncated"),
    "corrupt-header": (lambda ok: _flipped(ok, 28), "header is corrupt"),
    "future-version": (lambda ok: _patched(ok, 8, "<I", 2), "version 2, this build reads 1"),
    "unknown-format": (lambda ok: _patched(ok, 40, "16s", b"MJPEG"), "unknown pixel format 'MJPEG'"),
    "bad-slot-count": (lambda ok: _patched(ok, 16, "<I", 0), "header is invalid: header 128 B, 0 slots"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_refused_with_a_clear_error(tmp_path: Path, case: str) -> None:
    valid = _valid_ring(tmp_path / "good")
    make, reason = BAD_FILES[case]
    path = tmp_path / "bad"
    content = make(valid)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StateError, match=reason) as info:
        FrameRingReader.open(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_directory_is_not_a_ring(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not a regular file"):
        FrameRingReader.open(tmp_path)


def test_writer_restart_after_a_crash_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "camera-preview"
    done: Queue[object] = CTX.Queue()
    proc = CTX.Process(target=crashing_writer, args=(str(path), done))
    proc.start()
    try:
        old_generation = done.get(timeout=WAIT)
        reader = FrameRingReader.open(path)
    finally:
        proc.kill()
        proc.join(WAIT)
    with reader:
        assert reader.layout.generation == old_generation
        assert not reader.writer_closed  # it crashed: nobody marked the ring closed
        assert reader.refresh() is False  # same file: nothing to do
        old = reader.latest()
        assert old is not None and old.seq == 5

        with FrameRingWriter.create(path, 32, 16, "RGB888") as restarted:
            restarted.write(frame_for(1, (16, 32, 3)), capture_ts=100.0)
            still = reader.latest()  # until refresh, the old ring
            assert still is not None and still.seq == 5 and still.pixels.shape == (48, 64)
            assert reader.refresh() is True
            assert reader.layout.generation == restarted.layout.generation != old_generation
            assert reader.layout.shape == (16, 32, 3)
            frame = reader.latest()
            assert frame is not None and (frame.seq, frame.capture_ts) == (1, 100.0)
            assert (frame.pixels == stamp(1)).all()
            assert reader.refresh() is False
        assert reader.writer_closed
        assert reader.refresh() is False  # the path is gone until the next writer


def test_an_old_writer_closing_late_leaves_the_new_ring_alone(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    first = FrameRingWriter.create(path, 64, 48, "GRAY8")
    second = FrameRingWriter.create(path, 64, 48, "GRAY8")
    first.close()
    assert path.exists()
    with FrameRingReader.open(path) as reader:
        assert reader.layout.generation == second.layout.generation
    second.close()
    assert not path.exists()


def test_memfd_ring_handed_over_a_socketpair(tmp_path: Path) -> None:
    out: Queue[object] = CTX.Queue()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    writer = FrameRingWriter.create_memfd(64, 48, "GRAY8", slots=2, name="remote-video")
    proc = CTX.Process(target=memfd_reader, args=(child, out))
    proc.start()
    child.close()
    try:
        seals = fcntl.fcntl(writer.fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW and seals & fcntl.F_SEAL_SEAL
        with pytest.raises(PermissionError):
            os.ftruncate(writer.fd, 4096)  # no one can pull the pages from under a reader

        writer.write(frame_for(7, (48, 64)), capture_ts=7.0)
        fd = writer.reader_fd()
        try:
            socket.send_fds(parent, [b"ring"], [fd])
        finally:
            os.close(fd)
        assert out.get(timeout=WAIT) is True  # the reader got a read-only fd

        parent.sendall(b"next")
        assert out.get(timeout=WAIT) == (1, 7.0, (48, 64), 7, 7)
        for seq in range(2, 6):  # the same memory, live: later frames show up too
            writer.write(frame_for(seq * 10, (48, 64)), capture_ts=float(seq))
        parent.sendall(b"next")
        assert out.get(timeout=WAIT) == (5, 5.0, (48, 64), 50, 50)

        writer.close()
        parent.sendall(b"stop")
        assert out.get(timeout=WAIT) is True  # the reader saw the writer close
        proc.join(WAIT)
        assert proc.exitcode == 0
    finally:
        writer.close()
        parent.close()
        if proc.is_alive():
            proc.kill()


@pytest.mark.parametrize(
    ("fmt", "shape"),
    [
        ("GRAY8", (48, 64)),
        ("RGB888", (48, 64, 3)),
        ("XRGB8888", (48, 64, 4)),
        ("I420", (72, 64)),
        ("NV12", (72, 64)),
    ],
)
def test_each_format_round_trips_in_its_shape(tmp_path: Path, fmt: str, shape: tuple[int, ...]) -> None:
    assert frame_shape(fmt, 64, 48) == shape
    path = tmp_path / "ring"
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    with FrameRingWriter.create(path, 64, 48, fmt) as writer, FrameRingReader.open(path) as reader:
        assert writer.write(pixels, capture_ts=1.5) == 1
        assert writer.write(pixels.tobytes(), capture_ts=2.5) == 2  # bytes work as well
        assert writer.write(pixels.reshape(-1), capture_ts=3.5) == 3  # and flat arrays
        for seq in (1, 2, 3):
            frame = reader.read(seq)
            assert frame is not None and frame.pixels.shape == shape
            assert np.array_equal(frame.pixels, pixels)


def test_wrong_arguments_are_value_errors(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    with pytest.raises(ValueError, match="unknown pixel format"):
        FrameRingWriter.create(path, 64, 48, "MJPEG")
    with pytest.raises(ValueError, match="even width and height"):
        FrameRingWriter.create(path, 63, 48, "I420")
    with pytest.raises(ValueError, match="slots must be"):
        FrameRingWriter.create(path, 64, 48, "GRAY8", slots=1)
    with pytest.raises(ValueError, match="ring name"):
        ring_path("../etc/passwd")
    assert ring_path("camera-preview", tmp_path) == tmp_path / "camera-preview"
    assert not path.exists()

    writer = FrameRingWriter.create(path, 64, 48, "GRAY8")
    with pytest.raises(ValueError, match="frame is 100 bytes"):
        writer.write(b"\x00" * 100, capture_ts=0.0)
    with pytest.raises(ValueError, match=r"frame is uint8 \(64, 48\)"):
        writer.write(np.zeros((64, 48), dtype=np.uint8), capture_ts=0.0)  # transposed
    with pytest.raises(ValueError, match="frame is uint16"):
        writer.write(np.zeros((48, 64), dtype=np.uint16), capture_ts=0.0)
    writer.close()
    with pytest.raises(StateError, match="closed"):
        writer.write(np.zeros((48, 64), dtype=np.uint8), capture_ts=0.0)
    writer.close()  # closing twice is harmless


def test_create_in_a_missing_directory_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot create frame ring"):
        FrameRingWriter.create(tmp_path / "no" / "ring", 64, 48, "GRAY8")
    assert list(tmp_path.iterdir()) == []


def test_a_strided_array_is_written_as_its_pixels(tmp_path: Path) -> None:
    """A view that is not contiguous (a mirrored picture) goes in as the picture it shows."""
    shape = frame_shape("RGB888", 64, 48)
    picture = np.arange(int(np.prod(shape)), dtype=np.uint32).astype(np.uint8).reshape(shape)
    mirrored = picture[:, ::-1]
    assert not mirrored.flags.c_contiguous
    with FrameRingWriter.create(tmp_path / "ring", 64, 48, "RGB888") as writer:
        seq = writer.write(mirrored, capture_ts=1.0)
        with FrameRingReader.open(tmp_path / "ring") as reader:
            frame = reader.read(seq)
    assert frame is not None
    assert np.array_equal(frame.pixels, mirrored)
    frame.pixels[0, 0, 0] ^= 0xFF  # the reader's own copy: writable


WRITER_WITHOUT_NUMPY = """
import sys
from appliance.bus.framering import FrameRingWriter
with FrameRingWriter.create(sys.argv[1], 4, 2, "RGB888") as writer:
    writer.write(bytes(range(24)), capture_ts=2.5)
    writer.write(bytearray(range(1, 25)), capture_ts=3.5)
    assert "numpy" not in sys.modules, "the writer imported numpy"
    print("written", flush=True)
    sys.stdin.read()  # keep the ring open until the test has read it
"""


def test_the_writer_runs_without_numpy(tmp_path: Path) -> None:
    """The publisher writes a viewer's video here and has no other use for numpy (~10 MB of
    RSS): the writer's side needs only the standard library."""
    import subprocess
    import sys

    ring = tmp_path / "ring"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_WITHOUT_NUMPY, str(ring)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        # "written", or end of file when the child failed: its error is on stderr.
        assert proc.stdout.readline() == "written\n", proc.stderr.read()
        with FrameRingReader.open(ring) as reader:
            first, second = reader.read(1), reader.read(2)
        assert first is not None and second is not None
        assert first.capture_ts == 2.5 and bytes(first.pixels.reshape(-1)) == bytes(range(24))
        assert second.capture_ts == 3.5 and bytes(second.pixels.reshape(-1)) == bytes(range(1, 25))
    finally:
        proc.communicate("", timeout=WAIT)
    assert proc.returncode == 0
