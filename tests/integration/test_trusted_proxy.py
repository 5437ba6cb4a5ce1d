"""Behind a trusted reverse proxy the session row records the visitor's address, not the proxy's."""

from __future__ import annotations

from pathlib import Path

import pytest
import socketio

from kijkmee.config import ServeConfig
from kijkmee.serve import running
from kijkmee.storage import open_store
from tests.integration.sio_helpers import create_room

VISITOR = "203.0.113.7"


@pytest.mark.parametrize(("trusted", "recorded"), [(("127.0.0.1/32",), VISITOR), ((), "127.0.0.1")],
                         ids=["from-a-trusted-proxy", "header-ignored-without-trusted-proxies"])
async def test_the_session_row_holds_the_address_the_proxy_saw(
    tmp_path: Path, trusted: tuple[str, ...], recorded: str
) -> None:
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "data", seat_grace_seconds=0,
                         trusted_proxies=trusted).validate()
    async with running(config, say=False) as server:
        room = await create_room(server.url)
        client = socketio.AsyncClient(ssl_verify=False, reconnection=False)
        # What nginx sends (deploy/nginx/kijkmee.conf: proxy_set_header X-Forwarded-For $remote_addr).
        await client.connect(server.url, transports=["websocket"], headers={"X-Forwarded-For": VISITOR})
        try:
            assert (await client.call("join", {"room": room}, timeout=10))["ok"]
        finally:
            await client.eio.disconnect(abort=True)
        store = await open_store(config)
        try:
            [session] = await store.list_sessions()
            assert session.ip == recorded
        finally:
            await store.close()
