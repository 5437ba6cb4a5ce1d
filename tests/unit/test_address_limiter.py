"""The per-address limiter of the pre-join network check (GET /r/<room>/check): pure, time passed in."""

from __future__ import annotations

import pytest

from signaling.ratelimit import AddressLimiter


def test_each_address_has_its_own_burst_then_the_rate() -> None:
    limiter = AddressLimiter(rate=0.5, burst=3)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("192.0.2.2", 0.0)  # someone else is not held back
    assert not limiter.allow("192.0.2.1", 1.0)
    assert limiter.allow("192.0.2.1", 2.0)  # one more token after 1 / rate seconds
    assert not limiter.allow("192.0.2.1", 2.0)


def test_the_table_forgets_idle_addresses_and_never_grows_past_its_cap() -> None:
    limiter = AddressLimiter(rate=1.0, burst=2, max_addresses=2)
    assert limiter.allow("a", 0.0) and limiter.allow("b", 0.0)
    assert not limiter.allow("c", 1.0)  # full of addresses that asked just now: refused, not grown
    assert len(limiter) == 2
    # Once their buckets have refilled (burst / rate = 2 s) they are forgotten and room is made.
    assert limiter.allow("c", 2.5)
    assert len(limiter) == 1
    assert [limiter.allow("a", 2.5) for _ in range(3)] == [True, True, False]  # a fresh, full bucket


@pytest.mark.parametrize(("rate", "burst", "cap"), [(0, 1, 1), (1, 0.5, 1), (1, 1, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: float, cap: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        AddressLimiter(rate, burst, cap)
