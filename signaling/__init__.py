"""Signaling: HTTPS pages, Socket.IO signaling and (later) the controller API, as one aiohttp app.

Room membership and capacity are plain code (`rooms.py`) that the Socket.IO handlers call.
"""

from signaling.app import create_app
from signaling.settings import SignalingSettings

__all__ = ["SignalingSettings", "create_app"]
