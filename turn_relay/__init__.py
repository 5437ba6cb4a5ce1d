"""kijkmee's own TURN relay (RFC 8656) for UDP, TCP and TLS.

``turn_relay.stun`` is a pure STUN/TURN codec and ``turn_relay.auth`` holds the coturn-compatible
TURN REST credentials and stateless nonces. Nothing here imports the rest of kijkmee.
"""
