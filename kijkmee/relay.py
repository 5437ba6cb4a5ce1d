"""`kijkmee relay`: one TURN relay node for ops, with coturn-like flags, a TOML [relay] table and
KIJKMEE_RELAY_* variables. SIGHUP reloads certificate and secrets; SIGTERM drains."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from kijkmee.config import ConfigError
from kijkmee.tls import TlsPolicy
from turn_relay.config import RelayConfig, RelayConfigError
from turn_relay.exporter import create_exporter
from turn_relay.node import RelayNode
from turn_relay.server import RelayServer

log = logging.getLogger("kijkmee.relay")


def split_host_port(text: str, where: str) -> tuple[str, int]:
    """'127.0.0.1:3478', '[::1]:3478' -> (host, port); ConfigError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not IP:PORT (e.g. 127.0.0.1:3478 or [::1]:3478)") from None
    if not sep or not 0 <= number <= 65535:
        raise ConfigError(f"{where}: {text!r} is not IP:PORT")
    return host, number


def read_secrets(path: Path) -> tuple[bytes, ...]:
    """One secret a line, the current one first; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"auth_secret_file: {path} cannot be read ({exc.strerror})") from None
    secrets = tuple(line.strip().encode() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not secrets:
        raise ConfigError(f"auth_secret_file: {path} holds no secret")
    return secrets


@dataclass(frozen=True)
class RelayNodeConfig:
    """Settings of `kijkmee relay` (and of the relay `kijkmee serve` embeds)."""

    listen: tuple[str, ...] = ("127.0.0.1:3478",)
    """IP:PORT for the UDP and TCP listeners; repeat for IPv4 and IPv6."""

    tls_listen: tuple[str, ...] = ()
    """IP:PORT for TURN over TLS (turns:); needs cert and key."""

    cert: Path | None = None
    """PEM certificate chain for TLS."""

    key: Path | None = None
    """PEM private key for TLS."""

    relay_ip: tuple[str, ...] = ()
    """Local addresses relayed ports are opened on (one IPv4, one IPv6); default: the listen addresses."""

    external_ip: tuple[str, ...] = ()
    """Public addresses behind NAT that peers reach, in the order of relay_ip (coturn external-ip)."""

    realm: str = "kijkmee"
    """Long-term credential realm; the same on every node and on coturn sharing the secret."""

    auth_secret_file: Path | None = None
    """File with TURN REST shared secrets, one a line, the current one first (coturn static-auth-secret)."""

    ports: str = "49152-65535"
    """LOW-HIGH range of relayed ports."""

    allow_peer: tuple[str, ...] = ()
    """CIDR range opened although denied by default (loopback, private, link-local, ...)."""

    allow_unencrypted: bool = False
    """Relay any payload, not only STUN/DTLS/SRTP, and accept RFC 5766 channel numbers 0x5000-0x7FFF
    (for legacy clients and load tools such as coturn's turnutils_uclient)."""

    max_allocations: int = 10_000
    """Allocations in total."""

    max_allocations_per_user: int = 32
    """Allocations per TURN username."""

    bandwidth_limit: int = 2_000_000
    """Bytes per second one allocation may relay (0: no cap)."""

    metrics: str | None = None
    """IP:PORT for Prometheus /metrics and /healthz (plain HTTP: keep it on a private address)."""

    drain_timeout: float = 600.0
    """Seconds SIGTERM waits for allocations to end before stopping."""

    log_level: str = "info"
    """debug, info, warning or error. Logs never hold a client IP, username or peer address."""

    python_data_plane: bool = False
    """Relay every packet in Python even where the C fast path (turn_relay/_fastpath.c) is built; the
    relay behaves the same, at several times the CPU per packet (for comparison, or as a fallback)."""

    def validate(self) -> RelayNodeConfig:
        for where, values in (("listen", self.listen), ("tls_listen", self.tls_listen)):
            for value in values:
                split_host_port(value, where)
        if not self.listen and not self.tls_listen:
            raise ConfigError("listen: give at least one listener")
        if self.tls_listen and (self.cert is None or self.key is None):
            raise ConfigError("tls_listen needs cert and key")
        if self.external_ip and len(self.external_ip) != len(self.relay_ip or self.listen_hosts()):
            raise ConfigError("external_ip: give one for each relay_ip")
        self.port_range()
        if self.metrics:
            split_host_port(self.metrics, "metrics")
        return self

    def listen_hosts(self) -> tuple[str, ...]:
        hosts: list[str] = []
        for value in (*self.listen, *self.tls_listen):
            host = split_host_port(value, "listen")[0]
            if host not in hosts:
                hosts.append(host)
        return tuple(hosts)

    def port_range(self) -> tuple[int, int]:
        low, _, high = self.ports.partition("-")
        try:
            pair = int(low), int(high)
        except ValueError:
            raise ConfigError(f"ports: {self.ports!r} is not LOW-HIGH") from None
        if not 1024 <= pair[0] <= pair[1] <= 65535:
            raise ConfigError(f"ports: {self.ports!r} must lie within 1024-65535, low first")
        return pair

    def core_config(self, secrets: tuple[bytes, ...]) -> RelayConfig:
        """The sans-IO core's settings; advertised relay addresses are the external ones when set."""
        local = self.relay_ip or tuple(h for h in self.listen_hosts() if h not in ("0.0.0.0", "::"))  # noqa: S104
        low, high = self.port_range()
        try:
            return RelayConfig(
                secrets=secrets, relay_addresses=self.external_ip or local, realm=self.realm,
                min_port=low, max_port=high, listen_addresses=tuple(h for h in local if h not in self.external_ip),
                max_allocations=self.max_allocations, max_allocations_per_user=self.max_allocations_per_user,
                bandwidth_limit=self.bandwidth_limit or None, allow_peer=self.allow_peer,
                allow_unencrypted=self.allow_unencrypted, legacy_channels=self.allow_unencrypted, dont_fragment=True,
            ).validate()
        except RelayConfigError as exc:
            raise ConfigError(str(exc)) from None

    def bind_hosts(self) -> dict[str, str]:
        local = self.relay_ip or self.listen_hosts()
        return dict(zip(self.external_ip, local, strict=False))


class RunningRelay:
    """A started relay node: its listeners, exporter and the reload/drain operations."""

    def __init__(self, config: RelayNodeConfig, secrets: tuple[bytes, ...]) -> None:
        self.config = config
        self.server = RelayServer(config.core_config(secrets), nonce_key=os.urandom(32), random_bytes=os.urandom)
        self.node = RelayNode(self.server, fast_path=False if config.python_data_plane else None)
        self.node.bind_hosts = config.bind_hosts()
        self.tls: ssl.SSLContext | None = None
        self.udp: list[tuple[str, int]] = []
        self.tcp: list[tuple[str, int]] = []
        self.tls_addresses: list[tuple[str, int]] = []
        self.metrics_address: tuple[str, int] | None = None
        self._exporter: web.AppRunner | None = None

    @classmethod
    async def start(cls, config: RelayNodeConfig, tls: ssl.SSLContext | None = None) -> RunningRelay:
        if config.auth_secret_file is None:
            raise ConfigError("auth_secret_file: a relay needs the shared secret(s) signaling mints credentials with")
        relay = cls(config, read_secrets(config.auth_secret_file))
        try:
            for value in config.listen:
                udp, tcp = await relay._listen_pair(*split_host_port(value, "listen"))
                relay.udp.append(udp)
                relay.tcp.append(tcp)
            if config.tls_listen:
                relay.tls = tls or relay._tls_context()
                for value in config.tls_listen:
                    relay.tls_addresses.append(await relay.node.listen_stream(*split_host_port(value, "tls_listen"),
                                                                              tls=relay.tls))
            if config.metrics:
                relay._exporter = web.AppRunner(create_exporter(relay.node), access_log=None, handle_signals=False)
                await relay._exporter.setup()
                site = web.TCPSite(relay._exporter, *split_host_port(config.metrics, "metrics"))
                await site.start()
                sockets = getattr(site._server, "sockets", None) or []
                relay.metrics_address = sockets[0].getsockname()[:2] if sockets else None
        except BaseException:
            await relay.stop()
            raise
        return relay

    async def _listen_pair(self, host: str, port: int) -> tuple[tuple[str, int], tuple[str, int]]:
        """UDP and TCP listeners on the same port (turn: URLs name one port for both). With port 0
        the system picks the UDP port; if that number is taken for TCP, pick again."""
        for _ in range(1 if port else 50):
            udp = self.node.listen_udp(host, port)
            try:
                return udp, await self.node.listen_stream(host, udp[1])
            except OSError as exc:
                self.node.close_udp(udp)
                if port or exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")

    def _tls_context(self) -> ssl.SSLContext:
        assert self.config.cert is not None and self.config.key is not None
        return TlsPolicy().server_context(self.config.cert, self.config.key)

    def reload(self) -> None:
        """SIGHUP: new secrets and certificate for what comes next; allocations stay."""
        if self.config.auth_secret_file is not None:
            self.server.replace_secrets(read_secrets(self.config.auth_secret_file))
        if self.tls is not None and self.config.cert is not None and self.config.key is not None:
            self.tls.load_cert_chain(self.config.cert, self.config.key)
        log.info("reloaded secrets and certificate")

    async def drain(self, timeout: float) -> None:
        """SIGTERM: take no new allocations; wait until the existing ones end or `timeout` passes."""
        self.node.drain()
        log.info("draining", extra={"allocations": len(self.server.allocations)})
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.server.allocations) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        self.node.close()
        if self._exporter is not None:
            await self._exporter.cleanup()


async def run_relay(config: RelayNodeConfig) -> None:
    relay = await RunningRelay.start(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, relay.reload)
    where = ", ".join([f"udp+tcp {h}:{p}" for h, p in relay.udp] + [f"tls {h}:{p}" for h, p in relay.tls_addresses])
    print(f"kijkmee relay is running: {where}" + (f"; metrics on {relay.metrics_address[0]}:{relay.metrics_address[1]}"
                                                   if relay.metrics_address else ""), flush=True)
    await stop.wait()
    print("Draining: no new allocations; waiting for the current ones to end.", file=sys.stderr, flush=True)
    drain = asyncio.ensure_future(relay.drain(config.drain_timeout))
    second = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, second.set)
    loop.add_signal_handler(signal.SIGTERM, second.set)
    await asyncio.wait([drain, asyncio.ensure_future(second.wait())], return_when=asyncio.FIRST_COMPLETED)
    drain.cancel()
    await relay.stop()
