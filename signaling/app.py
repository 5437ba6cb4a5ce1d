"""`create_app(settings, store)`: the signaling aiohttp application (pages, Socket.IO, health)."""

from __future__ import annotations

import socketio
from aiohttp import web

from metadata_store import MetadataStore
from signaling import keys
from signaling.http import SOCKET_IO_CLIENT, add_routes, private_access_log, security_headers
from signaling.rooms import RoomRegistry
from signaling.settings import SignalingSettings
from signaling.sio import SignalingService


class ClientMissing(RuntimeError):
    """The browser client's npm packages are not installed."""


def create_app(settings: SignalingSettings, store: MetadataStore) -> web.Application:
    """Build the app. The caller owns `store` (opens it before and closes it after)."""
    if not (settings.client_dir / SOCKET_IO_CLIENT).is_file():
        raise ClientMissing(
            f"{settings.client_dir / SOCKET_IO_CLIENT} is missing: run `npm ci` in {settings.client_dir}"
        )
    app = web.Application(middlewares=[private_access_log, security_headers], client_max_size=64 * 1024)
    rooms = RoomRegistry(settings.room_capacity)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        max_http_buffer_size=settings.max_message_bytes,
        cors_allowed_origins=None,  # same origin only
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    app[keys.SETTINGS] = settings
    app[keys.STORE] = store
    app[keys.ROOMS] = rooms
    service = SignalingService(sio, rooms, store, settings)
    app[keys.SERVICE] = service

    async def close_connections(app: web.Application) -> None:
        await service.disconnect_all()
        await sio.shutdown()

    app.on_shutdown.append(close_connections)
    add_routes(app, settings.client_dir)
    return app
