"""kijkmee's own TURN relay (RFC 8656) for UDP, TCP and TLS.

``turn_relay.stun`` is a pure STUN/TURN codec and ``turn_relay.auth`` holds the coturn-compatible
TURN REST credentials and stateless nonces. Nothing here imports the rest of kijkmee.

The sans-IO core, no asyncio, sockets, clock or randomness of its own:

- ``server``: :class:`RelayServer`, the one entry point (bytes and ``now`` in, ``actions`` out);
- ``handlers`` (Allocate, Refresh, CreatePermission, ChannelBind) and ``relaying`` (the data plane);
- ``allocation`` (allocations by 5-tuple, permissions, channels, lifetimes), ``authenticate``;
- ``policy`` (which peers may be reached), ``classify`` (the encrypted-only gate, RFC 7983);
- ``limits`` (token buckets, bounded per-source tables), ``metrics`` (counters, drop reasons);
- ``errors`` (refusals with their wire codes), ``responses``, ``config``, ``addresses``, ``actions``.

``node`` runs it on asyncio sockets; ``_fastpath`` (C, optional) is the node's data plane for
ChannelData on bound channels, fed and pruned by the node from the core's state.
"""
