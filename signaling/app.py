"""`create_app(settings, store)`: the signaling aiohttp application (pages, Socket.IO, health)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from metadata_store import MetadataStore
from signaling import keys
from signaling.admin_api import AdminSettings, add_admin_routes
from signaling.api_v1 import add_api_routes
from signaling.http import SOCKET_IO_CLIENT, add_routes, private_access_log, security_headers
from signaling.rooms import RoomRegistry
from signaling.settings import SignalingSettings
from signaling.sio import SignalingService


class ClientMissing(RuntimeError):
    """The browser client's npm packages are not installed."""


def _same_origin(settings: SignalingSettings) -> Callable[[str | None, dict[str, Any]], bool]:
    """Browsers may open Socket.IO only from our own pages (the iframe of an embed is our page too)."""

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        own = settings.public_url or f"https://{environ.get('HTTP_HOST', '')}"
        return origin is not None and origin.rstrip("/") == own.rstrip("/")

    return allowed


def _quiet_logger(name: str) -> logging.Logger:
    """python-socketio's loggers, kept to errors (their info lines name connection ids and payload sizes)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.ERROR)
    return logger


def create_app(
    settings: SignalingSettings, store: MetadataStore, admin: AdminSettings | None = None
) -> web.Application:
    """Build the app. The caller owns `store` (opens it before and closes it after). With `admin`,
    the admin API (/admin/api) and /metrics are served too."""
    if not (settings.client_dir / SOCKET_IO_CLIENT).is_file():
        raise ClientMissing(
            f"{settings.client_dir / SOCKET_IO_CLIENT} is missing: run `npm ci` in {settings.client_dir}"
        )
    app = web.Application(middlewares=[private_access_log, security_headers], client_max_size=64 * 1024)
    rooms = RoomRegistry(settings.room_capacity)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        max_http_buffer_size=settings.max_message_bytes,
        cors_allowed_origins=_same_origin(settings),
        logger=_quiet_logger("kijkmee.socketio"),
        engineio_logger=_quiet_logger("kijkmee.engineio"),
    )
    sio.attach(app)
    app[keys.SETTINGS] = settings
    app[keys.STORE] = store
    app[keys.ROOMS] = rooms
    service = SignalingService(sio, rooms, store, settings)
    app[keys.SERVICE] = service

    async def close_connections(app: web.Application) -> None:
        await service.disconnect_all()
        await service.release_held_seats()
        await sio.shutdown()

    app.on_shutdown.append(close_connections)
    add_routes(app, settings.client_dir)
    if admin is not None:
        add_admin_routes(app, admin)
        add_api_routes(app)
    return app
