"""The network bench's figures from recorded runs (appliance.bench.netfigures)."""

from __future__ import annotations

from typing import Any

from appliance.bench.netfigures import (
    Marks,
    alert_figures,
    duplicated_events,
    figures,
    frames_between,
    reconnect_figures,
    steady_resume,
)


def frames(*counts: tuple[float, int]) -> list[dict[str, Any]]:
    return [{"t": t, "wall": 1000.0 + t, "kind": "frames", "n": n} for t, n in counts]


def test_frame_rate_and_the_longest_stall() -> None:
    recs = frames((0.0, 0), (1.0, 30), (2.0, 30), (3.0, 30), (4.0, 60), (5.0, 90), (9.0, 200))
    fps, stall = frames_between(recs, 0.0, 5.0)
    assert fps == 18.0 and stall == 2.0  # 90 frames in 5 s; none from 1.0 until 3.0 (seen at 4.0)
    assert frames_between(recs, 0.0, 0.5) == (None, 0.0)  # one sample: no rate


def test_the_video_is_back_when_it_runs_without_a_stall() -> None:
    def resumed(t: float, gap: float) -> dict[str, Any]:
        return {"t": t, "wall": t, "kind": "video-resumed", "gap_s": gap}

    # Frames from 10.0 to 10.5 (the old call), none until 12.0, then steady to the end.
    recs = [resumed(10.0, 30.0), resumed(12.0, 1.5)]
    assert steady_resume(recs, after=9.0, end=20.0) == 12.0
    assert steady_resume(recs, after=9.0, end=14.0) is None  # not yet 3 s of it
    # A stall before the heal is not a resume after it.
    assert steady_resume([resumed(5.0, 2.0)], after=9.0, end=20.0) is None
    # Frames from 10.0 on with no stall at all: back at 10.0.
    assert steady_resume([resumed(10.0, 30.0)], after=9.0, end=20.0) == 10.0


def test_alerts_missing_twice_out_of_order_and_replayed() -> None:
    raised = [(3, 100.0), (4, 110.0), (5, 120.0), (6, 130.0)]
    arrivals = [
        (1, 90.0, True),  # not one of these: ignored
        (3, 101.0, True),
        (5, 140.0, False),
        (4, 141.0, False),  # after 5: out of order
        (5, 142.0, False),  # twice
    ]
    got = alert_figures(raised, arrivals)
    assert got["raised"] == 4 and got["delivered"] == 3
    assert got["missing"] == [6]
    assert got["duplicated"] == [5]
    assert got["out_of_order"] == 1
    assert got["replayed"] == 2
    assert got["delay_max_s"] == 31.0  # seq 4: raised at 110, first seen at 141


def test_all_alerts_once_in_order() -> None:
    got = alert_figures([(7, 0.0), (8, 1.0)], [(7, 0.5, True), (8, 1.2, False)])
    assert (got["missing"], got["duplicated"], got["out_of_order"]) == ([], [], 0)


def test_an_elevated_result_and_its_alert_share_a_seq_and_are_no_duplicate() -> None:
    events = [
        {"kind": "event", "seq": 3, "topic": "screening.result"},
        {"kind": "event", "seq": 3, "topic": "alert.fever"},
        {"kind": "event", "seq": 4, "topic": "alert.fever"},
        {"kind": "event", "seq": 4, "topic": "alert.fever"},
    ]
    assert duplicated_events(events) == [[4, "alert.fever"]]


def test_reconnect_is_timed_from_the_heal_and_needs_a_loss() -> None:
    changes = [(0.0, True), (58.0, False), (80.5, True)]
    assert reconnect_figures(changes, cut=48.0, heal=78.0) == {"lost_s": 10.0, "reconnect_s": 2.5}
    # The publisher never noticed the cut (its connection survived): nothing to time.
    assert reconnect_figures([(0.0, True)], cut=48.0, heal=78.0) == {"lost_s": None, "reconnect_s": None}


def test_figures_of_a_whole_run() -> None:
    mono = {"baseline": 0.0, "impaired": 10.0, "settle": 40.0, "partition": 48.0, "heal": 78.0}
    mono |= {"recovered": 80.0, "end": 85.0}
    wall = {k: 1000.0 + v for k, v in mono.items()}
    recs: list[dict[str, Any]] = frames(*((float(t), 30 * t) for t in range(0, 49)))
    recs += frames(*((float(t), 30 * 48 + 30 * (t - 78)) for t in range(78, 86)))
    recs.append({"t": 78.6, "wall": 1078.6, "kind": "offer"})
    # The old call shows a few frames, then stalls until the new call's video (at 79.9).
    recs.append({"t": 78.1, "wall": 1078.1, "kind": "video-resumed", "gap_s": 30.1})
    recs.append({"t": 79.9, "wall": 1079.9, "kind": "video-resumed", "gap_s": 1.6})
    for seq, at, live in ((1, 1020.5, True), (2, 1079.0, False), (3, 1079.1, False)):
        recs.append(
            {"t": at - 1000, "wall": at, "kind": "event", "seq": seq, "topic": "alert.fever", "live": live}
        )
    alerts = [(1, 1020.0), (2, 1050.0), (3, 1070.0)]
    got = figures(Marks(mono, wall), recs, [(0.0, True), (58.0, False), (79.5, True)], alerts)
    assert got["impaired_video_fps"] == 30.0 and got["impaired_alerts_missing"] == 0
    assert got["partition_alerts_raised"] == 2 and got["partition_alerts_missing"] == 0
    assert got["partition_alerts_replayed"] == 2 and got["partition_alerts_in_order"]
    assert got["partition_reconnect_s"] == 1.5 and got["partition_link_lost_s"] == 10.0
    assert got["partition_viewer_offer_s"] == 0.6
    assert got["partition_video_first_frame_s"] == 0.1 and got["partition_video_resumed_s"] == 1.9
    assert got["video_stalls_after_heal_s"] == [30.1, 1.6]
    assert got["recovered_video_fps"] == 30.0
    assert got["events_duplicated"] == [] and got["viewer_events_out_of_order"] == 0
    assert set(got["targets"]) >= {"partition_reconnect_s", "partition_alerts_missing"}
