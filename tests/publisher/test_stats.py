"""viewer_stats: aiortc's getStats report to the figures on call.state."""

from __future__ import annotations

import datetime

from aiortc.stats import RTCOutboundRtpStreamStats, RTCRemoteInboundRtpStreamStats, RTCTransportStats

from appliance.publisher.stats import Sample, viewer_stats

NOW = datetime.datetime.now(datetime.UTC)


def report(
    bytes_sent: int, *, rtt: float | None = 0.012, jitter: int = 450, fraction: int = 64
) -> dict[str, object]:
    return {
        "t": RTCTransportStats(
            timestamp=NOW,
            type="transport",
            id="t",
            packetsSent=1,
            packetsReceived=1,
            bytesSent=bytes_sent,
            bytesReceived=0,
            iceRole="controlling",
            dtlsState="connected",
        ),
        "o": RTCOutboundRtpStreamStats(
            timestamp=NOW,
            type="outbound-rtp",
            id="o",
            ssrc=1,
            kind="video",
            transportId="t",
            packetsSent=10,
            bytesSent=999,
            trackId="x",
        ),
        "r": RTCRemoteInboundRtpStreamStats(
            timestamp=NOW,
            type="remote-inbound-rtp",
            id="r",
            ssrc=1,
            kind="video",
            transportId="t",
            packetsReceived=100,
            packetsLost=3,
            jitter=jitter,
            roundTripTime=rtt,
            fractionLost=fraction,
        ),
    }


def test_the_figures_and_their_units() -> None:
    first, sample = viewer_stats("v1", report(100_000), 10.0, None)
    assert first.bitrate_kbps is None  # a rate needs two samples
    assert (first.rtt_ms, first.jitter_ms, first.loss) == (12.0, 5.0, 0.25)
    second, _ = viewer_stats("v1", report(287_500), 11.5, sample)
    assert second.bitrate_kbps == 1000.0  # 187.5 kB in 1.5 s
    assert second.viewer_id == "v1"


def test_no_round_trip_before_the_first_receiver_report_answered() -> None:
    stats, _ = viewer_stats("v1", report(0, rtt=None), 1.0, Sample(0.5, 0))
    assert stats.rtt_ms is None and stats.bitrate_kbps == 0.0


def test_an_empty_report_gives_nothing_rather_than_zeros() -> None:
    stats, sample = viewer_stats("v1", {}, 1.0, None)
    assert (stats.rtt_ms, stats.jitter_ms, stats.loss, stats.bitrate_kbps) == (None, None, None, None)
    assert sample == Sample(1.0, 0)
