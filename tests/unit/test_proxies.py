"""The visitor's address behind a trusted reverse proxy (kijkmee/proxies.py)."""

from __future__ import annotations

import pytest

from kijkmee.proxies import client_address, parse_networks

PROXIES = parse_networks(["10.1.0.5", "10.2.0.0/24", "fd00::/8"])


@pytest.mark.parametrize(("remote", "header", "seen"), [
    ("10.1.0.5", "203.0.113.7", "203.0.113.7"),                        # nginx: proxy_set_header ... $remote_addr
    ("10.1.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),          # the visitor's own claim is not believed
    ("10.1.0.5", "203.0.113.7, 10.2.0.9", "203.0.113.7"),              # two proxies of ours in a row
    ("10.1.0.5", "2001:db8::7", "2001:db8::7"),
    ("::ffff:10.1.0.5", "203.0.113.7", "203.0.113.7"),                # the proxy over an IPv4-mapped socket
    ("fd00::1", "203.0.113.7", "203.0.113.7"),
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),                    # not a proxy: the header is ignored
    ("10.1.0.5", None, "10.1.0.5"),
    ("10.1.0.5", "", "10.1.0.5"),
    ("10.1.0.5", "unknown", "10.1.0.5"),                               # malformed where it matters
    ("10.1.0.5", "junk, 203.0.113.7", "203.0.113.7"),                  # left of the first outside hop: ignored
    ("10.1.0.5", "10.2.0.9", "10.1.0.5"),                              # only proxies: nobody else to name
    (None, "203.0.113.7", None),
])
def test_client_address(remote: str | None, header: str | None, seen: str | None) -> None:
    assert client_address(remote, header, PROXIES) == seen


def test_no_trusted_proxies_means_the_header_is_never_read() -> None:
    assert client_address("10.1.0.5", "203.0.113.7", ()) == "10.1.0.5"


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])


def test_a_bad_trusted_proxy_setting_stops_start_up() -> None:
    from kijkmee.config import ConfigError, ServeConfig, load_config

    with pytest.raises(ConfigError, match="trusted_proxies: 'nginx' is not an address or CIDR range"):
        load_config(ServeConfig, env={"KIJKMEE_TRUSTED_PROXIES": "10.1.0.5,nginx"})
    assert load_config(ServeConfig, env={"KIJKMEE_TRUSTED_PROXIES": "10.1.0.5,10.2.0.5"}).trusted_proxies == (
        "10.1.0.5", "10.2.0.5")
