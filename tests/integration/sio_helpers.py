"""python-socketio clients speaking our protocol to a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import socketio


async def create_room(base_url: str) -> str:
    """Make a call link the way the home page does."""
    async with aiohttp.ClientSession() as http, http.post(
        f"{base_url}/rooms", headers={"Origin": base_url}, ssl=False
    ) as response:
        assert response.status == 201
        return str((await response.json())["room_id"])


class Participant:
    """A Socket.IO client that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(ssl_verify=False, reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self.changed.set()

    async def connect(self, base_url: str, transport: str = "websocket") -> Participant:
        await self.sio.connect(base_url, transports=[transport], wait_timeout=10)
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def join(self, room: str, name: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"room": room}
        if name is not None:
            payload["name"] = name
        result: dict[str, Any] = await self.call("join", payload)
        return result

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> list[Any]:
        async def until() -> list[Any]:
            while len(self.received(event)) < count:
                self.changed.clear()
                await self.changed.wait()
            return self.received(event)

        return await asyncio.wait_for(until(), timeout)

    async def close(self) -> None:
        if self.sio.connected:
            # abort: a polling client would otherwise wait for its pending long-poll (up to 25 s).
            await self.sio.eio.disconnect(abort=True)
