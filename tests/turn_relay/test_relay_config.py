"""RelayConfig defaults and validation, and the address spelling the core shares with the OS."""

from __future__ import annotations

import ast
import inspect
import socket
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.turn_relay.relay_harness import SECRET, make_config, make_server
from turn_relay import config as config_module
from turn_relay.addresses import canonical_host, host_text
from turn_relay.config import RelayConfig, RelayConfigError


def test_defaults_follow_rfc_8656() -> None:
    config = RelayConfig(secrets=(SECRET,), relay_addresses=("192.0.2.1",)).validate()
    assert (config.default_lifetime, config.max_lifetime) == (600, 3600)
    assert (config.permission_lifetime, config.channel_lifetime) == (300, 600)
    assert config.software is None and config.allow_unencrypted is False and config.allow_peer == ()


def test_every_field_has_a_docstring() -> None:
    tree = ast.parse(inspect.getsource(config_module))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RelayConfig").body
    fields = [i for i, node in enumerate(body) if isinstance(node, ast.AnnAssign)]
    assert len(fields) == len(RelayConfig.__dataclass_fields__)
    for i in fields:
        following = body[i + 1]
        assert isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant), ast.dump(body[i])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"secrets": ()}, "secrets"),
        ({"secrets": (b"",)}, "secrets"),
        ({"relay_addresses": ()}, "relay_addresses"),
        ({"relay_addresses": ("0.0.0.0",)}, "relay_addresses"),
        ({"relay_addresses": ("192.0.2.1", "192.0.2.2")}, "relay_addresses"),
        ({"relay_addresses": ("relay.example",)}, "relay_addresses"),
        ({"listen_addresses": ("nope",)}, "listen_addresses"),
        ({"realm": ""}, "realm"),
        ({"allow_peer": ("10.0.0.1/8",)}, "allow_peer"),
        ({"default_lifetime": 4000}, "default_lifetime"),
        ({"permission_lifetime": 0}, "permission_lifetime"),
        ({"min_port": 80}, "min_port"),
        ({"min_port": 60000, "max_port": 50000}, "min_port"),
        ({"max_allocations": 0}, "max_allocations"),
        ({"unauthenticated_burst": 0.5}, "unauthenticated_burst"),
        ({"bandwidth_limit": 100}, "bandwidth_limit"),
        ({"software": ""}, "software"),
        ({"auth_block_time": -1}, "auth_block_time"),
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(RelayConfigError, match=field):
        make_config(**overrides).validate()
    with pytest.raises(RelayConfigError):
        make_server(**overrides)


def test_valid_settings_pass() -> None:
    config = make_config(allow_peer=("10.0.0.0/8", "fd00::/8"), listen_addresses=("192.0.2.9",), bandwidth_limit=None)
    assert config.validate() is config


@pytest.mark.parametrize(
    "text",
    [
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "::ffff:0.0.0.0",
        "::0.1.0.0",
        "::102",
        "::ffff:0:1.2.3.4",
        "2001:DB8:0:0:1::1",
        "::",
    ],
)
def test_host_spelling_matches_inet_ntop(text: str) -> None:
    assert canonical_host(text) == socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**128 - 1), st.sampled_from([0, 96, 112, 120, 124]))
def test_host_spelling_matches_inet_ntop_everywhere(value: int, zero_bits: int) -> None:
    value &= (1 << 128) - 1 - (((1 << zero_bits) - 1) << (128 - zero_bits))  # many leading zeros
    if zero_bits == 112:
        value |= 0xFFFF << 32  # and IPv4-mapped ones
    packed = value.to_bytes(16, "big")
    assert host_text(IPv6Address(packed)) == socket.inet_ntop(socket.AF_INET6, packed)
