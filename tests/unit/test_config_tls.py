"""Configuration loading (file < environment < flags), the TLS policy and the dev certificate."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from kijkmee.cli import main
from kijkmee.config import ConfigError, ServeConfig, load_config
from kijkmee.devcert import ensure_dev_certificate
from kijkmee.tls import TlsPolicy


def test_defaults_are_local_and_safe() -> None:
    config = load_config(ServeConfig)
    assert (config.host, config.port, config.http_port, config.room_capacity) == ("127.0.0.1", 8443, None, 3)
    assert config.base_url() == "https://127.0.0.1:8443"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "kijkmee.toml"
    file.write_text('port = 9000\nhost = "0.0.0.0"\nturn_host = "192.0.2.10"\ndata_dir = "/srv/k"\nroom-capacity = 2\n'
                    '[relay]\nrealm = "x"\n')
    config = load_config(ServeConfig, file=file)
    assert (config.port, config.host, config.data_dir, config.room_capacity) == (9000, "0.0.0.0", Path("/srv/k"), 2)
    assert config.base_url() == "https://localhost:9000"
    config = load_config(ServeConfig, file=file, env={"KIJKMEE_PORT": "9100", "OTHER": "1"})
    assert config.port == 9100
    config = load_config(ServeConfig, file=file, env={"KIJKMEE_PORT": "9100"}, flags={"port": "9200"})
    assert config.port == 9200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env": {"KIJKMEE_PORT": "abc"}}, "KIJKMEE_PORT: 'abc' is not a whole number"),
        ({"flags": {"port": "70000"}}, "port: 70000 is not a port number (0 to 65535)"),
        ({"flags": {"room_capacity": "4"}}, "room_capacity: 4 is not between 1 and 3"),
        ({"flags": {"cert_file": "/nonexistent.pem", "key_file": "/nonexistent.key"}}, "is not a readable file"),
        ({"flags": {"cert_file": "/x.pem"}}, "cert_file and key_file: give both or neither"),
        ({"flags": {"log_level": "loud"}}, "log_level: 'loud' is not debug, info, warning or error"),
        ({"flags": {"public_url": "http://x"}}, "must start with https://"),
        ({"flags": {"host": "0.0.0.0"}}, "turn_host: set the IP address browsers reach the relay on"),
        ({"flags": {"turn_host": "relay.example"}}, "turn_host: 'relay.example' is not an IP address"),
        ({"flags": {"ice_transport_policy": "direct"}}, "is not all or relay"),
    ],
)
def test_bad_values_name_their_source(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ServeConfig, **kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_bad_file_is_explained(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(ServeConfig, file=broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'prot'"):
        load_config(ServeConfig, file=unknown)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(ServeConfig, file=tmp_path / "missing.toml")


def test_cli_reports_config_errors_in_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "x"]) == 2
    assert "configuration error: --port: 'x' is not a whole number" in capsys.readouterr().err


def test_cli_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--http-port", "--data-dir", "--config", "--cert-file", "--public-url"):
        assert flag in text


def test_cli_switches_turn_on_and_off_and_say_their_default(capsys: pytest.CaptureFixture[str]) -> None:
    from kijkmee.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--no-embedded-relay"]).embedded_relay == "false"
    assert parser.parse_args(["serve", "--embedded-relay"]).embedded_relay == "true"
    assert load_config(ServeConfig, flags={"embedded_relay": "false"}).embedded_relay is False
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Run a TURN relay inside this process (off: only turn_servers are handed out). (default: on;" in text
    assert "--redis URL" in text and "--database-url URL" in text


def test_tls_policy_context(tmp_path: Path) -> None:
    cert, key, _created = ensure_dev_certificate(tmp_path, dt.datetime.now(dt.UTC))
    context = TlsPolicy().server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)
    with pytest.raises(ValueError, match=r"TLS 1\.2"):
        TlsPolicy(minimum_version=ssl.TLSVersion.TLSv1_1)


def test_dev_certificate_is_reused_then_renewed(tmp_path: Path) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert, key, created = ensure_dev_certificate(tmp_path, now)
    assert created and oct(key.stat().st_mode & 0o777) == "0o600"
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert ensure_dev_certificate(tmp_path, now + dt.timedelta(days=30))[2] is False
    assert ensure_dev_certificate(tmp_path, now + dt.timedelta(days=85))[2] is True


def test_relay_options_from_the_relay_table_environment_and_flags(tmp_path: Path) -> None:
    from kijkmee.relay import RelayNodeConfig

    file = tmp_path / "kijkmee.toml"
    file.write_text('port = 443\n[relay]\nlisten = ["127.0.0.1:3478", "[::1]:3478"]\nallow_peer = ["10.0.0.0/8"]\n'
                    'allow-unencrypted = true\n')
    config = load_config(RelayNodeConfig, file=file, section="relay", env={"KIJKMEE_RELAY_REALM": "example"},
                         flags={"ports": "50000-50100"})
    assert config.listen == ("127.0.0.1:3478", "[::1]:3478") and config.allow_peer == ("10.0.0.0/8",)
    assert config.allow_unencrypted is True and config.realm == "example" and config.port_range() == (50000, 50100)
    core = config.core_config((b"secret",))
    assert core.relay_addresses == ("127.0.0.1", "::1") and core.legacy_channels
    for flags, message in [({"listen": ["127.0.0.1"]}, "is not IP:PORT"), ({"ports": "9-10"}, "ports:"),
                           ({"tls_listen": ["127.0.0.1:5349"]}, "tls_listen needs cert and key")]:
        with pytest.raises(ConfigError, match=message):
            load_config(RelayNodeConfig, section="relay", flags=flags)


def test_relay_cli_explains_a_missing_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay", "--listen", "127.0.0.1:0"]) == 2
    assert "auth_secret_file" in capsys.readouterr().err
