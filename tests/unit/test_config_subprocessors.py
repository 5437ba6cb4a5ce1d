"""The sub-processor list comes from a TOML file named in the config; entries outside the EU stop start-up."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from kijkmee.config import ConfigError, ServeConfig
from kijkmee.storage import register_settings
from metadata_store.register import build_register
from metadata_store.schema import DataClass
from tests.unit.test_register import PROCESSOR

EU = """
[[subprocessors]]
name = "Hosting B.V."
purpose = "server hosting"
country = "NL"
location = "Amsterdam"
data_classes = ["ip", "typed-name"]
since = 2026-01-15
"""


def test_a_listed_eu_subprocessor_reaches_the_config_and_the_register(tmp_path: Path) -> None:
    (tmp_path / "subs.toml").write_text(EU)
    config = ServeConfig(subprocessors_file=tmp_path / "subs.toml").validate()
    [sub] = config.subprocessors()
    assert (sub.name, sub.country, sub.since, sub.data_classes) == (
        "Hosting B.V.", "NL", dt.date(2026, 1, 15), frozenset({DataClass.IP, DataClass.TYPED_NAME}))
    register = build_register(processor=PROCESSOR, controllers=[], settings=register_settings(config))
    assert [s["name"] for s in register["transfers"]["subprocessors"]] == ["Hosting B.V."]


@pytest.mark.parametrize(
    ("text", "message"),
    [(EU.replace('"NL"', '"US"'), "outside the EU"), (EU.replace("since = 2026-01-15\n", ""), "missing key 'since'"),
     ("[[subprocessors]\n", "not valid TOML")],
)
def test_a_bad_list_stops_start_up_with_a_sentence(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "subs.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        ServeConfig(subprocessors_file=tmp_path / "subs.toml").validate()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        ServeConfig(subprocessors_file=tmp_path / "nope.toml").validate()
