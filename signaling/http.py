"""HTTP side: pages, static client files, call-link creation, health; security headers and a private access log."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import html
import json
import logging
import re
import secrets
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from metadata_store.store import RoomRecord
from metadata_store.subprocessors import subprocessors_html, subprocessors_json
from signaling import keys
from signaling.ratelimit import AddressLimiter
from signaling.validation import ROOM_ID_RE

access_log = logging.getLogger("kijkmee.access")
log = logging.getLogger("kijkmee.http")

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


CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
COMPRESSIBLE = (".html", ".js", ".css", ".svg", ".json")
STATIC_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Our own scripts and styles change with every deploy and their URLs carry no version: the browser
# keeps them but asks again each time (a 304 when nothing changed). The pages themselves: never kept.
STATIC_CACHE = "no-cache"
VENDOR_CACHE = "max-age=3600"
PAGE_CACHE = "no-store"


@dataclass(frozen=True)
class CachedFile:
    stamp: tuple[int, int]
    """(modification time in ns, size) when read: a change means the file is read again."""
    body: bytes
    gzipped: bytes | None
    """The body gzipped once, for browsers that accept it; None when not worth it."""
    etag: str
    content_type: str


class ClientFiles:
    """The client's files (the folder `root`), served from memory.

    A file is read on first use and again only when its size or modification time changes (an edit
    shows up without a restart): no thread-pool round trips per request, which under load cost more
    than the bytes. Every answer carries an ETag, so a browser's revalidation is a bodiless 304.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[Path, CachedFile] = {}

    def get(self, path: Path) -> CachedFile | None:
        try:
            info = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        stamp = (info.st_mtime_ns, info.st_size)
        cached = self._files.get(path)
        if cached is None or cached.stamp != stamp:
            try:
                body = path.read_bytes()
            except OSError:
                return None
            compress = path.suffix in COMPRESSIBLE and len(body) > 1024
            cached = CachedFile(
                stamp=stamp,
                body=body,
                gzipped=gzip.compress(body, compresslevel=9, mtime=0) if compress else None,
                # Weak: the gzipped and the plain body are the same file to the page.
                etag='W/"' + hashlib.sha256(body).hexdigest()[:32] + '"',
                content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
            )
            self._files[path] = cached
        return cached

    def respond(self, request: web.Request, relative: Path, cache_control: str) -> web.Response:
        """Answer with the file at `relative`: a fixed path, or a folder and a checked name (no `/`, no `..`)."""
        cached = self.get(self.root / relative)
        if cached is None:
            raise web.HTTPNotFound()
        headers = {"ETag": cached.etag, "Cache-Control": cache_control}
        if cached.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
        if _etag_matches(request.headers.get("If-None-Match"), cached.etag):
            return web.Response(status=304, headers=headers)
        body = cached.body
        if cached.gzipped is not None and _accepts_gzip(request.headers.get("Accept-Encoding", "")):
            headers["Content-Encoding"] = "gzip"
            body = cached.gzipped
        headers["Content-Type"] = cached.content_type
        return web.Response(body=body, headers=headers)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _file(files: ClientFiles, relative: Path, cache_control: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        return files.respond(request, relative, cache_control)

    return serve


def content_security_policy(frame_ancestors: tuple[str, ...] = ()) -> str:
    """Our CSP; with `frame_ancestors` (https origins a controller allowed) those may frame the page."""
    if not frame_ancestors:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("frame-ancestors 'none'", "frame-ancestors " + " ".join(frame_ancestors))


ROOM_STATUS_META = b'<meta name="kijkmee-room" content="">'
"""The placeholder in room.html that the page handler fills with the room's status (see _room_page)."""


def room_status_document(room: RoomRecord | None, now: dt.datetime) -> dict[str, Any]:
    """What the call page needs before anyone joins (GET /r/<room>/status, and inside the page itself):
    can the link still be used, and what does the join form ask for. `room` is the store's room or None.
    An unknown and an expired link answer the same, so the answer tells nothing about links one does
    not have."""
    if room is None or room.expires_at <= now:
        return {"state": "expired"}
    options = room.options
    # embedOrigins: the sites that may frame this call (the page's own CSP names them too); the call
    # page talks to an embedding site only when it is among them (client_web/js/embed-bridge.js).
    return {"state": "open", "ask": options.ask, "capacity": options.capacity, "relayOnly": options.relay_only,
            "embedOrigins": list(options.embed_origins)}


def _room_page(files: ClientFiles) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room"]
        if ROOM_ID_RE.fullmatch(room_id) is None:
            raise web.HTTPNotFound(text="This is not a valid call link.")
        origins: tuple[str, ...] = ()
        status: dict[str, Any] | None = None
        try:
            room = await request.app[keys.STORE].get_room(room_id)
            status = room_status_document(room, request.app[keys.SETTINGS].clock())
            if room is not None:
                origins = room.options.embed_origins
        except Exception as exc:  # the page still works (it asks GET /r/<room>/status); it can't be framed
            log.warning("room lookup for the page failed", extra={"error": type(exc).__name__})
        cached = files.get(files.root / "room.html")
        if cached is None:
            raise web.HTTPNotFound()
        body = cached.body
        if status is not None:
            # The room's status travels with the page: the camera can start the moment the page's first
            # script runs, without a request of its own first (client_web/js/early.js).
            meta = f'<meta name="kijkmee-room" content="{html.escape(json.dumps(status), quote=True)}">'
            body = body.replace(ROOM_STATUS_META, meta.encode(), 1)
        headers = {
            "Cache-Control": PAGE_CACHE,
            "Content-Type": cached.content_type,
            # Only the origins the controller named may show this call in an iframe; nobody else may.
            "Content-Security-Policy": content_security_policy(origins),
            "Vary": "Accept-Encoding",
        }
        if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body, compresslevel=6, mtime=0)
        return web.Response(body=body, headers=headers)

    return serve


def _static(files: ClientFiles) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        """`/static/{js,css,img}/<name>`: one file straight inside that folder, nothing else."""
        name = request.match_info["name"]
        if STATIC_NAME_RE.fullmatch(name) is None:
            raise web.HTTPNotFound()
        return files.respond(request, Path(request.match_info["folder"], name), STATIC_CACHE)

    return serve


async def room_status(request: web.Request) -> web.Response:
    """GET /r/<room>/status (room_status_document). The call page carries the same answer inside it;
    this is for a page whose own lookup failed, and for whoever has the link only (the room id is 128
    random bits)."""
    room_id = request.match_info["room"]
    headers = {"Cache-Control": "no-store"}
    if ROOM_ID_RE.fullmatch(room_id) is None:
        return web.json_response({"state": "expired"}, headers=headers)
    room = await request.app[keys.STORE].get_room(room_id)
    return web.json_response(room_status_document(room, request.app[keys.SETTINGS].clock()), headers=headers)


# The pre-join connectivity check hands out relay credentials without a join: a handful per address
# is plenty for a person reloading the page; a scanner gets 429s.
RELAY_CHECK_RATE = 0.2
"""Checks per second an address may start, on average."""
RELAY_CHECK_BURST = 20
"""Checks an address may start at once."""
RELAY_CHECK_CREDENTIAL_SECONDS = 300
"""How long the network check's throwaway relay credentials work: a check takes seconds (the page gives
up after 5), and a credential anyone can fetch from a room page is no free relay for hours."""


def _relay_check(limiter: AddressLimiter) -> Handler:
    async def check(request: web.Request) -> web.Response:
        """GET /r/<room>/check: our relay's URLs with credentials for a throwaway user name, so the call
        page can test, before anyone joins, whether this network reaches the relay over UDP, TCP and TLS.

        Only for a link that still works (unknown, ended and malformed links answer alike), limited per
        client address in memory. Nothing is stored: the user name is random and belongs to no one, and
        the address is only a key in the limiter's table until its bucket refills."""
        headers = {"Cache-Control": "no-store"}
        if not limiter.allow(request.remote or "unknown", time.monotonic()):
            return web.json_response({"error": "rate-limited"}, status=429, headers=headers)
        room_id = request.match_info["room"]
        if ROOM_ID_RE.fullmatch(room_id) is None:
            return web.json_response({"state": "expired"}, status=404, headers=headers)
        settings = request.app[keys.SETTINGS]
        room = await request.app[keys.STORE].get_room(room_id)
        if room is None or room.expires_at <= settings.clock():
            return web.json_response({"state": "expired"}, status=404, headers=headers)
        throwaway = "check-" + secrets.token_urlsafe(12)
        ice_servers = settings.ice_servers(throwaway, ttl=RELAY_CHECK_CREDENTIAL_SECONDS)
        return web.json_response({"iceServers": ice_servers}, headers=headers)

    return check


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
    """Connections on this node and active rooms (of every node when they share Redis). A node that
    cannot reach the shared Redis answers 503, so a load balancer stops sending people to it."""
    service = request.app[keys.SERVICE]
    try:
        rooms, _ = await request.app[keys.ROOMS].counts()
    except Exception as exc:  # the shared Redis is unreachable
        log = logging.getLogger("kijkmee.signaling")
        log.error("health check: seats unreachable", extra={"error": type(exc).__name__})
        return web.json_response({"status": "unavailable", "connections": service.connections}, status=503)
    return web.json_response({"status": "ok", "connections": service.connections, "rooms": rooms})


def add_routes(app: web.Application, client_dir: Path) -> None:
    files = ClientFiles(client_dir)
    app.router.add_get("/", _file(files, Path("index.html"), PAGE_CACHE))
    app.router.add_get("/r/{room}", _room_page(files))
    app.router.add_get("/r/{room}/status", room_status)
    app.router.add_get("/r/{room}/check", _relay_check(AddressLimiter(RELAY_CHECK_RATE, RELAY_CHECK_BURST)))
    app.router.add_post("/rooms", create_room)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/privacy/subprocessors", subprocessors)
    app.router.add_get("/vendor/socket.io.esm.min.js", _file(files, SOCKET_IO_CLIENT, VENDOR_CACHE))
    # The embed script for controllers' own sites (docs/embedding.md): a short, stable address.
    app.router.add_get("/embed.js", _file(files, Path("js/embed.js"), STATIC_CACHE))
    app.router.add_get("/static/{folder:js|css|img}/{name}", _static(files))

