"""TURN control plane for the benchmark: many sessions at once, each on its own UDP socket.

Allocate (401 challenge, then authenticated), CreatePermission, ChannelBind and Refresh(0), sent in
windows over non-blocking sockets with one epoll, retransmitted on timeout. Built on the project's
STUN codec (``turn_relay.stun``) and TURN REST credentials (``turn_relay.auth``), so the same code
sets up sessions on coturn and on our relay.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from turn_relay.auth import mint_turn_credentials
from turn_relay.stun import (
    Attribute,
    ChannelNumber,
    Lifetime,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    StunDecodeError,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
    long_term_key,
)
from turn_relay.stun.attributes.error_code import ErrorCodeAttribute

CHANNEL = 0x4000
"""The one channel each session binds to the peer (RFC 8656 range, accepted by both servers)."""


class TurnError(RuntimeError):
    pass


@dataclass(eq=False)
class Session:
    sock: socket.socket
    username: str
    password: str
    realm: str = ""
    nonce: str = ""
    key: bytes = b""
    relay: tuple[str, int] | None = None
    errors: list[int] = field(default_factory=list)


PER_SOURCE = 40
"""Sessions per loopback source address. Our relay rate-limits unauthenticated requests (the 401 that
starts every Allocate) per source host (10/s, burst 50) as protection against floods; coturn has no such
limit. Spreading clients over 127.1.x.y, like clients behind different addresses, lets both servers be
set up at full speed."""


def source_host(index: int) -> str:
    group = index // PER_SOURCE
    return f"127.1.{group // 250}.{group % 250 + 1}"


def open_sessions(count: int, secret: bytes, user_prefix: str, unique_users: bool, rcvbuf: int = 0,
                  first: int = 0) -> list[Session]:
    """``count`` sockets bound to loopback addresses (``source_host``) with TURN REST credentials (one
    user, or one per session); ``first`` numbers them on from earlier calls."""
    sessions = []
    now = time.time()
    shared = mint_turn_credentials(secret, user_prefix, now, 3600)
    for i in range(first, first + count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        sock.bind((source_host(i), 0))
        sock.setblocking(False)
        username, password = mint_turn_credentials(secret, f"{user_prefix}{i}", now, 3600) if unique_users else shared
        sessions.append(Session(sock, username, password))
    return sessions


def _error_code(message: Message) -> int | None:
    attribute = message.get(ErrorCodeAttribute)
    return None if attribute is None else int(attribute.code)


def _transact(
    server: tuple[str, int],
    sessions: Sequence[Session],
    build: Callable[[Session], tuple[int, list[Attribute], bool]],
    window: int = 256,
    timeout: float = 1.0,
    tries: int = 4,
) -> dict[Session, Message]:
    """Send one request per session (``build`` -> method, attributes, authenticated), ``window`` at a
    time, and collect the responses (by transaction id). Sessions without an answer are left out."""
    answers: dict[Session, Message] = {}
    poller = select.epoll()
    try:
        for start in range(0, len(sessions), window):
            batch = sessions[start : start + window]
            pending: dict[int, tuple[Session, bytes, bytes]] = {}
            for session in batch:
                method, attributes, authenticated = build(session)
                tid = os.urandom(12)
                attrs = list(attributes)
                key = None
                if authenticated:
                    attrs += [Username(session.username), Realm(session.realm), Nonce(session.nonce)]
                    key = session.key
                data = encode_message(Message(method, MessageClass.REQUEST, tid, tuple(attrs)), integrity_key=key)
                pending[session.sock.fileno()] = (session, tid, data)
                poller.register(session.sock.fileno(), select.EPOLLIN)
            try:
                for _ in range(tries):
                    for session, _tid, data in pending.values():
                        try:
                            session.sock.sendto(data, server)
                        except BlockingIOError:
                            pass
                    deadline = time.monotonic() + timeout
                    while pending and time.monotonic() < deadline:
                        for fd, _ in poller.poll(max(0.0, deadline - time.monotonic())):
                            entry = pending.get(fd)
                            if entry is None:
                                continue
                            session, tid, _ = entry
                            while True:
                                try:
                                    raw = session.sock.recv(65536)
                                except BlockingIOError:
                                    break
                                if not raw or raw[0] > 0x3F:
                                    continue
                                try:
                                    message = decode_message(raw)
                                except StunDecodeError:
                                    continue
                                if message.transaction_id == tid:
                                    answers[session] = message
                                    pending.pop(fd, None)
                                    break
                    if not pending:
                        break
            finally:
                for session in batch:
                    poller.unregister(session.sock.fileno())
    finally:
        poller.close()
    return answers


def allocate(server: tuple[str, int], sessions: Sequence[Session], window: int = 256) -> list[Session]:
    """Allocate on every session (401 challenge first); returns the sessions that got a relayed address."""
    challenges = _transact(server, sessions, lambda s: (Method.ALLOCATE, [RequestedTransport(), Lifetime(600)], False),
                           window)
    ready = []
    for session, message in challenges.items():
        realm, nonce = message.get(Realm), message.get(Nonce)
        if _error_code(message) != 401 or realm is None or nonce is None:
            session.errors.append(_error_code(message) or 0)
            continue
        session.realm, session.nonce = realm.text, nonce.text
        session.key = long_term_key(session.username, session.realm, session.password)
        ready.append(session)
    answers = _transact(server, ready, lambda s: (Method.ALLOCATE, [RequestedTransport(), Lifetime(600)], True), window)
    done = []
    for session, message in answers.items():
        relayed = message.get(XorRelayedAddress)
        if message.message_class is MessageClass.SUCCESS and relayed is not None:
            session.relay = (str(relayed.address), relayed.port)
            done.append(session)
        else:
            session.errors.append(_error_code(message) or 0)
    return done


def _peer_attr(peer: tuple[str, int]) -> XorPeerAddress:
    return XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1])


def _succeeded(answers: dict[Session, Message]) -> list[Session]:
    ok = []
    for session, message in answers.items():
        if message.message_class is MessageClass.SUCCESS:
            ok.append(session)
        else:
            session.errors.append(_error_code(message) or 0)
    return ok


def bind_channel(server: tuple[str, int], sessions: Sequence[Session], peer: tuple[str, int],
                 window: int = 256) -> list[Session]:
    """CreatePermission then ChannelBind(CHANNEL, peer) on every session; returns those that succeeded."""
    permitted = _succeeded(_transact(server, sessions,
                                     lambda s: (Method.CREATE_PERMISSION, [_peer_attr(peer)], True), window))
    return _succeeded(_transact(server, permitted,
                                lambda s: (Method.CHANNEL_BIND, [ChannelNumber(CHANNEL), _peer_attr(peer)], True),
                                window))


def release(server: tuple[str, int], sessions: Sequence[Session], window: int = 256) -> None:
    """Refresh(lifetime 0) every allocation and close the sockets."""
    try:
        _transact(server, [s for s in sessions if s.relay is not None],
                  lambda s: (Method.REFRESH, [Lifetime(0)], True), window, timeout=0.5, tries=2)
    finally:
        for session in sessions:
            session.sock.close()


def binding_ok(server: tuple[str, int], timeout: float = 0.3) -> bool:
    """True if a STUN Binding request to ``server`` is answered (the server is up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        tid = os.urandom(12)
        sock.sendto(encode_message(Message(Method.BINDING, MessageClass.REQUEST, tid, ())), server)
        try:
            data = sock.recv(2048)
        except OSError:
            return False
        try:
            return decode_message(data).transaction_id == tid
        except StunDecodeError:
            return False
