"""Schemathesis against the controller API of a real `kijkmee serve`: whatever the OpenAPI document
allows (and what it does not), the server answers as the document says, and never with a 500."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from kijkmee.config import ServeConfig
from kijkmee.serve import running
from kijkmee.storage import open_store
from metadata_store.service import DataHandling
from signaling import api_v1

# The test server has a self-signed certificate; schemathesis calls it without checking that.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

schema = schemathesis.openapi.from_dict(api_v1.openapi_document("https://127.0.0.1"))


@dataclass
class LiveApi:
    url: str
    key: str


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The server in a thread of its own (schemathesis calls it synchronously), with one API key."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=data_dir).validate()
    ready: dict[str, str] = {}
    started, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        store = await open_store(config)
        try:
            await store.ensure_controller("acme", "Acme", dt.datetime.now(dt.UTC))
            _, ready["key"] = await DataHandling(store).create_api_key("acme", "schemathesis", "setup")
        finally:
            await store.close()
        async with running(config, say=False) as live:
            ready["url"] = live.url
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by the fixture
            failure.append(exc)
            started.set()

    previous = api_v1.RATE, api_v1.BURST
    api_v1.RATE, api_v1.BURST = 10_000.0, 10_000.0  # the generated requests come fast; limits have their own test
    thread = threading.Thread(target=run, name="kijkmee-serve", daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the server did not start"
        if failure:
            raise failure[0]
        yield LiveApi(ready["url"], ready["key"])
    finally:
        stop.set()
        thread.join(30)
        api_v1.RATE, api_v1.BURST = previous


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_behaves_as_its_openapi_document_says(case: schemathesis.Case, live_api: LiveApi) -> None:
    case.call_and_validate(
        base_url=live_api.url, headers={"Authorization": f"Bearer {live_api.key}"}, verify=False
    )
