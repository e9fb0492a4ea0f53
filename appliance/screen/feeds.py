"""Frames from shared-memory rings, fetched when their notice arrives on the bus.

camera.preview and call.remote_video carry a FrameRingNotice (ring name, frame seq,
generation); the pixels sit in the ring file <run_dir>/<ring>. A feed opens the ring on the
first notice, follows the writer across restarts (a new generation: `refresh`), and keeps the
newest frame as RGB. A ring that cannot be read (the writer gone, a bad file) costs the
picture, never the screen: the error is logged once per distinct reason.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import numpy.typing as npt

from appliance.bus.framering import FrameRingReader, ring_path
from appliance.bus.topics import FrameRingNotice
from appliance.errors import StateError
from appliance.screen.frames import to_rgb

log = logging.getLogger(__name__)


class RingFeed:
    def __init__(self, run_dir: str | os.PathLike[str], what: str) -> None:
        self.run_dir = run_dir
        self.what = what
        self.latest: npt.NDArray[np.uint8] | None = None
        self.frames = 0
        self.errors = 0
        self._reader: FrameRingReader | None = None
        self._ring: str | None = None
        self._seq = 0
        self._last_error: str | None = None

    def _reader_for(self, notice: FrameRingNotice) -> FrameRingReader:
        reader = self._reader
        if reader is not None and self._ring != notice.ring:
            self.close()
            reader = None
        if reader is None:
            reader = FrameRingReader.open(ring_path(notice.ring, self.run_dir))
            self._reader, self._ring, self._seq = reader, notice.ring, 0
        elif notice.generation and reader.layout.generation != notice.generation and reader.refresh():
            self._seq = 0
        return reader

    def on_notice(self, notice: FrameRingNotice) -> bool:
        """Fetch the frame the notice names (or the newest); True when a new frame is held."""
        try:
            reader = self._reader_for(notice)
            frame = reader.read(notice.frame_seq) or reader.latest()
            if frame is None or frame.seq == self._seq:
                return False
            layout = reader.layout
            rgb = to_rgb(frame.pixels, layout.fmt, layout.width, layout.height)
        except (StateError, ValueError) as exc:
            self.errors += 1
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning("%s: no picture: %s", self.what, exc)
            self.close()
            return False
        if self._last_error is not None:
            log.info("%s: picture back", self.what)
            self._last_error = None
        self._seq = frame.seq
        self.latest = rgb
        self.frames += 1
        return True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        self._ring = None
