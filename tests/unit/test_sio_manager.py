"""signaling/sio_manager.py: python-socketio's manager bookkeeping, with a disconnect that does not scan every room."""

from __future__ import annotations

import asyncio

import pytest
import socketio
from socketio import packet as sio_packet

from signaling.sio_manager import JsonPacket, LocalManager, SocketIOServer


async def _connected(manager: socketio.AsyncManager, count: int) -> list[str]:
    socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)  # the manager needs its server
    sids = []
    for i in range(count):
        sid = await manager.connect(f"eio{i}", "/")
        await manager.enter_room(sid, "/", f"peer:{i}")
        sids.append(sid)
    return sids


def _state(manager: socketio.AsyncManager) -> dict[str, object]:
    """The manager's bookkeeping, with python-socketio's random sids replaced by their eio sids."""
    rooms = {
        namespace: {room if room is None or room.startswith("peer:") else "own": sorted(members.values())
                    for room, members in table.items()}
        for namespace, table in manager.rooms.items()
    }
    return {"rooms": rooms, "callbacks": manager.callbacks, "pending_connect": manager.pending_connect,
            "pending_disconnect": manager.pending_disconnect}


async def test_it_keeps_the_same_rooms_as_python_socketios_own_manager() -> None:
    ours, stock = LocalManager(), socketio.AsyncManager()
    for manager in (ours, stock):
        sids = await _connected(manager, 6)
        await manager.enter_room(sids[0], "/", "shared")
        await manager.enter_room(sids[1], "/", "shared")
        await manager.leave_room(sids[2], "/", "peer:2")
        manager.pre_disconnect(sids[3], "/")
        for sid in (sids[0], sids[2], sids[3], sids[5]):
            await manager.disconnect(sid, "/")
        assert sorted(manager.get_rooms(sids[1], "/"), key=str) == sorted([sids[1], "peer:1", "shared"])
        assert manager.get_rooms(sids[0], "/") == []
    assert _state(ours) == _state(stock)
    for sid in [sid for sid, _ in ours.get_participants("/", None)]:
        await ours.disconnect(sid, "/")
    assert ours.rooms == {} and ours._rooms_of == {}


class _ScanCountingTable(dict):  # type: ignore[type-arg]
    """A namespace's room table that counts how often it is scanned whole (copied or iterated)."""

    scans = 0

    def copy(self) -> dict:  # type: ignore[type-arg]
        self.scans += 1
        return dict(self)

    def items(self):  # type: ignore[no-untyped-def]
        self.scans += 1
        return super().items()

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.scans += 1
        return super().__iter__()


async def test_a_disconnect_never_scans_every_room() -> None:
    """Every connection is a room of its own, so a disconnect that scans the room table costs
    O(connections) and a node restart with 10,000 connections O(n²) (14 s of blocked loop measured with
    python-socketio's own manager, 0.05 s with ours). Counted, not timed: ours leaves exactly the
    connection's rooms; python-socketio's own manager, the reference, scans on every disconnect."""
    for manager, scans_per_disconnect in ((LocalManager(), 0), (socketio.AsyncManager(), 1)):
        sids = await _connected(manager, 200)
        table = manager.rooms["/"] = _ScanCountingTable(manager.rooms["/"])
        for sid in sids:
            await manager.disconnect(sid, "/")
        assert table.scans == scans_per_disconnect * len(sids), type(manager).__name__
        assert not table


async def test_a_room_of_one_connected_member_is_found_here() -> None:
    manager = LocalManager()
    sids = await _connected(manager, 2)
    assert manager.connected_member("peer:0") == sids[0]
    assert manager.connected_member("peer:9") is None
    await manager.enter_room(sids[1], "/", "peer:0")
    assert manager.connected_member("peer:0") is None  # two members: not a room of one connection
    manager.pre_disconnect(sids[1], "/")
    assert manager.connected_member("peer:1") is None  # leaving


class _FakeSocket:
    def __init__(self, sid: str, *, closed: bool = False, overdue: bool = False) -> None:
        self.sid, self.closed, self.closing, self.overdue, self.checked = sid, closed, False, overdue, 0

    async def check_ping_timeout(self) -> bool:
        self.checked += 1
        if self.overdue:
            self.closed = True
            return False
        return True


async def test_the_client_monitor_closes_overdue_sockets_and_forgets_closed_ones() -> None:
    server = SocketIOServer(async_mode="aiohttp", ping_timeout=1).eio
    sockets = {"ok": _FakeSocket("ok"), "late": _FakeSocket("late", overdue=True),
               "gone": _FakeSocket("gone", closed=True)}
    server.sockets = dict(sockets)
    task = asyncio.create_task(server._service_task())
    await asyncio.sleep(0.5)  # a pass every ping_timeout / 5 s at most
    assert sockets["ok"].checked >= 1 and sockets["late"].closed and "gone" not in server.sockets
    server.service_task_event.set()
    await asyncio.wait_for(task, 2)


def test_packets_carry_sdp_and_any_typed_name_intact_as_compact_json() -> None:
    data = ["offer", {"to": "p1", "sdp": "v=0\r\na=ice-pwd:x\r\n", "name": "Zoë 🙂 \"Ann\" \\ </script>"}]
    encoded = JsonPacket(sio_packet.EVENT, data=data, namespace="/").encode()
    assert encoded.startswith('2["offer",{"to":"p1",') and ", " not in encoded  # compact, as python-socketio's
    decoded = JsonPacket(encoded_packet=encoded)
    assert decoded.packet_type == sio_packet.EVENT and decoded.data == data


@pytest.mark.parametrize("frame", ['2["offer",{"to":"p1","n":NaN}]', '2["offer",Infinity]', '2["x","\\ud800"]',
                                   '2["offer",{"to":', "2[1,2"])
def test_packets_that_are_not_strict_json_are_malformed(frame: str) -> None:
    with pytest.raises(ValueError):
        JsonPacket(encoded_packet=frame)


async def test_the_engineio_server_it_builds_writes_to_websockets_directly_and_uncompressed() -> None:
    """The two overrides that hang on python-engineio's internals still take: a socket python-engineio
    creates (engineio.async_socket.AsyncSocket, stored in `sockets` before first use) becomes one that
    writes straight to its WebSocket, and the WebSocket driver is ours."""
    from engineio import async_socket

    from signaling.sio_manager import _DirectSocket, _UncompressedWebSocket

    sio = SocketIOServer(async_mode="aiohttp")
    eio = sio.eio
    eio.sockets["a"] = async_socket.AsyncSocket(eio, "a")
    assert type(eio.sockets["a"]) is _DirectSocket
    assert eio._async["websocket"] is _UncompressedWebSocket
    stock = socketio.AsyncServer(async_mode="aiohttp").eio  # python-socketio's own is left alone
    assert stock._async["websocket"] is not _UncompressedWebSocket and type(stock.sockets) is dict
