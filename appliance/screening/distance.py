"""Distance from the face's angular width, with an honest uncertainty.

A face of width W at distance d spans W / (d * pitch) pixels, where pitch = 2*tan(fov/2)/8 is
the width one pixel covers per metre (0.144 m/m for 60 degrees). Inverting gives d. The error
has two parts: faces differ in width (``face_size_rel_sd``, about 15 % between adults, and it
does not shrink with averaging), and the measured width is off by a fraction of a pixel
(noise on the edge pixels, blur leaking contrast into the rows above and below, the
skin-temperature assumption for faces narrower than a pixel).

Limits: children and people wearing hats or hoods have other widths, so their distance is
off by their width ratio; off-axis pixels of a real lens span slightly different angles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from appliance.screening.settings import ScreeningSettings

# Width error that does not come from noise: blur, the coverage model, the pixel grid.
WIDTH_MODEL_SD_PX = 0.25
_MIN_WIDTH_PX = 0.05


@dataclass(frozen=True, slots=True)
class Distance:
    metres: float
    sd_m: float  # one standard uncertainty
    clipped: bool = False  # the face runs off the image: metres is an upper bound

    @property
    def relative_sd(self) -> float:
        return self.sd_m / self.metres


def estimate_distance(
    width_px: float,
    settings: ScreeningSettings,
    *,
    noise_c: float = 0.0,
    contrast_c: float = 1.0,
    clipped: bool = False,
) -> Distance:
    """Distance of a face ``width_px`` pixels wide (sub-pixel, as ``Blob.width_px``).

    ``noise_c`` and ``contrast_c`` (pixel noise and full-pixel contrast) size the part of the
    width error that comes from noise on the few pixels summed across the face.
    """
    width = max(width_px, _MIN_WIDTH_PX)
    metres = settings.face_width_m / (width * settings.pixel_pitch)
    # About width+2 pixels are summed, each with noise/contrast of coverage error.
    noise_px = math.sqrt(width + 2.0) * noise_c / max(contrast_c, 1e-6)
    width_sd = math.hypot(WIDTH_MODEL_SD_PX, noise_px)
    relative = math.hypot(settings.face_size_rel_sd, width_sd / width)
    return Distance(metres, metres * relative, clipped)
