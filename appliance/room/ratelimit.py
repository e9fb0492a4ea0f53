"""Rate limits: token buckets, one per key (a client address, an account) or one overall.

Pure: the caller passes the time. Memory is bounded: past max_keys the least recently used
keys are forgotten, which can only make a limit more lenient for a key nobody used lately.

Client addresses are counted by appliance.clientkey.client_key(): an IPv6 client by its /64,
since one customer network gets a whole /64 and could otherwise take a fresh address for every
attempt.
A clock that steps back refills nothing and takes nothing: callers pass the wall clock, and
NTP stepping it back must not drain the buckets (refusing a client for as long as the step).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from appliance.clientkey import client_key


@dataclass
class Bucket:
    capacity: float
    refill_per_s: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns 0.0 on success, else the seconds until it would succeed."""
        self.tokens = self._level(now)
        self.updated = now  # after a step back, refill goes on from the new time
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.refill_per_s if self.refill_per_s > 0 else float("inf")

    def _level(self, now: float) -> float:
        # A clock that went back refills nothing, and takes nothing away either.
        elapsed = max(0.0, now - self.updated)
        return min(self.capacity, self.tokens + elapsed * self.refill_per_s)

    def peek(self, now: float) -> float:
        """Seconds until one token is available, without taking it."""
        tokens = self._level(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.refill_per_s


class RateLimiter:
    """`count` events per `per_s` seconds per key, in bursts of up to `count`."""

    def __init__(self, count: int, per_s: float, *, max_keys: int = 10_000) -> None:
        self.capacity = float(count)
        self.refill = count / per_s
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def _bucket(self, key: str, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(self.capacity, self.refill, self.capacity, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def hit(self, key: str, now: float) -> float:
        """Count one event; 0.0 if allowed, else seconds to wait (the event is not counted)."""
        return self._bucket(key, now).take(now)

    def refund(self, key: str) -> None:
        """Give back one event counted by hit() (charged before an await, then not needed)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(bucket.capacity, bucket.tokens + 1.0)

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds until `key` may have an event, without counting one."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.peek(now)


def per_minute(count: int) -> RateLimiter:
    return RateLimiter(count, 60.0)


class AddressAndOverall:
    """A limit per client address and one for everybody; an event must pass both."""

    def __init__(self, per_address_per_min: int, overall_per_min: int) -> None:
        self.per_address = per_minute(per_address_per_min)
        self.overall = per_minute(overall_per_min)

    def hit(self, address: str, now: float, *, overall: bool = True) -> float:
        """Count one event; overall=False counts it against the address's limit only."""
        wait = self.per_address.hit(client_key(address), now)
        if wait or not overall:
            return wait
        # The overall bucket is charged only for events the address limit let through, so
        # one noisy address cannot use up everybody's allowance on its own.
        return self.overall.hit("*", now)
