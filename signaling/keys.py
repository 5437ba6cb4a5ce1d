"""Typed keys for everything stored on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from metadata_store import MetadataStore
from signaling.rooms import RoomRegistry
from signaling.settings import SignalingSettings

if TYPE_CHECKING:
    from signaling.sio import SignalingService

SETTINGS = web.AppKey("settings", SignalingSettings)
STORE = web.AppKey("store", MetadataStore)
ROOMS = web.AppKey("rooms", RoomRegistry)
SERVICE: web.AppKey[SignalingService] = web.AppKey("service")
