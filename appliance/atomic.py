"""Atomic writes: a reader sees the old file or the new one, never half of either.

An unattended kiosk loses power without warning, so every write of config or state goes
through a temporary file in the same directory, fsync, rename, then fsync of the directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: int = 0o644, *, text: bool = True) -> Iterator[IO[Any]]:
    """A stream that becomes `path` only when the block ends normally; an exception leaves the
    old file (or none) in place. For data written as it comes (a recording); atomic_write for
    data already whole."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # fdopen first, so the descriptor is closed on every path below.
        stream: IO[Any] = os.fdopen(fd, "w", encoding="utf-8", newline="\n") if text else os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        # mkstemp creates 0600; set the final mode before any secret byte lands on disk.
        with stream:
            os.fchmod(stream.fileno(), mode)
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    payload = data.encode() if isinstance(data, str) else data
    with atomic_open(path, mode, text=False) as fh:
        fh.write(payload)
