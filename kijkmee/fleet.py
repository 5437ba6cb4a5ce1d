"""The relay fleet as signaling sees it: a small poller that learns each node's health and load, and the
`iceServers` provider that hands each joining participant one node (the rule: kijkmee/relay_nodes.py).

Checks, every `interval` seconds and at most `timeout` seconds each, all nodes at once:
- a node with a health URL (our `kijkmee relay --metrics`): GET it; 200 is up, 503 draining, anything
  else (or no answer) down. Its JSON body's `allocations` is the load; or the metrics URL's gauge.
- a node without one (coturn): a STUN Binding request over UDP to its first turn:...?transport=udp
  URL (a TCP connect when it has none); an answer means up. Its load is unknown.
- the embedded relay of `kijkmee serve`, when it runs, is a member named "embedded", read in process.

Logs name nodes and their own URLs (operators' relays), never a participant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kijkmee.relay_nodes import Choice, Fallback, NodeStatus, NodeView, RelayNodeSpec, choose_relay
from signaling.settings import IceServersProvider, credential_ttl
from turn_relay.auth import mint_turn_credentials
from turn_relay.stun import Message, MessageClass, Method, StunDecodeError, decode_message, encode_message

log = logging.getLogger("kijkmee.fleet")

EMBEDDED = "embedded"
"""Name of the embedded relay when it is a member of the fleet."""
DOWN_AFTER = 2
"""Failed checks in a row before a node that was up counts as down: one lost answer on a busy network or
machine should not send everyone elsewhere for a round. A node not yet seen up is down at once."""
_GAUGES = re.compile(r"^(?:kijkmee_relay_allocations|turn_total_allocations)(?:\{[^}]*\})?\s+([0-9.eE+]+)\s*$",
                     re.MULTILINE)


@dataclass(frozen=True)
class Report:
    """What one check found."""

    status: NodeStatus
    allocations: int | None = None
    reason: str = ""
    """Why a node is down, in a few words (no address of anyone but the node)."""


@dataclass
class _Member:
    spec: RelayNodeSpec
    local: Callable[[], Report] | None = None
    """For the embedded relay: its state, read in process instead of over the network."""
    status: NodeStatus = NodeStatus.UNKNOWN
    allocations: int | None = None
    handed: int = 0
    failures: int = 0
    """Failed checks in a row."""
    tls: ssl.SSLContext | None = field(default=None, repr=False)


def _tls_context(spec: RelayNodeSpec) -> ssl.SSLContext | None:
    """TLS for an https health/metrics URL: verified, host name checked, TLS 1.2 or later."""
    if not any(url and url.startswith("https:") for url in (spec.health_url, spec.metrics_url)):
        return None
    context = ssl.create_default_context(cafile=str(spec.ca_file) if spec.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class RelayFleet:
    """Polls the nodes in the background; `choose()` is what each join calls (no I/O, no await)."""

    def __init__(
        self, specs: Sequence[RelayNodeSpec], interval: float = 3.0, timeout: float = 2.0,
        local: dict[str, tuple[RelayNodeSpec, Callable[[], Report]]] | None = None,
    ) -> None:
        self.interval = interval
        self.timeout = timeout  # rounds never overlap: the next one starts `interval` after this one ends
        self._members: dict[str, _Member] = {}
        for spec, probe in (local or {}).values():
            self._members[spec.name] = _Member(spec, local=probe)
        for spec in specs:
            if spec.name in self._members:
                raise ValueError(f"relay node name {spec.name!r} is used twice")
            self._members[spec.name] = _Member(spec, tls=_tls_context(spec))
        self._turn = 0
        self._fallback: Fallback | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check every node once (so the first join already has an answer), then keep polling."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        await self.poll_once()
        self._task = asyncio.create_task(self._loop(), name="kijkmee-relay-fleet")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep polling; a check's own failures are reports, not exceptions
                log.error("relay health round failed", extra={"error": type(exc).__name__})

    async def poll_once(self) -> None:
        members = list(self._members.values())
        reports = await asyncio.gather(*(self._check(member) for member in members))
        for member, report in zip(members, reports, strict=True):
            self._record(member, report)

    def _record(self, member: _Member, report: Report) -> None:
        member.failures = member.failures + 1 if report.status is NodeStatus.DOWN else 0
        if member.status is NodeStatus.UP and 0 < member.failures < DOWN_AFTER:
            return  # the previous report stands for one more round
        if report.status is not member.status:
            level = logging.INFO if report.status is NodeStatus.UP else logging.WARNING
            log.log(level, "relay node is %s", report.status.value,
                    extra={"node": member.spec.name, "was": member.status.value, "reason": report.reason})
        member.status, member.allocations, member.handed = report.status, report.allocations, 0

    async def _check(self, member: _Member) -> Report:
        if member.local is not None:
            return member.local()
        spec = member.spec
        try:
            async with asyncio.timeout(self.timeout):
                if spec.health_url is not None:
                    report = await self._http_health(member, spec.health_url)
                else:
                    report = await _probe(spec)
                if spec.metrics_url is not None and report.status is not NodeStatus.DOWN:
                    report = Report(report.status, await self._metrics(member, spec.metrics_url), report.reason)
                return report
        except TimeoutError:
            return Report(NodeStatus.DOWN, reason="no answer in time")
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            return Report(NodeStatus.DOWN, reason=type(exc).__name__)

    async def _http_health(self, member: _Member, url: str) -> Report:
        assert self._session is not None
        async with self._session.get(url, ssl=member.tls if member.tls is not None else True) as response:
            status = {200: NodeStatus.UP, 503: NodeStatus.DRAINING}.get(response.status, NodeStatus.DOWN)
            allocations = None
            with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                body = await response.json()
                if isinstance(body, dict) and type(body.get("allocations")) is int:
                    allocations = body["allocations"]
            return Report(status, allocations, "" if status is not NodeStatus.DOWN else f"HTTP {response.status}")

    async def _metrics(self, member: _Member, url: str) -> int | None:
        assert self._session is not None
        async with self._session.get(url, ssl=member.tls if member.tls is not None else True) as response:
            if response.status != 200:
                return None
            values = [float(v) for v in _GAUGES.findall(await response.text())]
            return int(sum(values)) if values else None

    # -- per join --------------------------------------------------------------------------------

    def states(self) -> dict[str, NodeView]:
        return {name: NodeView(name, m.status, m.allocations, m.handed) for name, m in self._members.items()}

    def choose(self) -> Choice:
        """The node(s) for one join; counts the join against the chosen node until its next report."""
        choice = choose_relay(list(self.states().values()), self._turn)
        self._turn += 1
        if len(choice.nodes) == 1 and choice.fallback is None:
            self._members[choice.nodes[0]].handed += 1
        if choice.fallback is not self._fallback:
            self._say_fallback(choice)
        return choice

    def _say_fallback(self, choice: Choice) -> None:
        self._fallback = choice.fallback
        if choice.fallback is Fallback.NONE_HEALTHY:
            log.warning("no relay node is healthy: handing out every node that is not draining",
                        extra={"nodes": list(choice.nodes)})
        elif choice.fallback is Fallback.ALL_DRAINING:
            log.error("every relay node is draining: joins get no relay (direct connections only)")
        else:
            log.info("a healthy relay node is back", extra={"node": choice.nodes[0]})

    def urls(self, choice: Choice) -> list[str]:
        return [url for name in choice.nodes for url in self._members[name].spec.urls]

    def provider(self, secret: bytes, configured: int, extra_urls: Sequence[str] = ()) -> IceServersProvider:
        """The `iceServers` of each join: one node's URLs (plus any static extra ones), fresh credentials."""

        def provide(peer_id: str, ttl: int | None = None) -> list[dict[str, Any]]:
            urls = [*self.urls(self.choose()), *extra_urls]
            if not urls:
                return []
            username, password = mint_turn_credentials(secret, peer_id, time.time(), credential_ttl(configured, ttl))
            return [{"urls": urls, "username": username, "credential": password}]

        return provide


async def _probe(spec: RelayNodeSpec) -> Report:
    """Up when the node answers a STUN Binding over UDP (or accepts a TCP connection); load unknown."""
    address = spec.probe_address()
    if address.transport == "udp":
        await _stun_binding(address.host, address.port)
    else:
        _reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return Report(NodeStatus.UP)


class _BindingAnswer(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = decode_message(data)
        except StunDecodeError:
            return
        if message.transaction_id == self.transaction_id and message.message_class is MessageClass.SUCCESS \
                and not self.answered.done():
            self.answered.set_result(None)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: nobody listens
        if not self.answered.done():
            self.answered.set_exception(exc)


async def _stun_binding(host: str, port: int) -> None:
    """One Binding request, resent every half second until answered (the caller's timeout ends it)."""
    transaction_id = os.urandom(12)
    request = encode_message(Message(Method.BINDING, MessageClass.REQUEST, transaction_id), fingerprint=True)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _BindingAnswer(transaction_id), remote_addr=(host, port)
    )
    try:
        while True:
            transport.sendto(request)
            done, _ = await asyncio.wait([protocol.answered], timeout=0.5)
            if done:
                protocol.answered.result()
                return
    finally:
        transport.close()
