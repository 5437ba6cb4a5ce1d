"""`kijkmee serve` and `kijkmee relay` run on uvloop when it is installed, on asyncio's own loop when not."""

from __future__ import annotations

import asyncio
import sys

import pytest

from kijkmee.cli import fast_loop_factory


def test_without_uvloop_asyncios_own_loop_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert fast_loop_factory() is None


def test_with_uvloop_its_loop_is_used() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = fast_loop_factory()
    assert factory is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
