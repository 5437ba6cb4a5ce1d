"""A fleet of relay nodes: how one is described, and which one a joining participant gets.

Pure code, no I/O and no clock: `choose_relay` takes what the health poller (kijkmee/fleet.py) last
learned about each node and answers with the node(s) whose URLs go into the join's `iceServers`.
Keeping the rule here, apart from the polling, lets the unit tests state it exactly.

The rule: among the nodes that answered their last check healthy and are not draining, the one with
the least load (relay allocations it reported, plus joins handed to it since that report, so a burst
of joins between two polls spreads instead of piling onto the node that was idle a few seconds ago);
ties go round by a turn counter. When no node is healthy, every node that is not known to be draining
is handed out at once and the browser's ICE agent tries them all (one may be reachable for the browser
although not for us); when every node drains, none is (calls then connect directly or not at all,
which the logs say).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_TURN_URL = re.compile(
    r"(?P<scheme>turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)
_HTTP_URL = re.compile(r"https?://[^\s]+")


@dataclass(frozen=True)
class TurnAddress:
    """Where a turn:/turns: URL points: what the health probe of a node without a health URL tries."""

    scheme: str
    host: str
    """Host name or IP address (IPv6 without brackets)."""
    port: int
    transport: str
    """udp or tcp (turns: is always tcp)."""


def parse_turn_url(text: str) -> TurnAddress:
    """turn:HOST:PORT[?transport=udp|tcp] or turns:HOST:PORT[?transport=tcp]; ValueError otherwise."""
    match = _TURN_URL.fullmatch(text)
    if match is None or not 0 < int(match.group("port")) < 65536:
        raise ValueError(f"{text!r} is not a TURN URL such as turn:relay-a.example.nl:3478?transport=udp")
    scheme, transport = match.group("scheme"), match.group("transport")
    if scheme == "turns" and transport == "udp":
        raise ValueError(f"{text!r}: turns: runs over TLS, so its transport is tcp")
    host = match.group("host").strip("[]")
    return TurnAddress(scheme, host, int(match.group("port")), transport or ("tcp" if scheme == "turns" else "udp"))


@dataclass(frozen=True)
class RelayNodeSpec:
    """One relay node signaling may hand out: `kijkmee relay`, or coturn with the same shared secret."""

    name: str
    """Short name for logs and metrics (e.g. dc1-relay-a)."""
    urls: tuple[str, ...]
    """The turn:/turns: URLs browsers get for this node, in the order they should try them."""
    health_url: str | None = None
    """http(s) URL that answers 200 while the node takes allocations and 503 while it drains (our relay's
    /healthz, whose JSON also gives its allocation count). None (coturn): a STUN Binding to the first
    turn:...?transport=udp URL, else a TCP connect to the first URL, tells whether the node is up."""
    metrics_url: str | None = None
    """Prometheus URL whose kijkmee_relay_allocations (or coturn's turn_total_allocations) gauge gives
    the load, for a node whose health URL does not report it."""
    ca_file: Path | None = None
    """CA certificates an https health or metrics URL is verified against (default: the system's)."""

    def probe_address(self) -> TurnAddress:
        """The address a node without a health URL is checked on (UDP where it has a UDP URL)."""
        addresses = [parse_turn_url(url) for url in self.urls]
        udp = [a for a in addresses if a.scheme == "turn" and a.transport == "udp"]
        return (udp or addresses)[0]


_TABLE_KEYS = {"name", "urls", "health_url", "metrics_url", "ca_file"}
_FLAG_KEYS = {"name": "name", "health": "health_url", "metrics": "metrics_url", "ca": "ca_file"}


def parse_relay_node(raw: object) -> RelayNodeSpec:
    """A node from a TOML table ({name, urls, health_url?, metrics_url?, ca_file?}) or from a flag or
    environment string ("name=dc1-a turn:HOST:3478?transport=udp turns:HOST:5349 health=https://...").
    Raises ValueError with a sentence that says what is wrong."""
    fields: dict[str, Any]
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - _TABLE_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TABLE_KEYS))})")
        fields = dict(raw)
        urls = fields.get("urls")
        if isinstance(urls, str):
            fields["urls"] = [urls]
    elif isinstance(raw, str):
        fields = {"urls": []}
        for token in raw.split():
            key, sep, value = token.partition("=")
            if sep and key in _FLAG_KEYS:
                fields[_FLAG_KEYS[key]] = value
            elif token.startswith(("turn:", "turns:")):
                fields["urls"].append(token)
            else:
                raise ValueError(f"{token!r} is neither a turn:/turns: URL nor name=, health=, metrics= or ca=")
    else:
        raise ValueError("a relay node is a table (name, urls, health_url) or a string")
    return _node(fields)


def _node(fields: dict[str, Any]) -> RelayNodeSpec:
    name = fields.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(f"name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")
    urls = fields.get("urls")
    if not isinstance(urls, list | tuple) or not urls or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"relay node {name}: urls must list at least one turn:/turns: URL")
    for url in urls:
        try:
            parse_turn_url(url)
        except ValueError as exc:
            raise ValueError(f"relay node {name}: {exc}") from None
    for key in ("health_url", "metrics_url"):
        value = fields.get(key)
        if value is not None and (not isinstance(value, str) or _HTTP_URL.fullmatch(value) is None):
            raise ValueError(f"relay node {name}: {key} {value!r} is not an http:// or https:// URL")
    ca_file = fields.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str | Path) or not str(ca_file)):
        raise ValueError(f"relay node {name}: ca_file is not a path")
    return RelayNodeSpec(
        name=name, urls=tuple(urls), health_url=fields.get("health_url"), metrics_url=fields.get("metrics_url"),
        ca_file=Path(ca_file).expanduser() if ca_file is not None else None,
    )


class NodeStatus(enum.StrEnum):
    """What the last check of a node found."""

    UNKNOWN = "unknown"
    """Not checked yet."""
    UP = "up"
    """Answered, and takes new allocations."""
    DRAINING = "draining"
    """Answered 503: its current allocations run on, new ones are refused (508)."""
    DOWN = "down"
    """Did not answer in time, refused the connection, or answered an error."""


@dataclass(frozen=True)
class NodeView:
    """One node as the chooser sees it."""

    name: str
    status: NodeStatus
    allocations: int | None
    """Allocations it reported at its last check; None when it does not report a load (coturn)."""
    handed: int = 0
    """Joins handed this node since that report."""


class Fallback(enum.StrEnum):
    """Why a choice is not a single healthy node."""

    NONE_HEALTHY = "none-healthy"
    """No node is up: every node not known to drain is handed out."""
    ALL_DRAINING = "all-draining"
    """Every node drains (or none is configured): no relay is handed out."""


@dataclass(frozen=True)
class Choice:
    nodes: tuple[str, ...]
    """Names of the nodes whose URLs the participant gets: one, or several in a fallback."""
    fallback: Fallback | None = None


def choose_relay(nodes: Sequence[NodeView], turn: int) -> Choice:
    """The node for the next join (see the module docstring). `turn` is a counter the caller raises on
    every join; it only decides between nodes of exactly equal load, so equal nodes take turns."""
    healthy = [node for node in nodes if node.status is NodeStatus.UP]
    if not healthy:
        usable = tuple(node.name for node in nodes if node.status is not NodeStatus.DRAINING)
        return Choice(usable, Fallback.NONE_HEALTHY) if usable else Choice((), Fallback.ALL_DRAINING)
    known = [node.allocations for node in healthy if node.allocations is not None]
    # A node that reports no load counts as carrying the average of those that do: its fair share.
    share = sum(known) / len(known) if known else 0.0

    def load(node: NodeView) -> float:
        return (node.allocations if node.allocations is not None else share) + node.handed

    least = min(load(node) for node in healthy)
    tied = [node for node in healthy if load(node) == least]
    return Choice((tied[turn % len(tied)].name,))
