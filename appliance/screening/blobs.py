"""Foreground, connected blobs and what can be said about each from 64 pixels.

An AMG8833 pixel sees a 7.5 degree square; a face at 0.5 m is about two pixels wide, so almost
every pixel is a mix of face and background. We therefore describe a blob by its *coverage*:
each pixel counts for the fraction of it the warm body fills, estimated as its contrast over
the contrast a fully covered pixel would have. Optical blur moves contrast between neighbours
but keeps its sum, so summed coverage survives the lens better than a pixel count.

Limits (64 pixels cannot tell these apart; the decision layer stays conservative instead):
- A small hot object and a large cool one look alike when both are smaller than one pixel. A
  blob is called an object (cup, lamp, radiator fin) only when it is compact (at most
  ``object_max_px`` pixels at half contrast) *and* reads above ``object_min_c``, hotter than any
  skin reads on this sensor. A cup held against a face merges with it; its heat then pushes
  the estimate past ``max_plausible_c`` and the window is a retry, not a result.
- Two people whose heads touch in the image form one blob; a raised hand beside the face is
  a second blob and reads as "multiple".
- A face colder than ``skin_ref_c`` that fills no pixel is taken as partly covering a pixel
  instead, so it reads nearer than it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from appliance.screening import grid
from appliance.screening.records import Pixels
from appliance.screening.settings import ScreeningSettings

BlobKind = Literal["person", "object"]
Mask = npt.NDArray[np.bool_]

_INDEX = np.arange(8, dtype=np.float64)
# Coverage at which a pixel counts as fully covered by the face (noise keeps it below 1.0).
_CORE = 0.9
# The common-mode offset (the whole array drifting with its own temperature) is only
# trusted when enough of the frame is background to take a median of.
_MIN_QUIET_PIXELS = 16
# A face filling most of the image would otherwise be taken for drift and subtracted away.
_MAX_COMMON_MODE_C = 3.0
# Coverage at which a separate core counts as a second face inside one blob.
_SECOND_CORE = 0.75


@dataclass(frozen=True, slots=True)
class Blob:
    kind: BlobKind
    area_px: int  # pixels in the connected foreground component
    coverage_px: float  # sub-pixel coverage of the whole component
    head_px: int  # pixels in the head region (at least head_fraction of peak contrast)
    width_px: float  # sub-pixel width of the face across its hottest rows
    clipped: bool  # the face runs off the left or right edge: width is a lower bound
    centroid: tuple[float, float]  # (row, col) of the head, coverage-weighted
    bbox: tuple[int, int, int, int]  # row0, col0, row1, col1 of the component (ends exclusive)
    peak_c: float
    peak_at: tuple[int, int]
    hot_c: tuple[float, ...]  # the hottest pixel values of the head, descending
    # The head and its rim (where its hottest pixels are looked for), and the frame's contrast
    # over the background with the drift removed (shared by the scene's blobs): the sensor's
    # absolute offset and its fixed pattern cancel in it.
    region: Mask
    contrast: Pixels
    noise_c: float  # background noise on the head pixels
    contrast_c: float  # contrast a fully covered pixel has (the coverage denominator)
    faces: int = 1  # separate warm cores side by side: people whose shoulders touch


@dataclass(frozen=True, slots=True)
class Scene:
    foreground: Mask
    offset_c: float  # common-mode drift removed before thresholding
    people: tuple[Blob, ...]  # significant person blobs, largest first
    objects: tuple[Blob, ...]
    object_mask: Mask  # the pixels of the objects' components

    @property
    def person(self) -> Blob | None:
        return self.people[0] if self.people else None

    @property
    def multiple(self) -> bool:
        return len(self.people) > 1 or any(p.faces > 1 for p in self.people)

    @property
    def empty(self) -> bool:
        return not self.people


def find_blobs(
    pixels: Pixels,
    background: Pixels,
    noise: Pixels,
    settings: ScreeningSettings,
    *,
    room_c: float | None = None,
    avoid: Mask | None = None,
) -> Scene:
    """Segment one frame against a background (mean and per-pixel noise sd).

    With ``room_c`` (the room temperature from the thermistor), pixels hotter than any skin can
    read are split off as objects together with the pixels around them, which mix object and
    whatever is beside it: a cup under a chin then neither hides the face nor sets its
    temperature. "Hotter than skin" is judged the estimator's way, free of the sensor's
    offset: the pixel's contrast read as a fully covered face (room + model_hot * contrast)
    would be a body above ``object_equivalent_c``. Partial cover only lowers a reading, so this
    catches a cup that fills a third of a pixel as well as one that fills it.
    ``avoid`` marks pixels no person may be measured on (where a cup stood before anyone came:
    a person in front of it hides it partly, and the pixel mixes cup and face).
    """
    px = np.asarray(pixels, dtype=np.float64)
    residual = px - background
    threshold = np.maximum(settings.contrast_c, settings.noise_k * noise)
    # Quiet pixels sit near the frame's lower quartile: the scene is mostly background even
    # with a person in it, and a whole-array jump (after a sensor reset) moves all of them.
    quiet = residual < _quantile(np.sort(residual, axis=None), 0.25) + threshold
    offset = 0.0
    if int(quiet.sum()) >= _MIN_QUIET_PIXELS:
        offset = min(max(_median(residual[quiet]), -_MAX_COMMON_MODE_C), _MAX_COMMON_MODE_C)
        residual = residual - offset
    foreground = residual > threshold
    if not foreground.any():  # the usual frame: nobody there, nothing to label
        return Scene(foreground, offset, (), (), np.zeros(px.shape, dtype=bool))
    found: list[int] = []
    candidates = grid.to_bits(foreground)
    if room_c is not None:
        hot = foreground & (room_c + settings.model_hot * residual >= settings.object_equivalent_c)
        if hot.any():
            near_hot = candidates & grid.dilate8(grid.to_bits(hot))
            found += grid.components(near_hot)
            candidates &= ~near_hot
    if avoid is not None:
        candidates &= ~grid.to_bits(avoid)
    found += grid.components(candidates)

    people: list[Blob] = []
    objects: list[Blob] = []
    object_mask = np.zeros(px.shape, dtype=bool)
    for bits in found:
        component = grid.to_mask(bits)
        blob = _describe(px, residual, component, bits, noise, background, settings)
        if blob.coverage_px < settings.min_blob_px:
            continue
        is_hot = room_c is not None and bool(
            (room_c + settings.model_hot * residual[component]).max() >= settings.object_equivalent_c
        )
        if blob.kind == "object" or is_hot:
            objects.append(blob)
            object_mask |= component
        else:
            people.append(blob)
    people.sort(key=lambda b: b.coverage_px, reverse=True)
    if people:
        floor = settings.multiple_min_ratio * people[0].coverage_px
        people = [b for b in people if b.coverage_px >= floor]
    objects.sort(key=lambda b: b.coverage_px, reverse=True)
    return Scene(foreground, offset, tuple(people), tuple(objects), object_mask)


def _quantile(ordered: Pixels, q: float) -> float:
    """np.percentile's linear rule on sorted values, without its per-call overhead."""
    pos = q * (ordered.size - 1)
    lo = int(pos)
    hi = min(lo + 1, ordered.size - 1)
    return float(ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]))


def _median(values: Pixels) -> float:
    return _quantile(np.sort(values, axis=None), 0.5)


def _describe(
    px: Pixels,
    residual: Pixels,
    component: Mask,
    bits: int,
    noise: Pixels,
    background: Pixels,
    settings: ScreeningSettings,
) -> Blob:
    masked = np.where(component, residual, -np.inf)
    flat = int(np.argmax(masked))
    pr, pc = divmod(flat, px.shape[1])
    peak_contrast = float(residual[pr, pc])

    # Head: the part of the blob near peak contrast, connected to the peak. Clothing and
    # hair read cooler than skin, so this usually stops at the collar.
    near_peak = grid.to_bits(component & (residual >= settings.head_fraction * peak_contrast))
    head_bits = grid.component_of(near_peak, (pr, pc), eight=False)
    head = grid.to_mask(head_bits)

    head_residuals = np.sort(residual[head])
    full = float(head_residuals[-2:].sum()) / min(2, head_residuals.size)
    # A face too small to fill a pixel never shows its full contrast; assume at least the
    # coolest plausible skin so its pixels count as partly covered, not as a cool full face.
    full = max(full, settings.skin_ref_c - float(background[pr, pc]), 1e-6)
    cover = np.clip(residual / full, 0.0, 1.0)

    # Centroid weights fall off steeply with coverage, so the face dominates the clothing
    # below it, and smoothly, so a pixel flickering across a threshold does not jump it.
    weights = np.where(grid.to_mask(grid.dilate8(bits)), cover, 0.0)
    weights *= weights
    weights *= weights
    by_row, by_col = weights.sum(axis=1), weights.sum(axis=0)
    total = float(by_row.sum())
    centroid = (float(by_row @ _INDEX) / total, float(by_col @ _INDEX) / total)

    hot_region = grid.to_mask(grid.dilate8(head_bits) & bits)
    hot = tuple(float(v) for v in np.sort(px[hot_region])[::-1][: settings.hot_pixels])

    width, touches = _width(component, head, cover, pr)
    head_px = grid.count(head_bits)
    peak_c = float(px[pr, pc])
    kind: BlobKind = (
        "object" if peak_c >= settings.object_min_c and head_px <= settings.object_max_px else "person"
    )
    return Blob(
        kind=kind,
        area_px=grid.count(bits),
        coverage_px=float(cover[component].sum()),
        head_px=head_px,
        width_px=width,
        clipped=touches,
        centroid=centroid,
        bbox=_bbox(bits),
        peak_c=peak_c,
        peak_at=(pr, pc),
        hot_c=hot,
        region=hot_region,
        contrast=residual,
        noise_c=_median(noise[head]),
        contrast_c=full,
        faces=_faces(bits, cover, settings),
    )


def _bbox(bits: int) -> tuple[int, int, int, int]:
    rows = [r for r, byte in enumerate(bits.to_bytes(8, "little")) if byte]
    cols = 0
    for r in rows:
        cols |= (bits >> (8 * r)) & 0xFF
    return rows[0], (cols & -cols).bit_length() - 1, rows[-1] + 1, cols.bit_length()


def _faces(bits: int, cover: Pixels, settings: ScreeningSettings) -> int:
    """Faces in one blob: two people side by side merge at the shoulders, but their faces
    stay separate warm cores in columns of their own. Cores stacked in the same columns
    (forehead above glasses, cheeks below) are one face."""
    cores = [
        grid.to_mask(c) for c in grid.components(bits & grid.to_bits(cover >= _SECOND_CORE), eight=False)
    ]
    if len(cores) < 2:
        return 1
    sizes = [float(cover[core].sum()) for core in cores]
    big = [
        core
        for core, size in zip(cores, sizes, strict=True)
        if size >= settings.multiple_min_ratio * max(sizes)
    ]
    spans = sorted((int(c.min()), int(c.max())) for c in (np.nonzero(core.any(axis=0))[0] for core in big))
    faces, right = 1, spans[0][1]
    for lo, hi in spans[1:]:
        if lo > right:
            faces += 1
        right = max(right, hi)
    return faces


def _width(component: Mask, head: Mask, cover: Pixels, pr: int) -> tuple[float, bool]:
    """Face width in pixels, sub-pixel: coverage summed across the widest row of the face.

    Only rows with fully covered pixels (the core, coverage >= 0.9) are used, and in each
    only the run of core pixels plus one pixel each side (the partly covered face edges). A
    row through the neck and the shoulders has a narrow core (the neck) with clothing beside
    it, so it cannot win; clothing never reaches the core because it reads cooler than skin.
    A face too small to fully cover any pixel falls back to the peak row's run.
    """
    ncols = component.shape[1]
    core = head & (cover >= _CORE)
    best, touches = 0.0, False
    for r in np.nonzero(core.any(axis=1))[0] if core.any() else [pr]:
        row = core[r] if core.any() else component[r]
        c = 0
        while c < ncols:
            if not row[c]:
                c += 1
                continue
            lo = c
            while c < ncols and row[c]:
                c += 1
            hi = c - 1
            width = float(cover[r, max(lo - 1, 0) : min(hi + 2, ncols)].sum())
            if width > best:
                best, touches = width, lo == 0 or hi == ncols - 1
    return best, touches
