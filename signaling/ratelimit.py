"""Token bucket for per-connection message rates. Pure: the caller passes the time."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    @property
    def last_used(self) -> float:
        """The latest time this bucket was asked (its tokens are counted up to then)."""
        return self._stamp

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if there are enough; the clock going backwards adds nothing."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class AddressLimiter:
    """One token bucket per client address, in memory only. Pure: the caller passes the time.

    Buckets that have refilled completely are forgotten (they would allow a full burst anyway), so the
    table holds only addresses that asked recently and never grows without bound: when it reaches
    `max_addresses` even after that, new addresses are refused until old ones refill. Nothing here is
    written anywhere.
    """

    def __init__(self, rate: float, burst: float, max_addresses: int = 10_000) -> None:
        if rate <= 0 or burst < 1 or max_addresses < 1:
            raise ValueError("rate must be positive, burst and max_addresses at least 1")
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, address: str, now: float) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._forget_idle(now)
                if len(self._buckets) >= self.max_addresses:
                    return False
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
        return bucket.allow(now)

    def _forget_idle(self, now: float) -> None:
        refill = self.burst / self.rate
        for address in [a for a, b in self._buckets.items() if now - b.last_used >= refill]:
            del self._buckets[address]
