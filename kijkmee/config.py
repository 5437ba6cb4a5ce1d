"""Configuration for `kijkmee serve`: defaults < TOML file < KIJKMEE_* environment < command-line flags.

Every option is a field of a frozen dataclass with a docstring; the same field name is the TOML key,
the flag (`--data-dir`) and the environment variable (`KIJKMEE_DATA_DIR`). Values are checked once,
at start-up, and a bad one stops the program with a sentence that names where it came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kijkmee.relay_nodes import RelayNodeSpec, parse_relay_node
from metadata_store.crypto import default_key_folder
from metadata_store.subprocessors import SubProcessor, SubprocessorRefused, subprocessors_from_config

ENV_PREFIX = "KIJKMEE_"


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range; the message says which and where."""


@dataclass(frozen=True)
class ServeConfig:
    """Settings of `kijkmee serve` (HTTPS pages, signaling and the metadata store on one machine)."""

    host: str = "127.0.0.1"
    """Address the HTTPS listener binds to (127.0.0.1 keeps it on this machine)."""

    port: int = 8443
    """HTTPS port. 0 lets the system pick a free one (used by tests)."""

    http_port: int | None = None
    """Optional plain-HTTP port that only redirects to HTTPS. Off when not set."""

    data_dir: Path = Path("kijkmee-data")
    """Folder for the SQLite database and the development certificate."""

    cert_file: Path | None = None
    """PEM certificate chain for HTTPS. Without it a self-signed localhost certificate is made."""

    key_file: Path | None = None
    """PEM private key belonging to cert_file."""

    public_url: str | None = None
    """Base URL people use to reach this server, for call links (e.g. https://call.example.nl).
    Without it, links use the address the visitor typed."""

    room_capacity: int = 3
    """Most people in one call (1 to 3: calls are a peer-to-peer mesh)."""

    room_ttl_hours: float = 24.0
    """How long a call link stays valid after it was created or last used."""

    seat_grace_seconds: float = 30.0
    """How long a seat stays held after an unexpected disconnect (a reload, a network switch), so the
    same person rejoins the same call; 0 frees it at once. An explicit leave always frees it."""

    log_level: str = "info"
    """debug, info, warning or error. Logs never hold IP addresses, names, SDP or user agents."""

    database_url: str | None = None
    """PostgreSQL for the metadata store (postgresql://user@host/db?sslmode=verify-full); several
    nodes share one. Give it as KIJKMEE_DATABASE_URL rather than a flag, so no password shows in
    `ps`. Not set: SQLite in data_dir."""

    redis: str | None = None
    """Redis shared by several `kijkmee serve` nodes behind one load balancer: seats of every call and
    the events between nodes (redis://127.0.0.1:6379/0; rediss:// for TLS, needed for any host but this
    machine). Needs database_url (one database for all nodes). Give it as KIJKMEE_REDIS if it holds a
    password. Not set: this node alone."""

    redis_prefix: str = "kijkmee:"
    """Prefix of kijkmee's Redis keys and pub/sub channel (several installations can share one Redis)."""

    key_dir: Path | None = None
    """Folder of the per-controller data keys that encrypt IPs and typed values. Keep it apart from
    the database and out of its backups (destroying a key makes that controller's backups unreadable).
    Every node sharing a database needs the same keys. Default: beside data_dir, named data_dir-keys
    (kijkmee-data-keys), so a copy of the data folder never holds them."""

    retention_days: int = 90
    """Days after which a session's IP and typed values are deleted and only anonymous telemetry
    stays (1 to 90; never more than 3 calendar months, whatever is set)."""

    retention_interval_minutes: float = 60.0
    """How often serve runs the retention and offboarding jobs."""

    processor_name: str = "kijkmee (processor not configured)"
    """The processor's legal name, as the register of processing and breach notifications show it."""

    processor_address: str = "not configured"
    """The processor's postal address (register of processing, breach notifications)."""

    processor_registration: str = "not configured"
    """The processor's Chamber of Commerce (KvK) number."""

    privacy_contact: str = "privacy@localhost"
    """E-mail address for privacy matters, named in the register and in breach notifications."""

    subprocessors_file: Path | None = None
    """TOML file with the sub-processors ([[subprocessors]] tables: name, purpose, country, data_classes,
    since, location), shown at /privacy/subprocessors and in the register. Default: none (own servers).
    Entries outside the EU are refused (agreement art. 4.3)."""

    embedded_relay: bool = True
    """Run a TURN relay inside this process (off: only turn_servers are handed out)."""

    turn_port: int = 3478
    """UDP and TCP port of the embedded TURN relay (0: the system picks one)."""

    turns_port: int | None = 5349
    """TURN-over-TLS port of the embedded relay, with the HTTPS certificate (0: the system picks one)."""

    turn_host: str | None = None
    """IP address peers and browsers reach the relay on; default: host (or 127.0.0.1 for 0.0.0.0)."""

    turn_secret_file: Path | None = None
    """TURN REST shared secrets, one a line (share it with external relays or coturn). Default: a
    random secret made in the data folder."""

    turn_servers: tuple[str, ...] = ()
    """Extra relay URLs handed to browsers (turn:/turns:, e.g. coturn nodes with the same secret)."""

    relay_nodes: tuple[RelayNodeSpec, ...] = ()
    """Relay nodes (ours or coturn, all with turn_secret_file's secret); each join gets the URLs of ONE
    healthy, least-loaded node, never a draining one. TOML: [[relay_nodes]] tables with name, urls and
    optionally health_url (our relay's http(s)://HOST:PORT/healthz), metrics_url, ca_file. Flag/env:
    "name=NAME turn:HOST:PORT?transport=udp turns:HOST:PORT [health=URL] [metrics=URL] [ca=FILE]". The
    embedded relay, when on, is one of them ("embedded"). Not set: the embedded relay only."""

    relay_health_seconds: float = 3.0
    """How often signaling checks each relay node's health and load (relay_nodes)."""

    turn_credential_hours: float = 4.0
    """How long the TURN credentials handed out on join stay valid."""

    relay_ports: str = "49152-65535"
    """LOW-HIGH range of the embedded relay's relayed ports."""

    allow_peer: tuple[str, ...] = ()
    """CIDR ranges the embedded relay may reach although denied by default (tests: 127.0.0.1/32)."""

    ice_transport_policy: str = "all"
    """'all': direct where possible, relay when needed. 'relay': always through the relay."""

    trusted_proxies: tuple[str, ...] = ()
    """Addresses/CIDR ranges of reverse proxies in front of this node (deploy/README.md): from them the
    visitor's address is read from X-Forwarded-For (for the session row and per-address limits). Not
    set: the header is ignored."""

    def validate(self) -> ServeConfig:
        """Raise ConfigError for a value that cannot work; return self so calls can chain."""
        _check_port("port", self.port, allow_zero=True)
        if self.http_port is not None:
            _check_port("http_port", self.http_port, allow_zero=True)
        if not self.host:
            raise ConfigError("host: must not be empty")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("cert_file and key_file: give both or neither")
        for name in ("cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"{name}: {path} is not a readable file")
        if not 1 <= self.room_capacity <= 3:
            raise ConfigError(f"room_capacity: {self.room_capacity} is not between 1 and 3")
        if not 0 < self.room_ttl_hours <= 24 * 31:
            raise ConfigError(f"room_ttl_hours: {self.room_ttl_hours} is not between 0 and 744")
        if not 0 <= self.seat_grace_seconds <= 600:
            raise ConfigError(f"seat_grace_seconds: {self.seat_grace_seconds} is not between 0 and 600")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: {self.log_level!r} is not debug, info, warning or error")
        _check_port("turn_port", self.turn_port, allow_zero=True)
        if self.turns_port is not None:
            _check_port("turns_port", self.turns_port, allow_zero=True)
        if self.database_url is not None:
            _check_database_url(self.database_url)
        if self.redis is not None:
            _check_redis_url(self.redis, self.database_url)
        if not self.redis_prefix or len(self.redis_prefix) > 64 or any(c.isspace() for c in self.redis_prefix):
            raise ConfigError(f"redis_prefix: {self.redis_prefix!r} must be 1 to 64 characters without spaces")
        if self.subprocessors_file is not None:
            self.subprocessors()
        if not 1 <= self.retention_days <= 90:
            raise ConfigError(
                f"retention_days: {self.retention_days} is not between 1 and 90 (the agreement allows at most 3 months)"
            )
        if not 1 <= self.retention_interval_minutes <= 24 * 60:
            raise ConfigError(
                f"retention_interval_minutes: {self.retention_interval_minutes} is not between 1 and 1440"
            )
        if self.embedded_relay and self.turn_host is None and self.host in ("0.0.0.0", "::"):  # noqa: S104
            raise ConfigError("turn_host: set the IP address browsers reach the relay on (host listens on all)")
        if self.turn_host is not None and not _is_ip(self.turn_host):
            raise ConfigError(f"turn_host: {self.turn_host!r} is not an IP address")
        if self.ice_transport_policy not in ("all", "relay"):
            raise ConfigError(f"ice_transport_policy: {self.ice_transport_policy!r} is not all or relay")
        if not 0 < self.turn_credential_hours <= 24:
            raise ConfigError(f"turn_credential_hours: {self.turn_credential_hours} is not between 0 and 24")
        for url in self.turn_servers:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"turn_servers: {url!r} must start with turn: or turns:")
        _check_relay_nodes(self)
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies: {proxy!r} is not an address or CIDR range") from None
        if self.public_url is not None and not self.public_url.startswith("https://"):
            raise ConfigError(f"public_url: {self.public_url!r} must start with https://")
        return self

    def subprocessors(self) -> tuple[SubProcessor, ...]:
        """The configured sub-processor list (empty without subprocessors_file)."""
        if self.subprocessors_file is None:
            return ()
        try:
            document = tomllib.loads(self.subprocessors_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"subprocessors_file: {self.subprocessors_file} cannot be read ({exc.strerror})"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"subprocessors_file: not valid TOML ({exc})") from None
        try:
            return subprocessors_from_config(document.get("subprocessors", []))
        except SubprocessorRefused as exc:
            raise ConfigError(f"subprocessors_file: {exc}") from None

    def keys_folder(self) -> Path:
        return self.key_dir if self.key_dir is not None else default_key_folder(self.data_dir)

    def base_url(self, port: int | None = None) -> str:
        """The URL printed for people to open; `port` is the bound port when `port` was 0."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 - a bind-all address is not a URL a person can open
            host = "localhost"
        elif _is_ipv6(host):
            host = f"[{host}]"
        return f"https://{host}:{port if port is not None else self.port}"


def _check_relay_nodes(config: ServeConfig) -> None:
    """Unique names; a shared secret the nodes can know; a sane polling interval."""
    names = [node.name for node in config.relay_nodes] + (["embedded"] if config.embedded_relay else [])
    if config.relay_nodes and len(set(names)) != len(names):
        raise ConfigError("relay_nodes: every node needs its own name (\"embedded\" is the embedded relay)")
    if config.relay_nodes and config.turn_secret_file is None:
        raise ConfigError("relay_nodes: set turn_secret_file, the secret the relay nodes share with signaling")
    for node in config.relay_nodes:
        if node.ca_file is not None and not node.ca_file.is_file():
            raise ConfigError(f"relay_nodes: {node.name}: ca_file {node.ca_file} is not a readable file")
    if not 0.2 <= config.relay_health_seconds <= 300:
        raise ConfigError(f"relay_health_seconds: {config.relay_health_seconds} is not between 0.2 and 300")


def _check_redis_url(url: str, database_url: str | None) -> None:
    """redis:// on this machine (or a unix socket), rediss:// (TLS) anywhere; nodes need a shared database."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("redis: must start with redis://, rediss:// (TLS) or unix://")
    host = parts.hostname or ""
    local = parts.scheme == "unix" or host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
    if parts.scheme == "redis" and not local:
        raise ConfigError("redis: a Redis on another machine needs rediss:// (TLS): it carries names and signaling")
    if database_url is None:
        raise ConfigError("redis: several nodes need one shared database: set database_url (PostgreSQL) too")


def _check_database_url(url: str) -> None:
    """PostgreSQL only; TLS with certificate checks to any host but this machine (article 5.3)."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("database_url: must start with postgresql://")
    host = parts.hostname or ""
    loopback = _is_ip(host) and ipaddress.ip_address(host).is_loopback
    local = host in ("", "localhost") or host.startswith("/") or loopback
    mode = parse_qs(parts.query).get("sslmode", [""])[0]
    if not local and mode not in ("verify-full", "verify-ca"):
        raise ConfigError(
            "database_url: a remote PostgreSQL needs ?sslmode=verify-full (TLS with a checked certificate)"
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _check_port(name: str, value: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{name}: {value} is not a port number ({low} to 65535)")


def option_names(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def option_help(cls: type[Any]) -> dict[str, str]:
    """Field docstrings (the string literal after each field), for --help."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _coerce(annotation: Any, raw: Any, where: str) -> Any:
    """Turn a TOML value or an environment/flag string into the field's type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw is None or raw == "":
            return None
        return _coerce(inner[0], raw, where)
    if typing.get_origin(annotation) is tuple:
        items = raw if isinstance(raw, list | tuple) else [part for part in str(raw).split(",") if part.strip()]
        return tuple(_coerce(typing.get_args(annotation)[0], item.strip() if isinstance(item, str) else item, where)
                     for item in items)
    if annotation is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: {raw!r} is not true or false")
    if annotation is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: {raw!r} is not a whole number")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {raw!r} is not a whole number") from None
    if annotation is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {raw!r} is not a number") from None
    if annotation is Path:
        if not isinstance(raw, str | Path) or str(raw) == "":
            raise ConfigError(f"{where}: {raw!r} is not a path")
        return Path(raw).expanduser()
    if annotation is RelayNodeSpec:
        try:
            return parse_relay_node(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if annotation is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: {raw!r} is not text")
        return raw
    raise ConfigError(f"{where}: unsupported option type {annotation!r}")  # pragma: no cover


def load_config(
    cls: type[Any],
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    section: str | None = None,
) -> Any:
    """Build and validate a config dataclass from a TOML file, the environment and flags (in rising order).

    `section` picks a TOML table (e.g. "relay"); without it the top-level keys are used and tables
    are left for other commands.
    """
    hints = typing.get_type_hints(cls)
    known = set(option_names(cls))
    values: dict[str, Any] = {}

    if file is not None:
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {file}: cannot be read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: not valid TOML ({exc})") from None
        table = document.get(section, {}) if section else document
        if not isinstance(table, dict):
            raise ConfigError(f"config file {file}: [{section}] must be a table")
        for key, raw in table.items():
            if isinstance(raw, dict) and section is None:
                continue  # another command's table
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"config file {file}: unknown option {key!r}")
            values[name] = _coerce(hints[name], raw, f"{file}: {key}")

    prefix = ENV_PREFIX + (f"{section.upper()}_" if section else "")
    for key, raw in (env or {}).items():
        if not key.startswith(prefix) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(prefix):].lower()
        if name in known:
            values[name] = _coerce(hints[name], raw, key)

    for name, raw in (flags or {}).items():
        if name not in known:
            raise ConfigError(f"--{name.replace('_', '-')}: unknown option")  # pragma: no cover
        values[name] = _coerce(hints[name], raw, f"--{name.replace('_', '-')}")

    config = cls(**values)
    validate = getattr(config, "validate", None)
    return validate() if validate else config

