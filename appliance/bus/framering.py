"""Shared-memory frame ring: one writer, any number of readers, in different processes.

Raw frames (the camera's lores preview, a remote viewer's video) never ride the bus. The
writer puts each frame in a ring of fixed-size slots in a shared file and publishes a
`FrameRingNotice` (ring name, frame_seq) on the bus; a reader copies the frame out of the ring.
Nothing queues: a slow reader skips frames and a frame overwritten before it was read is gone.

File layout (little-endian, every field naturally aligned; slots start on 64-byte boundaries):

    header, 128 bytes
      0  magic "FRMRING\\0"   8  version u32      12 header_size u32   16 slot_count u32
     20  slot_stride u32     24  frame_size u32  28 width u32         32 height u32
     36  flags u32 (bit 0: frames carry a crc32)  40 pixel format, 16 bytes ASCII, NUL-padded
     56  generation u64 (random, new for every ring the writer creates)
     64  crc32 of bytes 0..63 u32                 68 writer pid u32
     72  latest frame_seq u64    80  state u64 (0 open, 1 closed by the writer)
    slot i at 128 + i * slot_stride: a 64-byte slot header, then frame_size bytes of pixels
      0  seq u64 (0: empty or being written)      8  capture_ts f64   16 crc32 u64

Frame seqs start at 1 for each ring and never repeat within it; frame seq s lives in slot
s % slot_count. The writer never resizes a ring: it builds a new file next to the path and
renames it into place, so a reader never sees a half-made ring, and a reader of the old ring
keeps a valid (now unlinked) mapping until it notices the new file (`refresh`).

Errors: a file that is missing, not a ring, of another version, corrupt or truncated raises
StateError (state the process cannot read), never a BusError, so a bus client's reconnect logic
does not mistake a bad ring for a lost connection. Wrong arguments (an unknown format, a frame
of the wrong size) raise ValueError: they are bugs in the caller, not conditions to handle.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import mmap
import os
import re
import stat
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from appliance.errors import StateError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# The writer's side runs on the standard library alone (memoryview casts of the mapping):
# numpy costs a process ~10 MB of RSS, and the publisher, which writes a viewer's video here,
# has no other use for it. Only a reader imports numpy, to hand out its frames as arrays.
# memoryview casts are native-endian; the file format is little-endian, as every Pi is.
if sys.byteorder != "little":
    raise ImportError("appliance.bus.framering: the frame ring format needs a little-endian host")

log = logging.getLogger(__name__)

# Memory ordering: what the seqlock gives, and why frames also carry a crc32.
#
# The writer marks a slot (seq = 0), copies the pixels, stores capture_ts and the crc, then
# publishes seq; a reader loads seq, copies out, and loads seq again, keeping the copy only if
# both loads saw the seq it wanted. That is sound only if (a) the writer's stores become visible
# in program order, (b) the reader's loads are performed in program order, and (c) each 8-byte
# seq load and store is single-copy atomic.
#
# Python issues no memory barriers between processes, so none of that comes from the language.
# (c) holds on 64-bit builds because a memoryview cast to "Q" (and numpy's uint64 elements)
# reads and writes an aligned 8-byte element with one 64-bit load or store, an implementation
# detail; on 32-bit Raspberry Pi OS it may be two 32-bit
# accesses. On x86-64, TSO gives (a) and (b), so the seqlock alone is sound there. On ARM
# (every Raspberry Pi) the CPU may reorder plain stores with stores and loads with loads unless
# a barrier (dmb) sits between them, and none of the Python path provides one we can rely on:
# the GIL is per process, and a syscall is not an architectural barrier. A reader there could
# see the new seq before the last pixel stores land, or satisfy its second seq load before its
# pixel loads. The windows are tiny next to the microseconds of interpreter work between the
# steps, but tiny is not never.
#
# So the writer also stores crc32(seq, capture_ts, pixels) in the slot, and the reader checks it
# on its private copy. Any mix of two writes, of a slot and a half-seen seq, or of stale and new
# pixels, fails the check except for a 1 in 2**32 collision, on any memory model. Accepted frame
# guarantee: the (seq, capture_ts, pixels) a reader returns are exactly one frame the writer
# wrote together. It costs one crc32 of the frame per write and per read (about 0.15 ms for a
# 640x480 RGB frame on an x86 core, several times that on a Pi). A writer may create a ring with
# checksum=False: then x86-64 keeps the guarantee and ARM gets the seqlock's best effort.

MAGIC = b"FRMRING\x00"
VERSION = 1
DEFAULT_DIR = Path("/dev/shm")

_HEADER_SIZE = 128
_SLOT_HEADER = 64
_ALIGN = 64
_STATIC = struct.Struct("<8sIIIIIIII16sQ")  # bytes 0..63
_HEADER_CRC = struct.Struct("<II")  # crc of the static part, writer pid: bytes 64..71
_SLOT_PREFIX = struct.Struct("<Qd")  # what the frame crc covers before the pixels
_LATEST = 72 // 8  # uint64 index of the latest frame seq
_STATE = 80 // 8  # uint64 index of the writer's state
_OPEN, _CLOSED = 0, 1
_FLAG_CRC = 1

MAX_SLOTS = 64
MAX_DIMENSION = 8192
_LATEST_ATTEMPTS = 3
_F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)  # Linux >= 5.1
_RING_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

# The ring does not interpret pixels: the name travels with the frame and means what the writer
# means (picamera2's "RGB888" is B, G, R in memory). The 4:2:0 formats are one
# (height * 3/2, width) plane, as picamera2 returns them and OpenCV takes them.
_FORMATS: dict[str, int] = {  # name: bytes per pixel, or 0 for 4:2:0 planar (even sizes only)
    "GRAY8": 1,
    "RGB888": 3,
    "BGR888": 3,
    "XRGB8888": 4,
    "XBGR8888": 4,
    "I420": 0,
    "YUV420": 0,
    "NV12": 0,
}


def frame_shape(fmt: str, width: int, height: int) -> tuple[int, ...]:
    """The numpy shape of one frame; ValueError for an unknown format or impossible size."""
    if fmt not in _FORMATS:
        raise ValueError(f"unknown pixel format {fmt!r}; known: {', '.join(_FORMATS)}")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ValueError(f"frame size {width}x{height} outside 1..{MAX_DIMENSION}")
    channels = _FORMATS[fmt]
    if channels == 0:
        if width % 2 or height % 2:
            raise ValueError(f"{fmt} needs an even width and height, got {width}x{height}")
        return (height * 3 // 2, width)
    return (height, width) if channels == 1 else (height, width, channels)


def ring_path(name: str, directory: str | os.PathLike[str] = DEFAULT_DIR) -> Path:
    """The file of the ring a FrameRingNotice names, e.g. ring_path("camera-preview", run_dir)."""
    if not _RING_NAME.match(name):
        raise ValueError(f"bad ring name {name!r}: lower-case letters, digits, '.', '_', '-'")
    return Path(directory) / name


@dataclass(frozen=True)
class RingLayout:
    """The fixed geometry of one ring, as its header records it."""

    width: int
    height: int
    fmt: str
    slots: int
    frame_size: int
    slot_stride: int
    checksum: bool
    generation: int

    @property
    def shape(self) -> tuple[int, ...]:
        return frame_shape(self.fmt, self.width, self.height)

    @property
    def file_size(self) -> int:
        return _HEADER_SIZE + self.slots * self.slot_stride

    @classmethod
    def new(cls, width: int, height: int, fmt: str, slots: int, checksum: bool) -> RingLayout:
        shape = frame_shape(fmt, width, height)
        if not 2 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be 2..{MAX_SLOTS}, got {slots}")
        frame_size = math.prod(shape)
        stride = -(-(_SLOT_HEADER + frame_size) // _ALIGN) * _ALIGN
        generation = int.from_bytes(os.urandom(8), "little") or 1
        return cls(width, height, fmt, slots, frame_size, stride, checksum, generation)

    def pack(self, pid: int) -> bytes:
        static = _STATIC.pack(
            MAGIC,
            VERSION,
            _HEADER_SIZE,
            self.slots,
            self.slot_stride,
            self.frame_size,
            self.width,
            self.height,
            _FLAG_CRC if self.checksum else 0,
            self.fmt.encode("ascii"),
            self.generation,
        )
        return static + _HEADER_CRC.pack(zlib.crc32(static), pid)

    @classmethod
    def unpack(cls, header: bytes, file_size: int, source: str) -> RingLayout:
        """Validate a ring header against the file's real size; StateError says what is wrong."""
        if len(header) < _HEADER_SIZE:
            raise StateError(f"{source}: not a frame ring: {file_size} bytes, shorter than a header")
        static = header[: _STATIC.size]
        magic, version, header_size, slots, stride, frame_size, width, height, flags, raw_fmt, gen = (
            _STATIC.unpack(static)
        )
        if magic != MAGIC:
            raise StateError(f"{source}: not a frame ring (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise StateError(f"{source}: frame ring version {version}, this build reads {VERSION}")
        stored_crc, _pid = _HEADER_CRC.unpack_from(header, _STATIC.size)
        if stored_crc != zlib.crc32(static):
            raise StateError(f"{source}: frame ring header is corrupt (checksum mismatch)")
        fmt = raw_fmt.rstrip(b"\x00").decode("ascii", "replace")
        try:
            shape = frame_shape(fmt, width, height)
        except ValueError as exc:
            raise StateError(f"{source}: frame ring header is invalid: {exc}") from None
        if (
            header_size != _HEADER_SIZE
            or not 2 <= slots <= MAX_SLOTS
            or frame_size != math.prod(shape)
            or stride < _SLOT_HEADER + frame_size
            or stride % _ALIGN
        ):
            raise StateError(
                f"{source}: frame ring header is invalid: header {header_size} B, {slots} slots of "
                f"{stride} B for {frame_size} B frames of {width}x{height} {fmt}"
            )
        layout = cls(width, height, fmt, slots, frame_size, stride, bool(flags & _FLAG_CRC), gen)
        if file_size < layout.file_size:
            raise StateError(
                f"{source}: frame ring is truncated: {file_size} bytes, its header needs {layout.file_size}"
            )
        return layout


class RingFrame(NamedTuple):
    """One frame copied out of a ring; pixels is the reader's own writable array."""

    seq: int
    capture_ts: float
    pixels: npt.NDArray[np.uint8]


class _Mapping:
    """A ring's mmap and the three typed views of it; close() releases the views first."""

    def __init__(self, fd: int, size: int, writable: bool) -> None:
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self.mm = mmap.mmap(fd, size, access=access)
        # Aligned element access through these views is one 64-bit load or store on 64-bit
        # builds; the seqlock's fast path relies on it (see the memory ordering note above).
        self.u8 = memoryview(self.mm)
        self.u64 = self.u8.cast("Q")
        self.f64 = self.u8.cast("d")

    def close(self) -> None:
        if self.mm.closed:
            return
        # mmap refuses to close while a view still exports its buffer.
        for view in (self.u64, self.f64, self.u8):
            view.release()
        self.mm.close()


_Mapped = tuple[RingLayout, _Mapping, tuple[int, int]]  # layout, mapping, (st_dev, st_ino)


def _slot_index(layout: RingLayout, seq: int) -> int:
    """uint64 index of the slot header holding frame seq."""
    return (_HEADER_SIZE + (seq % layout.slots) * layout.slot_stride) // 8


def _frame_crc(seq: int, capture_ts: float, pixels: memoryview | bytes | bytearray) -> int:
    return zlib.crc32(pixels, zlib.crc32(_SLOT_PREFIX.pack(seq, capture_ts)))


class FrameRingWriter:
    """The one writer of a ring. Create with `create` (a file) or `create_memfd` (an fd)."""

    def __init__(self, fd: int, layout: RingLayout, path: Path | None) -> None:
        self.layout = layout
        self.path = path
        self._fd = fd
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        self._map = _Mapping(fd, layout.file_size, writable=True)
        self._map.mm[:_HEADER_SIZE] = layout.pack(os.getpid()).ljust(_HEADER_SIZE, b"\x00")
        self._seq = 0
        self._closed = False

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fmt: str,
        slots: int = 4,
        *,
        checksum: bool = True,
        mode: int = 0o640,
    ) -> FrameRingWriter:
        """Create a ring at path, replacing any old ring there in one rename."""
        layout = RingLayout.new(width, height, fmt, slots, checksum)
        target = Path(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise StateError(f"{target}: cannot create frame ring: {exc}") from exc
        writer: FrameRingWriter | None = None
        try:
            os.fchmod(fd, mode)
            _reserve(fd, layout.file_size)
            writer = cls(fd, layout, target)
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if writer is not None:
                writer._map.close()
            os.close(fd)
            if isinstance(exc, OSError):
                raise StateError(f"{target}: cannot create frame ring: {exc}") from exc
            raise
        log.info("frame ring %s: %dx%d %s, %d slots", target, width, height, fmt, slots)
        return writer

    @classmethod
    def create_memfd(
        cls,
        width: int,
        height: int,
        fmt: str,
        slots: int = 4,
        *,
        name: str = "framering",
        checksum: bool = True,
    ) -> FrameRingWriter:
        """Create a ring in an anonymous memfd, to hand to readers over SCM_RIGHTS.

        The memfd is sealed against shrinking and growing (a reader can never fault on a
        truncated mapping) and, where the kernel has it, against writes by anyone but this
        writer's own mapping.
        """
        layout = RingLayout.new(width, height, fmt, slots, checksum)
        try:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as exc:
            raise StateError(f"memfd {name}: cannot create frame ring: {exc}") from exc
        try:
            _reserve(fd, layout.file_size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            writer = cls(fd, layout, None)
            with contextlib.suppress(OSError):  # EINVAL before Linux 5.1
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _F_SEAL_FUTURE_WRITE)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise StateError(f"memfd {name}: cannot create frame ring: {exc}") from exc
            raise
        return writer

    @property
    def fd(self) -> int:
        """The ring's read-write fd, owned by the writer. Send `reader_fd()` instead."""
        return self._fd

    @property
    def last_seq(self) -> int:
        """The seq of the last frame written, 0 before the first."""
        return self._seq

    def reader_fd(self) -> int:
        """A new read-only fd of this ring, for socket.send_fds; the caller closes it."""
        return os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)

    def write(self, frame: npt.NDArray[np.uint8] | bytes | bytearray | memoryview, capture_ts: float) -> int:
        """Put one frame in the next slot and return its frame_seq. Never blocks on readers."""
        if self._closed:
            raise StateError(f"{self._name()}: frame ring writer is closed")
        pixels = self._pixels(frame)
        layout, m = self.layout, self._map
        seq = self._seq + 1
        i = _slot_index(layout, seq)
        crc = _frame_crc(seq, capture_ts, pixels) if layout.checksum else 0
        start = i * 8 + _SLOT_HEADER
        m.u64[i] = 0  # being written: readers of the seq this slot held now discard their copy
        m.u8[start : start + layout.frame_size] = pixels
        m.f64[i + 1] = capture_ts
        m.u64[i + 2] = crc
        m.u64[i] = seq  # publish
        m.u64[_LATEST] = seq
        self._seq = seq
        return seq

    def close(self) -> None:
        """Mark the ring closed for its readers, unlink its file, release the mapping."""
        if self._closed:
            return
        self._closed = True
        self._map.u64[_STATE] = _CLOSED
        if self.path is not None:
            # A writer that restarted may already have renamed its new ring onto the path.
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)
        self._map.close()
        os.close(self._fd)

    def __enter__(self) -> FrameRingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pixels(self, frame: npt.NDArray[np.uint8] | bytes | bytearray | memoryview) -> memoryview:
        """The frame's bytes as a flat view, through the buffer protocol (no numpy needed)."""
        layout = self.layout
        array: Any = frame
        # A numpy array: its dtype and shape must be the ring's.
        if hasattr(array, "dtype") and (
            array.dtype.str != "|u1" or array.shape not in (layout.shape, (layout.frame_size,))
        ):
            raise ValueError(
                f"{self._name()}: frame is {array.dtype} {array.shape}, the ring takes uint8 "
                f"{layout.shape} ({layout.width}x{layout.height} {layout.fmt})"
            )
        view = memoryview(array)  # the buffer protocol: numpy arrays, bytes, bytearray, memoryview
        if not view.c_contiguous:
            view = memoryview(view.tobytes())  # a strided array: one copy, as ascontiguousarray made
        pixels = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        if pixels.nbytes != layout.frame_size:
            raise ValueError(
                f"{self._name()}: frame is {pixels.nbytes} bytes, the ring takes {layout.frame_size}"
            )
        return pixels

    def _name(self) -> str:
        return str(self.path) if self.path is not None else f"memfd {self._fd}"


class FrameRingReader:
    """A reader of a ring, by path (`open`) or by a received fd (`from_fd`). Read-only mapping."""

    def __init__(self, mapped: _Mapped, source: str, path: Path | None) -> None:
        self.path = path
        self.torn_reads = 0  # copies discarded because the writer reused the slot meanwhile
        self.checksum_failures = 0  # copies the seqlock passed but the crc refused
        self._source = source
        self.layout, self._map, self._ident = mapped

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FrameRingReader:
        target = Path(path)
        return cls(_map_path(target), str(target), target)

    @classmethod
    def from_fd(cls, fd: int) -> FrameRingReader:
        """Map the ring behind fd (e.g. from socket.recv_fds). The caller still owns fd."""
        source = f"fd {fd}"
        return cls(_map_ring(fd, source), source, None)

    @property
    def latest_seq(self) -> int:
        """The newest frame seq the writer has published, 0 before the first."""
        return int(self._map.u64[_LATEST])

    @property
    def writer_closed(self) -> bool:
        return int(self._map.u64[_STATE]) == _CLOSED

    def read(self, seq: int) -> RingFrame | None:
        """Frame seq if it is still in the ring, else None (overwritten, torn or not yet written)."""
        layout, m = self.layout, self._map
        if seq < 1:
            return None
        i = _slot_index(layout, seq)
        if int(m.u64[i]) != seq:
            return None
        capture_ts = float(m.f64[i + 1])
        crc = int(m.u64[i + 2])
        start = i * 8 + _SLOT_HEADER
        pixels = bytearray(m.u8[start : start + layout.frame_size])  # the reader's own copy
        if int(m.u64[i]) != seq:
            self.torn_reads += 1
            return None
        if layout.checksum and _frame_crc(seq, capture_ts, pixels) != crc:
            if not self.checksum_failures:
                log.warning("%s: frame %d failed its checksum; discarded", self._source, seq)
            self.checksum_failures += 1
            return None
        import numpy as np  # readers (the screen, the setup page) have it loaded already

        return RingFrame(seq, capture_ts, np.frombuffer(pixels, dtype=np.uint8).reshape(layout.shape))

    def latest(self) -> RingFrame | None:
        """The newest frame that reads whole, or None if the ring has none yet.

        Tries the latest seq and then older ones still in the ring, a few times over; only a
        reader lapped by the writer on every attempt gets None from a non-empty ring.
        """
        for _ in range(_LATEST_ATTEMPTS):
            newest = self.latest_seq
            if newest == 0:
                return None
            for seq in range(newest, max(0, newest - self.layout.slots), -1):
                frame = self.read(seq)
                if frame is not None:
                    return frame
        return None

    def refresh(self) -> bool:
        """Map the new ring if the writer restarted (its path names a new file); True if so.

        Until then the reader keeps reading the old ring, which stays valid but gets no new
        frames. Frame seqs start again at 1 in the new ring; `layout.generation` tells rings
        apart. A ring received as an fd has no path: its writer sends a new fd instead.
        """
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) == self._ident:
            return False
        mapped = _map_path(self.path)
        old_generation = self.layout.generation
        self._map.close()
        self.layout, self._map, self._ident = mapped
        log.info(
            "%s: writer restarted (generation %016x -> %016x), reopened",
            self._source,
            old_generation,
            self.layout.generation,
        )
        return True

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> FrameRingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map_path(path: Path) -> _Mapped:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        reason = "no such file" if exc.errno == errno.ENOENT else exc.strerror
        raise StateError(f"{path}: cannot open frame ring: {reason}") from exc
    try:
        return _map_ring(fd, str(path))
    finally:
        os.close(fd)  # the mapping holds its own reference


def _map_ring(fd: int, source: str) -> _Mapped:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"{source}: not a frame ring (not a regular file)")
    header = os.pread(fd, _HEADER_SIZE, 0)
    layout = RingLayout.unpack(header, st.st_size, source)
    try:
        mapping = _Mapping(fd, layout.file_size, writable=False)
    except OSError as exc:
        raise StateError(f"{source}: cannot map frame ring: {exc}") from exc
    return layout, mapping, (st.st_dev, st.st_ino)


def _reserve(fd: int, size: int) -> None:
    """Size the file and allocate its memory now: a full tmpfs fails here, not as SIGBUS later."""
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, size)
