"""Frame ring pixels to RGB, whatever format the writer chose (numpy only, no pygame).

The camera writes its preview ring in PREVIEW_FORMAT, "RGB888" in picamera2's naming, which
is the bytes B, G, R in memory (see appliance/camera/__init__.py). The remote-video ring's
writer may pick another format; the ring's header names it, so both go through `to_rgb`.
The setup page's camera snapshot uses the same conversion.

4:2:0 formats are converted with the BT.601 full-range (JFIF / sYCC) matrix: libcamera's
default colour space for preview and still streams.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Pixels = npt.NDArray[np.uint8]


def _yuv420_to_rgb(y: npt.NDArray[np.uint8], u: npt.NDArray[np.uint8], v: npt.NDArray[np.uint8]) -> Pixels:
    yf = y.astype(np.float32)
    # Chroma is at half resolution both ways: repeat it to the luma grid.
    uf = np.repeat(np.repeat(u.astype(np.float32) - 128.0, 2, axis=0), 2, axis=1)
    vf = np.repeat(np.repeat(v.astype(np.float32) - 128.0, 2, axis=0), 2, axis=1)
    rgb = np.empty((*y.shape, 3), dtype=np.float32)
    rgb[..., 0] = yf + 1.402 * vf
    rgb[..., 1] = yf - 0.344136 * uf - 0.714136 * vf
    rgb[..., 2] = yf + 1.772 * uf
    out: Pixels = np.clip(rgb, 0.0, 255.0).round().astype(np.uint8)
    return out


def to_rgb(pixels: npt.NDArray[np.uint8], fmt: str, width: int, height: int) -> Pixels:
    """A (height, width, 3) C-contiguous RGB copy of one frame; ValueError for an unknown format
    or a frame whose size does not match."""
    if fmt in ("RGB888", "BGR888", "XRGB8888", "XBGR8888"):
        channels = 4 if fmt.startswith("X") else 3
        frame = pixels.reshape(height, width, channels)
        # picamera2 / DRM names: "RGB888" and "XRGB8888" hold B, G, R (, X) in memory.
        order = [2, 1, 0] if fmt in ("RGB888", "XRGB8888") else [0, 1, 2]
        return np.ascontiguousarray(frame[..., order])
    if fmt == "GRAY8":
        grey = pixels.reshape(height, width)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if fmt in ("I420", "YUV420", "NV12"):
        if width % 2 or height % 2:
            raise ValueError(f"{fmt} needs an even size, got {width}x{height}")
        plane = pixels.reshape(height * 3 // 2, width)
        y = plane[:height]
        if fmt == "NV12":
            uv = plane[height:].reshape(height // 2, width // 2, 2)
            return _yuv420_to_rgb(y, uv[..., 0], uv[..., 1])
        chroma = plane[height:].reshape(-1)
        quarter = (width // 2) * (height // 2)
        u = chroma[:quarter].reshape(height // 2, width // 2)
        v = chroma[quarter : 2 * quarter].reshape(height // 2, width // 2)
        return _yuv420_to_rgb(y, u, v)
    raise ValueError(f"cannot show pixel format {fmt!r}")
