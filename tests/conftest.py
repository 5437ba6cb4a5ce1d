"""Shared fixtures: a real kijkmee server on a loopback port chosen by the OS."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kijkmee.config import ServeConfig
from kijkmee.serve import RunningServer, running

IN_CI = os.environ.get("CI", "").lower() == "true"


def in_private_netns() -> bool:
    """True when the only network interface is loopback (a namespace made for the tests)."""
    # /proc/net/dev follows the caller's namespace (/sys/class/net shows the one sysfs was mounted in).
    try:
        with open("/proc/net/dev", encoding="ascii") as table:
            names = [line.split(":", 1)[0].strip() for line in table.readlines()[2:]]
    except OSError:
        return False
    return names == ["lo"]


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    http_port: int | None = None


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # seat_grace_seconds=0: a disconnect frees the seat at once, as most signaling tests expect;
    # tests/integration/test_rejoin.py covers the grace period.
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "data", seat_grace_seconds=0).validate()
    async with running(config, say=False) as live:
        yield _server(live, config)


def _server(live: RunningServer, config: ServeConfig) -> Server:
    return Server(url=live.url, port=live.port, data_dir=config.data_dir, http_port=live.http_port)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
