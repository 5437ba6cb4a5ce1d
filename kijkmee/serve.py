"""`kijkmee serve`: everything on one machine: HTTPS pages and signaling, the SQLite store, a dev certificate."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kijkmee.config import ServeConfig
from kijkmee.devcert import ensure_dev_certificate
from kijkmee.fleet import EMBEDDED, RelayFleet, Report
from kijkmee.proxies import forwarded_for_middleware, parse_networks
from kijkmee.relay import RelayNodeConfig, RunningRelay, read_secrets
from kijkmee.relay_nodes import NodeStatus, RelayNodeSpec
from kijkmee.storage import jobs_loop, open_store, processor_info, register_settings
from kijkmee.tls import TlsPolicy
from metadata_store.service import DataHandling
from signaling import SignalingSettings, create_app
from signaling.admin_api import AdminSettings
from signaling.settings import IceServersProvider, credential_ttl
from turn_relay.auth import mint_turn_credentials

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client_web"


@dataclass(frozen=True)
class RunningServer:
    url: str
    port: int
    http_port: int | None
    relay: RunningRelay | None = None
    fleet: RelayFleet | None = None
    """The relay nodes signaling hands out and what it knows of them (with relay_nodes configured)."""


def certificate(config: ServeConfig, say: bool = True) -> tuple[Path, Path]:
    cert, key = config.cert_file, config.key_file
    if cert is None or key is None:
        cert, key, created = ensure_dev_certificate(config.data_dir / "tls", dt.datetime.now(dt.UTC))
        if say:
            verb = "Made" if created else "Using"
            print(f"{verb} a self-signed certificate for localhost in {cert.parent} "
                  "(your browser will warn once; configure cert_file/key_file for real use).", file=sys.stderr)
    return cert, key


def turn_secret_file(config: ServeConfig) -> Path:
    """The configured secrets file, or one random secret made once in the data folder."""
    if config.turn_secret_file is not None:
        return config.turn_secret_file
    path = config.data_dir / "turn-secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def turn_host(config: ServeConfig) -> str:
    """The relay's address in turn: URLs (validate() makes sure one is known for wildcard hosts)."""
    if config.turn_host:
        return config.turn_host
    return "127.0.0.1" if config.host == "localhost" else config.host


def embedded_urls(config: ServeConfig, relay: RunningRelay) -> list[str]:
    """The embedded relay's turn: (UDP, TCP) and turns: URLs."""
    host = turn_host(config)
    shown = f"[{host}]" if ":" in host else host
    port = relay.udp[0][1]
    urls = [f"turn:{shown}:{port}?transport=udp", f"turn:{shown}:{port}?transport=tcp"]
    if relay.tls_addresses:
        urls.append(f"turns:{shown}:{relay.tls_addresses[0][1]}?transport=tcp")
    return urls


def ice_servers_provider(config: ServeConfig, secret: bytes, relay: RunningRelay | None) -> IceServersProvider:
    """Per join: our own relay's turn:/turns: URLs (and configured extra ones) with fresh credentials."""
    urls: list[str] = list(config.turn_servers)
    if relay is not None:
        urls[:0] = embedded_urls(config, relay)
    configured = int(config.turn_credential_hours * 3600)

    def provide(peer_id: str, ttl: int | None = None) -> list[dict[str, Any]]:
        if not urls:
            return []
        username, password = mint_turn_credentials(secret, peer_id, time.time(), credential_ttl(configured, ttl))
        return [{"urls": urls, "username": username, "credential": password}]

    return provide


async def start_fleet(config: ServeConfig, relay: RunningRelay | None) -> RelayFleet | None:
    """With relay_nodes: the poller that picks one healthy, least-loaded node per join (the embedded
    relay, when it runs, is a member read in process). Without: None (the embedded relay only)."""
    if not config.relay_nodes:
        return None
    local: dict[str, tuple[RelayNodeSpec, Callable[[], Report]]] = {}
    if relay is not None:
        embedded = relay

        def embedded_state() -> Report:
            status = NodeStatus.DRAINING if embedded.node.draining else NodeStatus.UP
            return Report(status, len(embedded.server.allocations))

        local[EMBEDDED] = (RelayNodeSpec(EMBEDDED, tuple(embedded_urls(config, relay))), embedded_state)
    fleet = RelayFleet(config.relay_nodes, interval=config.relay_health_seconds, local=local)
    await fleet.start()
    return fleet


async def start_embedded_relay(config: ServeConfig, cert: Path, key: Path) -> RunningRelay | None:
    if not config.embedded_relay:
        return None
    host = turn_host(config)
    wildcard = config.host in ("0.0.0.0", "::")  # noqa: S104 - listen where HTTPS listens
    bind = config.host if wildcard else host
    shown = f"[{bind}]" if ":" in bind else bind
    relay_config = RelayNodeConfig(
        listen=(f"{shown}:{config.turn_port}",),
        tls_listen=(f"{shown}:{config.turns_port}",) if config.turns_port is not None else (),
        cert=cert, key=key, relay_ip=(host,), auth_secret_file=turn_secret_file(config),
        ports=config.relay_ports, allow_peer=config.allow_peer,
    ).validate()
    return await RunningRelay.start(relay_config, tls=TlsPolicy().server_context(cert, key))


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
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = certificate(config, say)
    context = TlsPolicy().server_context(cert, key)
    store = await open_store(config)
    jobs = asyncio.create_task(
        jobs_loop(store, config.retention_days, dt.timedelta(minutes=config.retention_interval_minutes),
                  lambda: dt.datetime.now(dt.UTC)),
        name="kijkmee-jobs",
    )
    runners: list[web.AppRunner] = []
    relay: RunningRelay | None = None
    fleet: RelayFleet | None = None
    try:
        relay = await start_embedded_relay(config, cert, key)
        uses_relays = relay or config.turn_servers or config.relay_nodes
        secret = read_secrets(turn_secret_file(config))[0] if uses_relays else b""
        fleet = await start_fleet(config, relay)
        ttl = int(config.turn_credential_hours * 3600)
        settings = SignalingSettings(
            client_dir=CLIENT_DIR,
            public_url=config.public_url,
            room_capacity=config.room_capacity,
            room_ttl=dt.timedelta(hours=config.room_ttl_hours),
            seat_grace=dt.timedelta(seconds=config.seat_grace_seconds),
            ice_servers=fleet.provider(secret, ttl, config.turn_servers) if fleet is not None
            else ice_servers_provider(config, secret, relay),
            ice_transport_policy=config.ice_transport_policy,
            subprocessors=config.subprocessors(),
            redis_url=config.redis,
            redis_prefix=config.redis_prefix,
        )
        admin = AdminSettings(
            DataHandling(store), processor_info(config), config.retention_days, register_settings(config),
            backup_dir=config.data_dir / "backups",
        )
        app = create_app(settings, store, admin)
        if config.trusted_proxies:  # first, so every handler sees the visitor's address
            app.middlewares.insert(0, forwarded_for_middleware(parse_networks(config.trusted_proxies)))
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=5
        )
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
        yield RunningServer(url=config.base_url(port), port=port, http_port=http_port, relay=relay, fleet=fleet)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        if fleet is not None:
            await fleet.stop()
        if relay is not None:
            await relay.stop()
        jobs.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await jobs
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
        if server.relay is not None:
            where = [f"{h}:{p} (udp, tcp)" for h, p in server.relay.udp]
            where += [f"{h}:{p} (tls)" for h, p in server.relay.tls_addresses]
            print(f"TURN relay on {', '.join(where)}.", flush=True)
        if server.fleet is not None:
            nodes = [f"{view.name} ({view.status.value})" for view in server.fleet.states().values()]
            print(f"Relay nodes handed out: {', '.join(nodes)}.", flush=True)
        await stop.wait()
        print("Stopping.", file=sys.stderr)
