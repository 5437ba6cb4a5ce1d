"""Typed keys for everything stored on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from metadata_store import MetadataStore
from signaling.membership import Membership
from signaling.settings import SignalingSettings

if TYPE_CHECKING:
    from signaling.sio import SignalingService

SETTINGS = web.AppKey("settings", SignalingSettings)
STORE = web.AppKey("store", MetadataStore)
ROOMS: web.AppKey[Membership] = web.AppKey("rooms")
SERVICE: web.AppKey[SignalingService] = web.AppKey("service")
