"""Rotation and mirroring of pictures, as camera.rotation, camera.hflip and camera.vflip ask.

Meaning (what a technician setting the config sees): the picture is first turned clockwise by
`rotation` degrees, then the turned picture is mirrored left-right (hflip) and top-bottom
(vflip). camera.width and camera.height are the size of the picture viewers get, after
turning: with rotation 90 or 270 the camera captures height x width and the turn makes it
width x height.

A Pi camera's ISP can mirror but not transpose, so `sensor_flips` says whether a setting
can be done for free in hardware (0 and 180 degrees, any flips) or needs `apply` in software.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Rotation = Literal[0, 90, 180, 270]


@dataclass(frozen=True)
class Orientation:
    rotation: Rotation = 0
    hflip: bool = False
    vflip: bool = False

    @property
    def identity(self) -> bool:
        return self.rotation == 0 and not self.hflip and not self.vflip

    @property
    def transposes(self) -> bool:
        return self.rotation in (90, 270)

    def capture_size(self, width: int, height: int) -> tuple[int, int]:
        """The size to capture so that the output is width x height."""
        return (height, width) if self.transposes else (width, height)


def sensor_flips(orient: Orientation) -> tuple[bool, bool] | None:
    """(hflip, vflip) that do the whole job in the camera, or None when a 90° turn is needed.

    A 180° turn is a mirror in both axes, and mirrors commute, so they fold into each other.
    """
    if orient.transposes:
        return None
    half_turn = orient.rotation == 180
    return orient.hflip != half_turn, orient.vflip != half_turn


def apply(image: npt.NDArray[np.uint8], orient: Orientation) -> npt.NDArray[np.uint8]:
    """Turn and mirror an (H, W) or (H, W, C) image; a C-contiguous result (the input if nothing to do)."""
    if orient.identity:
        return image
    out = image
    if orient.rotation:
        out = np.rot90(out, k=-(orient.rotation // 90), axes=(0, 1))  # negative k: clockwise
    if orient.hflip:
        out = out[:, ::-1]
    if orient.vflip:
        out = out[::-1]
    return np.ascontiguousarray(out)


def apply_i420(frame: npt.NDArray[np.uint8], orient: Orientation) -> npt.NDArray[np.uint8]:
    """The same for a planar 4:2:0 frame shaped (H * 3/2, W): Y, then U, then V, each turned alone."""
    if orient.identity:
        return frame
    rows, width = frame.shape
    height = rows * 2 // 3
    if height * 3 // 2 != rows or width % 2 or height % 2:
        raise ValueError(f"not an I420 frame of even size: shape {frame.shape}")
    y = frame[:height]
    chroma = frame[height:].reshape(2, height // 2, width // 2)
    y_out = apply(y, orient)
    u_out = apply(chroma[0], orient)
    v_out = apply(chroma[1], orient)
    out_h, out_w = y_out.shape
    return np.concatenate([y_out.reshape(-1), u_out.reshape(-1), v_out.reshape(-1)]).reshape(
        out_h * 3 // 2, out_w
    )


def resize_nearest(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour scaling of an (H, W[, C]) image: enough for a small preview, and cheap."""
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return image
    rows = (np.arange(height) * src_h // height).astype(np.intp)
    cols = (np.arange(width) * src_w // width).astype(np.intp)
    return np.ascontiguousarray(image[rows[:, None], cols[None, :]])


def i420_to_bgr(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A planar 4:2:0 frame (BT.601, limited range, as libcamera's YUV420) to B, G, R bytes.

    For the Pi 4's lores stream, which can only be YUV420; small frames only (numpy, float32).
    """
    rows, width = frame.shape
    height = rows * 2 // 3
    y = frame[:height].astype(np.float32) - 16.0
    chroma = frame[height:].reshape(2, height // 2, width // 2).astype(np.float32) - 128.0
    u = chroma[0].repeat(2, axis=0).repeat(2, axis=1)
    v = chroma[1].repeat(2, axis=0).repeat(2, axis=1)
    y *= 1.164
    out = np.empty((height, width, 3), dtype=np.float32)
    out[..., 0] = y + 2.018 * u
    out[..., 1] = y - 0.391 * u - 0.813 * v
    out[..., 2] = y + 1.596 * v
    return np.clip(out, 0, 255).astype(np.uint8)


def i420_unstride(frame: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """A libcamera YUV420 buffer as picamera2 maps it, (H * 3/2, stride), to a packed (H * 3/2, W) frame.

    Each plane keeps its padding: Y has H rows of `stride` bytes, U and V H/2 rows of stride/2.
    """
    stride = frame.shape[1]
    if stride == width:
        return frame
    flat = frame.reshape(-1)
    y_size = height * stride
    c_size = (height // 2) * (stride // 2)
    y = flat[:y_size].reshape(height, stride)[:, :width]
    u = flat[y_size : y_size + c_size].reshape(height // 2, stride // 2)[:, : width // 2]
    v = flat[y_size + c_size : y_size + 2 * c_size].reshape(height // 2, stride // 2)[:, : width // 2]
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(height * 3 // 2, width)
