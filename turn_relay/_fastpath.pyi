"""Types of the C extension ``turn_relay/_fastpath.c`` (built when a C compiler is there, Linux only)."""

from collections.abc import Callable, Sequence

BATCH: int
DRAIN_BUDGET: int

class TokenBucket:
    """:class:`turn_relay.limits.TokenBucket` in C: the bucket the fast path and the core share."""

    rate: float
    burst: float
    tokens: float
    stamp: float
    def __init__(self, rate: float, burst: float, now: float) -> None: ...
    def take(self, amount: float, now: float) -> bool: ...
    def is_full(self, now: float) -> bool: ...

ChannelEntry = tuple[int, str, int, float, float, bool]
"""(number, peer host, peer port, channel expires, permission expires, keyed)."""

class Engine:
    def __init__(
        self,
        client_slow: Callable[[bytes, str, int, tuple[str, int], float], None],
        peer_slow: Callable[[bytes, str, int, tuple[str, int], float], None],
        clock: Callable[[], float],
        metrics: object,
        counters: object,
        drop_reasons: tuple[object, object, object],
        encrypted_only: bool,
        channel_end: int,
    ) -> None: ...
    def poll(self) -> None: ...
    def fileno(self) -> int: ...
    def add_listener(self, fd: int, address: tuple[str, int]) -> None: ...
    def add_relay(self, fd: int, address: tuple[str, int]) -> None: ...
    def remove_socket(self, fd: int) -> None: ...
    def set_allocation(
        self,
        relay_fd: int,
        listener_fd: int,
        client_host: str,
        client_port: int,
        bucket: TokenBucket | None,
        channels: Sequence[ChannelEntry],
    ) -> None: ...
    def expire(self, now: float) -> int: ...
    def bindings(self) -> list[tuple[int, int, str, int, bool]]: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...
