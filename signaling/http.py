"""HTTP side: pages, static client files, call-link creation, health; security headers and a private access log."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from metadata_store.subprocessors import subprocessors_html, subprocessors_json
from signaling import keys
from signaling.validation import ROOM_ID_RE

access_log = logging.getLogger("kijkmee.access")

SOCKET_IO_CLIENT = Path("node_modules/socket.io-client/dist/socket.io.esm.min.js")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Strict-Transport-Security": "max-age=63072000",
    "Permissions-Policy": (
        "camera=(self), microphone=(self), display-capture=(self), autoplay=(self), fullscreen=(self), "
        "geolocation=(), payment=(), usb=()"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "kijkmee"  # not aiohttp's name and version
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def private_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log method, route template and status: never the client address, the path's room id or the user agent."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "(unmatched)"
        access_log.info(
            "http",
            extra={"method": request.method, "route": route, "status": status,
                   "ms": round((time.monotonic() - started) * 1000, 1)},
        )


def _page(name: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.app[keys.SETTINGS].client_dir / name
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    return serve


async def room_page(request: web.Request) -> web.StreamResponse:
    if ROOM_ID_RE.fullmatch(request.match_info["room"]) is None:
        raise web.HTTPNotFound(text="This is not a valid call link.")
    return await _page("room.html")(request)


async def create_room(request: web.Request) -> web.Response:
    """Make a new call link. Only our own pages may ask (Origin check), so other sites cannot mint links."""
    settings = request.app[keys.SETTINGS]
    origin = request.headers.get("Origin")
    own_origin = settings.public_url or f"https://{request.host}"
    if origin is not None and origin.rstrip("/") != own_origin.rstrip("/"):
        raise web.HTTPForbidden(text="Call links can only be made from this site.")
    now = settings.clock()
    room_id = secrets.token_urlsafe(16)  # 128 random bits
    await request.app[keys.STORE].create_room(room_id, now, now + settings.room_ttl)
    url = f"{own_origin.rstrip('/')}/r/{room_id}"
    return web.json_response({"room_id": room_id, "url": url}, status=201, headers={"Cache-Control": "no-store"})


PRIVACY_PAGE = """<!doctype html>
<html lang="nl"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>kijkmee: subverwerkers (sub-processors)</title><link rel="stylesheet" href="/static/css/app.css"></head>
<body><main class="privacy">{body}<p><a href="/privacy/subprocessors?format=json">JSON</a></p></main></body></html>
"""


async def subprocessors(request: web.Request) -> web.Response:
    """The sub-processor list (article 4): HTML for people, JSON for machines (?format=json or Accept)."""
    subs = request.app[keys.SETTINGS].subprocessors
    wants_json = request.query.get("format") == "json" or "application/json" in request.headers.get("Accept", "")
    if wants_json:
        return web.json_response(subprocessors_json(subs))
    return web.Response(text=PRIVACY_PAGE.format(body=subprocessors_html(subs)), content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    service = request.app[keys.SERVICE]
    return web.json_response(
        {"status": "ok", "connections": service.connections, "rooms": request.app[keys.ROOMS].active_rooms}
    )


async def socket_io_client(request: web.Request) -> web.StreamResponse:
    path = request.app[keys.SETTINGS].client_dir / SOCKET_IO_CLIENT
    return web.FileResponse(path, headers={"Content-Type": "text/javascript", "Cache-Control": "max-age=3600"})


def add_routes(app: web.Application, client_dir: Path) -> None:
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/r/{room}", room_page)
    app.router.add_post("/rooms", create_room)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/privacy/subprocessors", subprocessors)
    app.router.add_get("/vendor/socket.io.esm.min.js", socket_io_client)
    for folder in ("js", "css", "img"):
        if (client_dir / folder).is_dir():
            app.router.add_static(f"/static/{folder}", client_dir / folder, append_version=False)

