"""`create_app(settings, store)`: the signaling aiohttp application (pages, Socket.IO, health)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio
from aiohttp import web

from metadata_store import MetadataStore
from signaling import keys
from signaling.admin_api import AdminSettings, add_admin_routes
from signaling.api_v1 import add_api_routes
from signaling.http import SOCKET_IO_CLIENT, add_routes, private_access_log, security_headers
from signaling.membership import LocalMembership, Membership
from signaling.redis_membership import RedisMembership
from signaling.rooms import RoomRegistry
from signaling.settings import SignalingSettings
from signaling.sio import SignalingService
from signaling.sio_manager import JsonPacket, LocalManager, RedisManager, SocketIOServer


class ClientMissing(RuntimeError):
    """The browser client's npm packages are not installed."""


def _same_origin(settings: SignalingSettings) -> Callable[[str | None, dict[str, Any]], bool]:
    """Browsers may open Socket.IO only from our own pages (the iframe of an embed is our page too)."""

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        own = settings.public_url or f"https://{environ.get('HTTP_HOST', '')}"
        return origin is not None and origin.rstrip("/") == own.rstrip("/")

    return allowed


# A connection that went silent (a phone switching from Wi-Fi to mobile data, a cut cable) is noticed by
# both ends within 15 s instead of Engine.IO's default 45 s, well inside the seat grace period, so the page
# reconnects and takes its seat back while it is still held.
PING_INTERVAL_SECONDS = 10
PING_TIMEOUT_SECONDS = 5


def _quiet_logger(name: str) -> logging.Logger:
    """python-socketio's loggers, kept to errors (their info lines name connection ids and payload sizes)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.ERROR)
    return logger


async def _listen_before_serving(sio: socketio.AsyncServer, timeout: float = 5.0) -> None:
    """Subscribe to the nodes' Redis channel now. python-socketio does it only when the first client
    connects, and then in the background: a peer's answer sent from another node meanwhile would be
    lost. (manager_initialized and the manager's pubsub are python-socketio's own attributes.)"""
    if sio.manager_initialized:
        return
    sio.manager_initialized = True
    sio.manager.initialize()
    deadline = asyncio.get_running_loop().time() + timeout
    while not getattr(getattr(sio.manager, "pubsub", None), "subscribed", False):
        if asyncio.get_running_loop().time() > deadline:
            logging.getLogger("kijkmee.signaling").warning("not yet subscribed to the nodes' Redis channel")
            return
        await asyncio.sleep(0.02)


def _seat_maintenance(
    service: SignalingService, rooms: Membership
) -> Callable[[web.Application], AsyncIterator[None]]:
    """With seats in Redis: the heartbeat and sweep task while the app runs, and the connection after."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if not isinstance(rooms, RedisMembership):
            yield
            return
        await rooms.start()
        await _listen_before_serving(service.sio)
        task = asyncio.create_task(service.maintain(), name="kijkmee-seats")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await rooms.close(forget_node=True)  # its seats were held or freed on shutdown

    return context


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
    rooms: Membership
    manager: LocalManager | RedisManager
    if settings.redis_url:
        # Several nodes: seats in Redis, and events to a peer on any node through Redis pub/sub.
        rooms = RedisMembership.from_url(settings.redis_url, settings.redis_prefix, settings.room_capacity)
        manager = RedisManager(settings.redis_url, channel=f"{settings.redis_prefix}socketio",
                               logger=_quiet_logger("kijkmee.socketio.redis"))
    else:
        rooms = LocalMembership(RoomRegistry(settings.room_capacity))
        manager = LocalManager()
    sio = SocketIOServer(
        async_mode="aiohttp",
        client_manager=manager,
        serializer=JsonPacket,
        max_http_buffer_size=settings.max_message_bytes,
        cors_allowed_origins=_same_origin(settings),
        logger=_quiet_logger("kijkmee.socketio"),
        engineio_logger=_quiet_logger("kijkmee.engineio"),
        ping_interval=PING_INTERVAL_SECONDS,
        ping_timeout=PING_TIMEOUT_SECONDS,
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
    app.cleanup_ctx.append(_seat_maintenance(service, rooms))
    add_routes(app, settings.client_dir)
    if admin is not None:
        add_admin_routes(app, admin)
        add_api_routes(app)
    return app
