"""A viewer's connection quality from aiortc's getStats: round trip, jitter, loss, bitrate. Pure.

aiortc fills `remote-inbound-rtp` from the viewer's RTCP receiver reports on our video: the
round trip in seconds (None until a report answers one of our sender reports), the jitter in
RTP timestamp units (90 kHz for video), and the fraction lost since the previous report as
an 8-bit fixed-point number. The bitrate is what left on the viewer's transport(s) between
two samples, media and data alike: the uplink this viewer costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiortc.stats import RTCRemoteInboundRtpStreamStats, RTCTransportStats

from appliance.bus.topics import ViewerStats

VIDEO_CLOCK_HZ = 90_000


@dataclass(frozen=True)
class Sample:
    t: float
    bytes_sent: int


def viewer_stats(
    viewer_id: str, report: Mapping[str, object], now: float, prev: Sample | None
) -> tuple[ViewerStats, Sample]:
    rtt_ms = jitter_ms = loss = None
    bytes_sent = 0
    for stats in report.values():
        if isinstance(stats, RTCRemoteInboundRtpStreamStats) and stats.kind == "video":
            if stats.roundTripTime is not None:
                rtt_ms = round(stats.roundTripTime * 1000.0, 1)
            jitter_ms = round(stats.jitter * 1000.0 / VIDEO_CLOCK_HZ, 1)
            loss = round(min(1.0, stats.fractionLost / 256.0), 4)
        elif isinstance(stats, RTCTransportStats):
            bytes_sent += stats.bytesSent
    sample = Sample(now, bytes_sent)
    bitrate = None
    if prev is not None and now > prev.t and bytes_sent >= prev.bytes_sent:
        bitrate = round((bytes_sent - prev.bytes_sent) * 8 / (now - prev.t) / 1000.0, 1)
    return ViewerStats(
        viewer_id=viewer_id, rtt_ms=rtt_ms, jitter_ms=jitter_ms, loss=loss, bitrate_kbps=bitrate
    ), sample
