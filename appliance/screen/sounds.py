"""Sound cues for results and alerts, through pygame.mixer; silent without an audio device.

The tones are synthesised (no sound files to ship or lose): a rising pair for a normal
result, a falling triple for an elevated one, a double beep to try again, a low tone for a
fault. They differ in pitch direction and rhythm, not only in pitch, so they are told apart
by people with poor pitch hearing too.

A kiosk without a speaker, or whose audio device is missing or busy, must still screen: the
mixer is opened once, and any failure is logged once and turns the cues off. screen.sounds
in the config turns them off on purpose, live.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pygame

from appliance.screen.view import SoundCue

log = logging.getLogger(__name__)

RATE = 22050
AMPLITUDE = 0.45
FADE_S = 0.008  # ramps at each end of a tone: no clicks
GAP_S = 0.05

# (frequency Hz, seconds) per tone, in order.
CUES: dict[SoundCue, tuple[tuple[float, float], ...]] = {
    "normal": ((660.0, 0.12), (990.0, 0.2)),
    "elevated": ((988.0, 0.22), (784.0, 0.22), (622.0, 0.34)),
    "retry": ((587.0, 0.12), (587.0, 0.12)),
    "fault": ((330.0, 0.5),),
}


def samples(cue: SoundCue, rate: int = RATE) -> npt.NDArray[np.float32]:
    """The cue as mono samples in [-1, 1]."""
    parts: list[npt.NDArray[np.float32]] = []
    fade = max(1, int(FADE_S * rate))
    for freq, seconds in CUES[cue]:
        n = int(seconds * rate)
        t = np.arange(n, dtype=np.float32) / rate
        tone = np.sin(2.0 * np.pi * freq * t).astype(np.float32) * AMPLITUDE
        ramp = np.minimum(1.0, np.minimum(np.arange(n) + 1, n - np.arange(n)) / fade).astype(np.float32)
        parts.append(tone * ramp)
        parts.append(np.zeros(int(GAP_S * rate), dtype=np.float32))
    return np.concatenate(parts)


def _for_mixer(mono: npt.NDArray[np.float32], size: int, channels: int) -> npt.NDArray[np.generic]:
    """Samples in the mixer's own format: pygame.sndarray needs the exact dtype and channels."""
    data: npt.NDArray[np.generic]
    if size == -16:
        data = (mono * 32767.0).astype(np.int16)
    elif size == 16:
        data = ((mono * 32767.0) + 32768.0).astype(np.uint16)
    elif size == 32:
        data = mono.astype(np.float32)
    elif size == 8:
        data = ((mono * 127.0) + 128.0).astype(np.uint8)
    elif size == -8:
        data = (mono * 127.0).astype(np.int8)
    else:
        raise ValueError(f"unsupported mixer sample size {size}")
    if channels > 1:
        data = np.ascontiguousarray(np.repeat(data[:, None], channels, axis=1))
    return data


class Sounds:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.available: bool | None = None  # None: not tried yet
        self.played: list[SoundCue] = []
        self._sounds: dict[SoundCue, pygame.mixer.Sound] = {}
        if enabled:
            self._open()

    def _open(self) -> bool:
        if self.available is not None:
            return self.available
        try:
            pygame.mixer.init(frequency=RATE, size=-16, channels=1, buffer=512)
            init = pygame.mixer.get_init()
            if init is None:
                raise pygame.error("the mixer did not start")
            freq, size, channels = init
            for cue in CUES:
                self._sounds[cue] = pygame.sndarray.make_sound(_for_mixer(samples(cue, freq), size, channels))
        except (pygame.error, ValueError) as exc:
            log.warning("no sound: cannot open the audio device (%s); screening goes on silently", exc)
            self.available = False
            return False
        self.available = True
        log.info("sound on: mixer at %d Hz", freq)
        return True

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            self._open()

    def play(self, cue: SoundCue) -> bool:
        """Play a cue; False when sounds are off or unavailable (never raises)."""
        if not self.enabled or not self._open():
            return False
        try:
            self._sounds[cue].play()
        except pygame.error as exc:
            log.warning("sound %s failed: %s", cue, exc)
            return False
        self.played.append(cue)
        del self.played[:-32]
        return True

    def close(self) -> None:
        self._sounds.clear()
        if self.available:
            pygame.mixer.quit()
        self.available = None
