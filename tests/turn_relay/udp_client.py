"""A small TURN client on a real UDP socket, built on our codec (for the node's real-socket tests)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

from turn_relay.auth import mint_turn_credentials
from turn_relay.stun import (
    AddressFamily,
    Attribute,
    ChannelNumber,
    Lifetime,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
    long_term_key,
)
from turn_relay.stun.attributes.error_code import ErrorCodeAttribute


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.queue.put_nowait(data)


def error_code(message: Message) -> int | None:
    attribute = message.get(ErrorCodeAttribute)
    return None if attribute is None else int(attribute.code)


class UdpTurnClient:
    def __init__(self, server: tuple[str, int], secret: bytes, user: str = "tester", realm: str = "kijkmee") -> None:
        self.server = server
        self.username, self.password = mint_turn_credentials(secret, user, time.time(), 600)
        self.realm = realm
        self.nonce: str | None = None
        self.relay: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox = _Inbox()

    async def open(self) -> UdpTurnClient:
        loop = asyncio.get_running_loop()
        local = "::1" if ":" in self.server[0] else "127.0.0.1"
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self.inbox, local_addr=(local, 0))
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def receive(self, timeout: float = 3.0) -> bytes:
        return await asyncio.wait_for(self.inbox.queue.get(), timeout)

    async def request(self, method: int, attributes: Sequence[Attribute] = (), auth: bool = True) -> Message:
        attrs = list(attributes)
        key = None
        if auth and self.nonce is not None:
            attrs += [Username(self.username), Realm(self.realm), Nonce(self.nonce)]
            key = long_term_key(self.username, self.realm, self.password)
        tid = os.urandom(12)
        assert self.transport is not None
        self.transport.sendto(encode_message(Message(method, MessageClass.REQUEST, tid, tuple(attrs)),
                                             integrity_key=key), self.server)
        while True:
            data = await self.receive()
            if data[0] < 0x40:
                response = decode_message(data)
                if response.transaction_id == tid:
                    break
        if auth and error_code(response) in (401, 438) and response.get(Nonce) is not None and key is None:
            self.nonce = response.get(Nonce).text  # type: ignore[union-attr]
            return await self.request(method, attributes)
        return response

    async def allocate(self, ipv6: bool = False) -> Message:
        attributes: list[Attribute] = [RequestedTransport(), Lifetime(600)]
        if ipv6:
            attributes.append(RequestedAddressFamily(AddressFamily.IPV6))
        response = await self.request(Method.ALLOCATE, attributes)
        relayed = response.get(XorRelayedAddress)
        if relayed is not None:
            self.relay = (str(relayed.address), relayed.port)
        return response

    async def create_permission(self, peer: tuple[str, int]) -> Message:
        import ipaddress

        return await self.request(Method.CREATE_PERMISSION, [XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1])])

    async def channel_bind(self, number: int, peer: tuple[str, int]) -> Message:
        import ipaddress

        return await self.request(
            Method.CHANNEL_BIND, [ChannelNumber(number), XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1])]
        )

    def channel_data(self, number: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(number.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload, self.server)
