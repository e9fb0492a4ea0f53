"""The device authorization grant (RFC 8628) as a pure decision: what a poll gets.

The service keeps each request's state in SQLite (appliance.room.devices); this module only
says, from that state and the time, which answer a poll receives. A code is spent once its
token has been issued: polls after that get invalid_grant, so a device code is single-use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PollAnswer = Literal[
    "authorization_pending", "slow_down", "access_denied", "expired_token", "invalid_grant", "issue"
]
CodeStateName = Literal["pending", "approved", "denied", "issued"]

# RFC 8628 section 3.5: after slow_down the interval grows by 5 seconds, for good.
SLOW_DOWN_STEP_S = 5.0
# A device that sleeps `interval` between polls arrives a little late, never early, but the two
# clocks tick apart by a few milliseconds: allow that much.
POLL_SLACK_S = 0.2


@dataclass(frozen=True)
class CodeState:
    state: CodeStateName
    expires: float
    interval: float
    last_poll: float | None


@dataclass(frozen=True)
class PollDecision:
    answer: PollAnswer
    interval: float  # the interval from now on


def decide_poll(code: CodeState | None, now: float) -> PollDecision:
    if code is None or code.state == "issued":
        return PollDecision("invalid_grant", 0.0)
    if now >= code.expires:
        return PollDecision("expired_token", code.interval)
    if code.state == "denied":
        return PollDecision("access_denied", code.interval)
    if code.state == "approved":
        return PollDecision("issue", code.interval)
    if code.last_poll is not None and now - code.last_poll < code.interval - POLL_SLACK_S:
        return PollDecision("slow_down", code.interval + SLOW_DOWN_STEP_S)
    return PollDecision("authorization_pending", code.interval)
