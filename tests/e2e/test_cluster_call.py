"""A three-person call in Chromium across two `kijkmee serve` nodes sharing Redis and PostgreSQL.

Inside the test's network namespace (only loopback) the machine's services are out of reach over TCP,
so this module starts its own redis-server in the namespace and reaches the machine's PostgreSQL
through its Unix socket (/var/run/postgresql), which works across network namespaces.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest
import redis
from playwright.sync_api import Browser, expect

from tests.conftest import IN_CI, free_port
from tests.e2e.conftest import ARTIFACTS, People, ServeProcess, start_serve, stop_serve
from tests.e2e.test_browser_call import assert_media_rising, join, start_call, wait_for_media_from, wait_state

pytestmark = pytest.mark.netns

PG_SOCKET_DIR = "/var/run/postgresql"
T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code (in a thread: Playwright's sync API owns this one's loop)."""
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own inside the namespace, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed (Debian package redis-server)")
    assert binary is not None
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, over its Unix socket; dropped afterwards."""
    admin_dsn = f"postgresql://postgres@/postgres?host={PG_SOCKET_DIR}"
    name = f"kijkmee_test_{uuid.uuid4().hex}"

    async def run(statement: str) -> None:
        db = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await db.execute(statement)
        finally:
            await db.close()

    try:
        _run(run(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        _unavailable(f"PostgreSQL not reachable through {PG_SOCKET_DIR} ({type(error).__name__}: {error})")
    try:
        yield f"postgresql://postgres@/{name}?host={PG_SOCKET_DIR}"
    finally:
        _run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Nodes:
    a: ServeProcess
    b: ServeProcess
    database: str


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, redis_url: str, database: str) -> Iterator[Nodes]:
    folder = tmp_path_factory.mktemp("cluster")
    extra = ["--redis", redis_url, "--database-url", database, "--key-dir", str(folder / "keys")]
    a = start_serve(folder / "a", *extra)  # first: it makes the key the second one uses
    try:
        b = start_serve(folder / "b", *extra)
        try:
            yield Nodes(a, b, database)
        finally:
            stop_serve(b)
    finally:
        stop_serve(a)


def session_rows(dsn: str) -> list[tuple[str, bool]]:
    async def fetch() -> list[tuple[str, bool]]:
        db = await asyncpg.connect(dsn)
        try:
            rows = await db.fetch("SELECT room_id, left_at IS NOT NULL AS closed FROM sessions ORDER BY id")
        finally:
            await db.close()
        return [(r["room_id"], r["closed"]) for r in rows]

    return _run(fetch())


def test_two_people_on_one_node_and_one_on_the_other_hold_a_three_way_call(nodes: Nodes, browser: Browser) -> None:
    people = People(browser)
    try:
        anna = people.open(nodes.a.url)
        url_a = start_call(anna, nodes.a.url)
        url_b = url_a.replace(nodes.a.url, nodes.b.url, 1)
        assert url_b != url_a
        anna.goto(url_a)
        join(anna, "Anna")
        wait_state(anna, "in-call")
        bram, carla = people.open(url_a), people.open(url_b)  # Carla's load balancer sent her to node B
        join(bram, "Bram")
        join(carla, "Carla")
        for page in (anna, bram, carla):
            wait_state(page, "in-call")
            stats = wait_for_media_from(page, 2)
            assert all(peer["connection"] == "connected" for peer in stats.values())
            assert_media_rising(page, stats)
            expect(page.locator("#tiles .tile")).to_have_count(3)
        expect(carla.locator(".tile:not(.self)")).to_contain_text(["Anna", "Bram"])
        expect(anna.locator(".tile:not(.self)")).to_contain_text(["Bram", "Carla"])
        ARTIFACTS.mkdir(exist_ok=True)
        carla.screenshot(path=str(ARTIFACTS / "call-3way-two-nodes.png"))

        # Carla (node B) leaves: the two on node A see it.
        carla.click("#leave")
        wait_state(carla, "left")
        expect(anna.locator("#tiles .tile")).to_have_count(2)
        expect(bram.locator("#tiles .tile")).to_have_count(2)
        for page in (anna, bram):
            page.click("#leave")
            wait_state(page, "left")
    finally:
        people.close()
    room_id = url_a.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while (rows := session_rows(nodes.database)) != [(room_id, True)] * 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rows == [(room_id, True)] * 3  # one shared database: one row per person, whichever node
    for node in (nodes.a, nodes.b):
        logs = node.logs()
        for secret in ("127.0.0.1", "Anna", "Bram", "Carla", room_id):
            assert secret not in logs
