"""`kijkmee serve`: everything on one machine: HTTPS pages and signaling, the SQLite store, a dev certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from kijkmee.config import ServeConfig
from kijkmee.devcert import ensure_dev_certificate
from kijkmee.tls import TlsPolicy
from metadata_store.sqlite import SQLiteStore
from signaling import SignalingSettings, create_app

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client_web"


@dataclass(frozen=True)
class RunningServer:
    url: str
    port: int
    http_port: int | None


def tls_context(config: ServeConfig, say: bool = True) -> ssl.SSLContext:
    cert, key = config.cert_file, config.key_file
    if cert is None or key is None:
        cert, key, created = ensure_dev_certificate(config.data_dir / "tls", dt.datetime.now(dt.UTC))
        if say:
            verb = "Made" if created else "Using"
            print(f"{verb} a self-signed certificate for localhost in {cert.parent} "
                  "(your browser will warn once; configure cert_file/key_file for real use).", file=sys.stderr)
    return TlsPolicy().server_context(cert, key)


def _redirect_app(https_port: int) -> web.Application:
    async def redirect(request: web.Request) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        port = "" if https_port == 443 else f":{https_port}"
        raise web.HTTPPermanentRedirect(f"https://{host}{port}{request.rel_url}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app


@asynccontextmanager
async def running(config: ServeConfig, say: bool = True) -> AsyncIterator[RunningServer]:
    """Start the server, yield where it listens, stop it cleanly afterwards."""
    context = tls_context(config, say)
    store = await SQLiteStore.open(config.data_dir / "kijkmee.sqlite3")
    runners: list[web.AppRunner] = []
    try:
        settings = SignalingSettings(
            client_dir=CLIENT_DIR,
            public_url=config.public_url,
            room_capacity=config.room_capacity,
            room_ttl=dt.timedelta(hours=config.room_ttl_hours),
        )
        runner = web.AppRunner(create_app(settings, store), access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        port = _bound_port(site)
        http_port = None
        if config.http_port is not None:
            redirect_runner = web.AppRunner(
                _redirect_app(port), access_log=None, handle_signals=False, shutdown_timeout=5
            )
            await redirect_runner.setup()
            runners.append(redirect_runner)
            redirect_site = web.TCPSite(redirect_runner, config.host, config.http_port)
            await redirect_site.start()
            http_port = _bound_port(redirect_site)
        yield RunningServer(url=config.base_url(port), port=port, http_port=http_port)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await store.close()


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the asyncio server here; it is the only way to learn port 0's pick
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError("the listener has no socket")
    return int(sockets[0].getsockname()[1])


async def serve_forever(config: ServeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(config) as server:
        print(f"kijkmee is running. Open {server.url} in your browser.", flush=True)
        if server.http_port is not None:
            print(f"Plain HTTP on port {server.http_port} only redirects to HTTPS.", flush=True)
        await stop.wait()
        print("Stopping.", file=sys.stderr)
