"""KeyframeRequests: many viewers asking at once cost the camera one IDR, and none is forgotten."""

from __future__ import annotations

from appliance.publisher.keyframes import KeyframeRequests


def test_the_first_request_goes_out_at_once() -> None:
    k = KeyframeRequests(min_interval=0.5)
    assert k.want(10.0)
    assert k.sent == 1 and k.in_flight


def test_requests_while_one_is_in_flight_are_absorbed() -> None:
    k = KeyframeRequests(min_interval=0.5, answer_timeout=1.0)
    assert k.want(10.0)
    # A PLI storm from four viewers within the next few hundred ms: one IDR serves them all.
    assert not any(k.want(10.0 + i * 0.05) for i in range(1, 12))
    assert k.sent == 1 and k.absorbed == 11
    k.keyframe_seen()
    assert not k.in_flight and k.next_deadline() is None


def test_a_request_inside_the_interval_is_deferred_not_dropped() -> None:
    k = KeyframeRequests(min_interval=0.5)
    assert k.want(10.0)
    k.keyframe_seen()  # the IDR came quickly
    assert not k.want(10.2)  # a new viewer needs one, but the interval has not passed
    assert k.pending and k.next_deadline() == 10.5
    assert not k.due(10.4)
    assert k.due(10.5)
    assert k.sent == 2 and not k.pending


def test_an_idr_from_the_camera_serves_a_deferred_request() -> None:
    k = KeyframeRequests(min_interval=0.5)
    k.want(10.0)
    k.keyframe_seen()
    k.want(10.1)
    k.keyframe_seen()  # the camera's own periodic IDR passed first
    assert k.next_deadline() is None
    assert not k.due(11.0)
    assert k.sent == 1


def test_an_unanswered_request_is_repeated_while_someone_waits() -> None:
    k = KeyframeRequests(min_interval=0.5, answer_timeout=1.0)
    k.want(10.0)
    assert k.next_deadline() == 11.0
    assert not k.due(10.9)
    assert k.due(11.0, waiting=True)
    assert k.sent == 2
    # Nobody waits any more (the viewer left): the request lapses instead of repeating.
    assert not k.due(12.1, waiting=False)
    assert not k.in_flight and k.next_deadline() is None
    assert k.want(12.2)  # and a later need is sent at once
