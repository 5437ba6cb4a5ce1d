"""Rate limits and counters with bounded memory: token buckets, per-source tables, a fail2ban tracker.

All take ``now`` from the caller. The per-source tables are LRU maps capped at a maximum size,
and :meth:`sweep` forgets entries that carry no information any more (a full bucket, an old
failure, a lapsed block), so no source IP is held longer than its limit needs it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class RateBucket(Protocol):
    """What an allocation's bandwidth cap offers: :class:`TokenBucket`, or the same in C
    (``turn_relay._fastpath.TokenBucket``) when the node's fast path shares the tokens."""

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are that many; False (taking none) otherwise."""
        ...


BucketFactory = Callable[[float, float, float], RateBucket]
"""``(rate, burst, now) -> bucket``: how allocations get their bandwidth cap."""


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> float:
        elapsed = now - self.stamp
        if elapsed > 0:  # a clock that steps back refills nothing
            self.stamp = now
            tokens = self.tokens + elapsed * self.rate
            self.tokens = tokens if tokens < self.burst else self.burst
        return self.tokens

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are that many; False (taking none) otherwise."""
        if self._refill(now) < amount:
            return False
        self.tokens -= amount
        return True

    def is_full(self, now: float) -> bool:
        """True when the bucket has refilled completely: it then remembers nothing."""
        return self._refill(now) >= self.burst


class BoundedTable(Generic[V]):
    """A map from source host to ``V`` that keeps at most ``max_size`` entries, least recently used
    evicted first."""

    def __init__(self, max_size: int) -> None:
        if max_size <= 0:
            raise ValueError(f"max_size {max_size} is not positive")
        self.max_size = max_size
        self._entries: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        """The entry for ``key`` (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        """Insert or replace, evicting the least recently used entry when full."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        """Forget ``key`` if present."""
        self._entries.pop(key, None)

    def prune(self, stale: Callable[[V], bool]) -> None:
        """Forget every entry for which ``stale`` is true."""
        for key in [key for key, value in self._entries.items() if stale(value)]:
            del self._entries[key]


class UnauthenticatedLimiter:
    """Per-source-IP and global token buckets for requests answered without authentication."""

    def __init__(self, rate: float, burst: float, global_rate: float, max_sources: int, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._global = TokenBucket(global_rate, global_rate, now)
        self.sources: BoundedTable[TokenBucket] = BoundedTable(max_sources)
        """Per-source buckets, exposed for tests of the memory bound."""

    def allow(self, host: str, now: float) -> bool:
        """True if one more unauthenticated request from ``host`` may be answered now."""
        bucket = self.sources.get(host)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, now)
            self.sources.put(host, bucket)
        return bucket.take(1, now) and self._global.take(1, now)

    def sweep(self, now: float) -> None:
        """Forget sources whose buckets are full again."""
        self.sources.prune(lambda bucket: bucket.is_full(now))


@dataclass
class _Failures:
    first: float
    count: int


class AuthFailureTracker:
    """fail2ban for TURN: ``limit`` authentication failures within ``window`` seconds block a source
    IP for ``block_time`` seconds."""

    def __init__(self, limit: int, window: float, block_time: float, max_sources: int) -> None:
        self._limit = limit
        self._window = window
        self._block_time = block_time
        self.failures: BoundedTable[_Failures] = BoundedTable(max_sources)
        """Recent failures by source; exposed for tests of the memory bound."""
        self.blocked: BoundedTable[float] = BoundedTable(max_sources)
        """Blocked sources and when their block ends."""

    def is_blocked(self, host: str, now: float) -> bool:
        """True while ``host`` is blocked."""
        until = self.blocked.get(host)
        if until is None:
            return False
        if now < until:
            return True
        self.blocked.pop(host)
        return False

    def record_failure(self, host: str, now: float) -> bool:
        """Count a failure; True if it blocks ``host`` now."""
        entry = self.failures.get(host)
        if entry is None or now - entry.first >= self._window:
            entry = _Failures(now, 0)
            self.failures.put(host, entry)
        entry.count += 1
        if entry.count < self._limit:
            return False
        self.failures.pop(host)
        self.blocked.put(host, now + self._block_time)
        return True

    def sweep(self, now: float) -> None:
        """Forget failures older than the window and blocks that have ended."""
        self.failures.prune(lambda entry: now - entry.first >= self._window)
        self.blocked.prune(lambda until: until <= now)
