"""The controller REST API under /api/v1: call links for a controller's own systems.

Every request but the OpenAPI document needs `Authorization: Bearer kmk_<id>_<secret>`, a key made with
`kijkmee admin apikey create` (kept only as a hash). A key sees and changes only its own controller's
rooms. Errors are JSON `{error, message}` with a plain sentence; bad input is a 4xx, never a 500.
Room links hold no personal data, so nothing here is personal data either.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from metadata_store.exports import iso
from metadata_store.service import DataHandling
from metadata_store.store import ASK_CHOICES, ApiKeyRecord, Conflict, NotFound, RoomOptions, RoomRecord, StoreError
from signaling import keys
from signaling.admin_api import ADMIN_KEY
from signaling.ratelimit import TokenBucket

log = logging.getLogger("kijkmee.api")

MAX_BODY = 16 * 1024
MAX_EXPIRY_MINUTES = 31 * 24 * 60
MAX_ORIGINS = 10
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
ROOM_FIELDS = frozenset({"expires_in_minutes", "capacity", "relay_only", "ask", "embed_origins"})
BUCKETS_KEY: web.AppKey[dict[str, TokenBucket]] = web.AppKey("api_buckets", dict)
RATE, BURST = 10.0, 50.0

Handler = Callable[[web.Request, ApiKeyRecord], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status,
                             headers={"Cache-Control": "no-store"})


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
ORIGIN_PATTERN = rf"^https://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?/?$"
"""An https origin as browsers send it: host name or IPv4 address, optional port, no path. The OpenAPI
document states this same pattern, so what it allows the server accepts."""
_ORIGIN = re.compile(ORIGIN_PATTERN)


def check_origin(value: object) -> str:
    """The origin in the form browsers send it (lowercase host, no default port, no slash)."""
    if not isinstance(value, str) or len(value) > 200 or _ORIGIN.fullmatch(value) is None:
        raise ApiError(400, "bad-request",
                       f"{str(value)[:80]!r} is not an https origin such as https://shop.example.nl (no path).")
    parts = urlsplit(value)
    host, port = (parts.hostname or "").lower(), parts.port
    return f"https://{host}" + (f":{port}" if port not in (None, 443) else "")


def _whole_number(value: object) -> int | None:
    """JSON's integers: 90 and 90.0 alike (JSON Schema counts both); None for anything else."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def room_options(body: dict[str, Any]) -> tuple[RoomOptions, int]:
    unknown = set(body) - ROOM_FIELDS
    if unknown:
        raise ApiError(400, "bad-request", f"Unknown field(s): {', '.join(sorted(unknown))}.")
    minutes = _whole_number(body.get("expires_in_minutes", 24 * 60))
    if minutes is None or not 1 <= minutes <= MAX_EXPIRY_MINUTES:
        raise ApiError(400, "bad-request", f"expires_in_minutes is a whole number from 1 to {MAX_EXPIRY_MINUTES}.")
    capacity = _whole_number(body.get("capacity", 3))
    if capacity is None or not 1 <= capacity <= 3:
        raise ApiError(400, "bad-request", "capacity is 1, 2 or 3: calls are peer to peer between at most three.")
    relay_only = body.get("relay_only", False)
    if type(relay_only) is not bool:
        raise ApiError(400, "bad-request", "relay_only is true or false.")
    ask = body.get("ask", "name")
    if ask not in ASK_CHOICES:
        raise ApiError(400, "bad-request", "ask is one of: " + ", ".join(ASK_CHOICES) + ".")
    origins = body.get("embed_origins", [])
    if not isinstance(origins, list) or len(origins) > MAX_ORIGINS:
        raise ApiError(400, "bad-request", f"embed_origins is a list of at most {MAX_ORIGINS} https origins.")
    cleaned = tuple(dict.fromkeys(check_origin(o) for o in origins))
    return RoomOptions(capacity=capacity, relay_only=relay_only, ask=ask, embed_origins=cleaned,
                       extend=False), minutes


def room_json(room: RoomRecord, base_url: str, now: dt.datetime) -> dict[str, Any]:
    o = room.options
    return {
        "id": room.id, "url": f"{base_url}/r/{room.id}", "created_at": iso(room.created_at),
        "expires_at": iso(room.expires_at), "active": room.expires_at > now, "capacity": o.capacity,
        "relay_only": o.relay_only, "ask": o.ask, "embed_origins": list(o.embed_origins),
    }


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(400, "too-large", f"The request body is larger than {MAX_BODY} bytes.")
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except ValueError:
        raise ApiError(400, "bad-request", "The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise ApiError(400, "bad-request", "The request body must be a JSON object.")
    return document


def _base_url(request: web.Request) -> str:
    settings = request.app[keys.SETTINGS]
    return (settings.public_url or f"https://{request.host}").rstrip("/")


def authenticated(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def run(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "unauthorized", "Send your API key as: Authorization: Bearer kmk_…")
        key = await request.app[ADMIN_KEY].check_api_key(token.strip())
        if key is None:
            return _error(401, "unauthorized", "This API key is not valid (unknown, revoked, or the service ended).")
        buckets = request.app[BUCKETS_KEY]
        bucket = buckets.get(key.id)
        if bucket is None:
            if len(buckets) > 10_000:
                buckets.clear()
            bucket = buckets[key.id] = TokenBucket(RATE, BURST, time.monotonic())
        if not bucket.allow(time.monotonic()):
            return _error(429, "rate-limited", "Too many requests with this key; slow down and try again.")
        try:
            return await handler(request, key)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message)
        except NotFound:
            return _error(404, "not-found", "There is no such room for this API key.")
        except Conflict as exc:
            return _error(409, "conflict", str(exc))
        except (ValueError, StoreError) as exc:
            return _error(400, "bad-request", str(exc))
        except Exception as exc:  # a bug: answer in JSON, log the type only
            log.error("api handler failed", extra={"error": type(exc).__name__})
            return _error(500, "internal", "Something went wrong on the server.")

    return run


async def create_room(request: web.Request, key: ApiKeyRecord) -> web.StreamResponse:
    options, minutes = room_options(await _json_body(request))
    admin: DataHandling = request.app[ADMIN_KEY]
    now = admin.clock()
    room_id = secrets.token_urlsafe(16)
    await admin.store.create_room(room_id, now, now + dt.timedelta(minutes=minutes), key.controller_id, options)
    room = await admin.store.get_room(room_id)
    assert room is not None
    return web.json_response(room_json(room, _base_url(request), now), status=201,
                             headers={"Cache-Control": "no-store", "Location": f"/api/v1/rooms/{room_id}"})


async def _own_room(request: web.Request, key: ApiKeyRecord) -> RoomRecord:
    room_id = request.match_info["room"]
    if ROOM_ID.fullmatch(room_id) is None:
        raise NotFound()
    room = await request.app[ADMIN_KEY].store.get_room(room_id)
    if room is None or room.controller_id != key.controller_id:
        raise NotFound()
    return room


async def get_room(request: web.Request, key: ApiKeyRecord) -> web.StreamResponse:
    room = await _own_room(request, key)
    return web.json_response(room_json(room, _base_url(request), request.app[ADMIN_KEY].clock()),
                             headers={"Cache-Control": "no-store"})


async def delete_room(request: web.Request, key: ApiKeyRecord) -> web.StreamResponse:
    room = await _own_room(request, key)
    admin = request.app[ADMIN_KEY]
    await admin.store.end_room(room.id, key.controller_id, admin.clock())
    # Whoever is in the call now hears `room-ended` and loses the seat: ended means ended for them too.
    await request.app[keys.SERVICE].end_room(room.id)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document(_base_url(request)))


def openapi_document(server_url: str) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    room_ref = {"$ref": "#/components/schemas/Room"}

    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description}
        if schema is not None:
            out["content"] = {"application/json": {"schema": schema}}
        return out

    errors = {
        "400": answer("Bad input, with a sentence saying what", error),
        "401": answer("Missing, unknown or revoked API key", error),
        "429": answer("Too many requests with this key", error),
    }
    room_id = {"name": "room", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22,64}$"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "kijkmee controller API", "version": "1",
                 "description": "Call links for a controller's own systems. Authenticate with "
                                "`Authorization: Bearer kmk_…` (kijkmee admin apikey create)."},
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "paths": {
            "/api/v1/rooms": {"post": {
                "operationId": "createRoom", "summary": "Make a call link",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RoomRequest"}}}},
                "responses": {"201": answer("The new call link", room_ref), **errors},
            }},
            "/api/v1/rooms/{room}": {
                "get": {"operationId": "getRoom", "summary": "A call link of this controller",
                        "parameters": [room_id],
                        "responses": {"200": answer("The call link", room_ref),
                                      "404": answer("No such room for this key", error), **errors}},
                "delete": {"operationId": "deleteRoom", "summary": "End a call link now",
                           "parameters": [room_id],
                           "responses": {"204": answer("Ended: nobody can join any more, and whoever is in the "
                                                                "call is told so (room-ended) and loses the seat"),
                                         "404": answer("No such room for this key", error), **errors}},
            },
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "additionalProperties": False,
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "RoomRequest": {"type": "object", "additionalProperties": False, "properties": {
                    "expires_in_minutes": {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRY_MINUTES,
                                           "default": 1440},
                    "capacity": {"type": "integer", "minimum": 1, "maximum": 3, "default": 3},
                    "relay_only": {"type": "boolean", "default": False,
                                   "description": "media always via the relay: participants never see each "
                                                  "other's IP address"},
                    "ask": {"enum": list(ASK_CHOICES), "default": "name",
                            "description": "what the join form asks (always optional for the person)"},
                    "embed_origins": {"type": "array", "maxItems": MAX_ORIGINS,
                                      "items": {"type": "string", "maxLength": 200, "pattern": ORIGIN_PATTERN},
                                      "description": "https origins that may show the call in an iframe "
                                                     "(the same origin twice counts once)"},
                }},
                "Room": {"type": "object", "additionalProperties": False, "required": [
                    "id", "url", "created_at", "expires_at", "active", "capacity", "relay_only", "ask",
                    "embed_origins"], "properties": {
                    "id": {"type": "string"}, "url": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"}, "active": {"type": "boolean"},
                    "capacity": {"type": "integer", "minimum": 1, "maximum": 3},
                    "relay_only": {"type": "boolean"}, "ask": {"enum": list(ASK_CHOICES)},
                    "embed_origins": {"type": "array", "items": {"type": "string"}},
                }},
            },
        },
    }


def add_api_routes(app: web.Application) -> None:
    """Needs the admin API's DataHandling on the app (signaling.admin_api.add_admin_routes)."""
    app[BUCKETS_KEY] = {}
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/rooms", authenticated(create_room))
    app.router.add_get("/api/v1/rooms/{room}", authenticated(get_room))
    app.router.add_delete("/api/v1/rooms/{room}", authenticated(delete_room))
