"""One TLS policy for every listener kijkmee opens (HTTPS, WSS, TURN over TLS).

TLS 1.2 is the minimum (article 5.3 of the agreement), TLS 1.3 is preferred by OpenSSL whenever the
client offers it. TLS 1.2 is limited to Mozilla's "intermediate" AEAD suites with forward secrecy
(ECDHE only: we configure no finite-field DH parameters, so the DHE suites of that list could never
be chosen anyway). Compression and renegotiation are off.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

# Mozilla server-side TLS guidelines, "intermediate" configuration, TLS 1.2 part (ECDHE suites).
INTERMEDIATE_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


@dataclass(frozen=True)
class TlsPolicy:
    """How every kijkmee listener speaks TLS."""

    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    """Oldest protocol accepted; the agreement forbids anything below TLS 1.2."""

    tls12_ciphers: str = INTERMEDIATE_TLS12_CIPHERS
    """OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are all AEAD and left at OpenSSL's defaults)."""

    def __post_init__(self) -> None:
        if self.minimum_version < ssl.TLSVersion.TLSv1_2:
            raise ValueError("the TLS policy cannot allow anything below TLS 1.2")

    def server_context(self, cert_file: Path, key_file: Path) -> ssl.SSLContext:
        """A server-side context with this policy and the given certificate chain and key."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.minimum_version
        context.set_ciphers(self.tls12_ciphers)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
        return context
