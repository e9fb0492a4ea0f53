"""The camera daemon: H.264 for remote viewers, small raw frames for the local screen.

Backends (camera.backend): `picamera2` (a Pi camera, hardware H.264 on a Pi 4, picamera2's
libx264 fallback on a Pi 5), `v4l2` (a USB webcam through PyAV, libx264) and `sim` (the
demo scenario, rendered and stamped for latency measurement). See daemon.py for the topics.

The preview ring `camera-preview` lives in the run directory (`ring_path(PREVIEW_RING,
config.paths.run_dir)`) and holds preview_width x preview_height frames in PREVIEW_FORMAT:
"RGB888" in picamera2's (and DRM's) naming, which is the bytes B, G, R in memory, OpenCV's
order and pygame's "BGR". It is the format a Pi 5's ISP writes directly; the sim and v4l2
backends write the same, so a reader needs only one conversion.
"""

from __future__ import annotations

PREVIEW_RING = "camera-preview"
PREVIEW_FORMAT = "RGB888"
