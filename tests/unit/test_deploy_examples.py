"""deploy/ stays true to the code: every config file loads with kijkmee's own loader, the units and the
compose file run commands and options that exist, and the files agree with each other (ports, names,
timeouts). Nothing here starts a container: this machine has no container runtime."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from kijkmee.cli import build_parser
from kijkmee.config import ServeConfig, load_config
from kijkmee.relay import RelayNodeConfig, split_host_port
from kijkmee.relay_nodes import parse_turn_url
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIGS = sorted(DEPLOY.rglob("*.toml"))
KIND = {"signal": ServeConfig, "relay": RelayNodeConfig}
ETC = re.compile(r"/etc/kijkmee/[\w./-]+")


def kind_of(path: Path) -> str:
    document = tomllib.loads(path.read_text())
    if "subprocessors" in document:
        return "subprocessors"
    return "relay" if "relay" in document else "signal"


def env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


class FakeRoot:
    """Absolute /etc/kijkmee paths point into a temporary folder: files that deploy/ ships (subprocessors.toml)
    are copied there, others (certificates, keys, secrets made on the machine) are placeholders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def text(self, text: str) -> str:
        for path in set(ETC.findall(text)):
            target = self.root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shipped = DEPLOY / "config" / Path(path).name
            if shipped.is_file() and Path(path).name == "subprocessors.toml":
                shutil.copy(shipped, target)
            elif not target.exists():
                target.write_text("placeholder\n")
        return ETC.sub(lambda m: str(self.root) + m.group(0), text)

    def file(self, path: Path) -> Path:
        copy = self.root / "configs" / path.relative_to(DEPLOY)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(self.text(path.read_text()))
        return copy

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {key: self.text(value) for key, value in env.items()}


def load(path: Path, fake: FakeRoot, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None) -> Any:
    kind = kind_of(path)
    return load_config(KIND[kind], file=fake.file(path), env=fake.env(env or {}), flags=flags,
                       section="relay" if kind == "relay" else None)


def serve_env() -> dict[str, str]:
    return env_file(DEPLOY / "config" / "serve.env.example")


def test_there_are_two_signaling_and_two_relay_configs() -> None:
    kinds = [kind_of(path) for path in CONFIGS if path.parent.name == "config"]
    assert kinds.count("signal") == 2 and kinds.count("relay") == 2 and kinds.count("subprocessors") == 1


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(DEPLOY)) for p in CONFIGS])
def test_every_config_file_loads_with_kijkmees_loader(path: Path, tmp_path: Path) -> None:
    fake = FakeRoot(tmp_path)
    kind = kind_of(path)
    if kind == "subprocessors":
        subs = ServeConfig(subprocessors_file=path).validate().subprocessors()
        assert len(subs) == 2 and {s.country for s in subs} == {"NL"}  # two data centres, both in the EU
        return
    config = load(path, fake, serve_env() if kind == "signal" else None)
    if kind == "signal":
        assert not config.embedded_relay and len(config.relay_nodes) == 2
        assert config.redis is not None and config.redis.startswith("rediss://")
        assert config.database_url is not None and "sslmode=verify-full" in config.database_url
        for node in config.relay_nodes:
            assert node.health_url.startswith("https://") and node.ca_file is not None
        assert config.key_dir is not None and not config.key_dir.is_relative_to(config.data_dir)
        assert config.public_url == "https://call.example.nl" and len(config.trusted_proxies) == 2
    else:
        assert config.metrics is not None and split_host_port(config.metrics, "metrics")[0] == "127.0.0.1"


def test_the_signaling_nodes_hand_out_exactly_the_relays_that_exist(tmp_path: Path) -> None:
    fake = FakeRoot(tmp_path)
    relays = [load(p, fake) for p in CONFIGS if kind_of(p) == "relay"]
    relay_ports = {(split_host_port(a, "l")[1], t) for r in relays for a, t in
                   [*((x, "udp") for x in r.listen), *((x, "tls") for x in r.tls_listen)]}
    health = (DEPLOY / "nginx" / "relay-health.conf").read_text()
    health_port = int(re.search(r"listen [\d.]+:(\d+) ssl", health).group(1))  # type: ignore[union-attr]
    assert "proxy_pass http://127.0.0.1:9641" in health and {r.metrics for r in relays} == {"127.0.0.1:9641"}
    for path in (p for p in CONFIGS if kind_of(p) == "signal"):
        config = load(path, fake, serve_env())
        for node in config.relay_nodes:
            for url in node.urls:
                address = parse_turn_url(url)
                assert (address.port, "tls" if address.scheme == "turns" else "udp") in relay_ports, url
            assert f":{health_port}/healthz" in node.health_url


# -- systemd --------------------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


@pytest.mark.parametrize(("name", "command", "config"), [
    ("kijkmee-serve.service", "serve", "serve.toml"), ("kijkmee-relay.service", "relay", "relay.toml")])
def test_units_run_real_commands_with_real_options(name: str, command: str, config: str) -> None:
    entries = unit(name)
    [exec_start] = entries["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/kijkmee/venv/bin/kijkmee"  # where deploy/README.md installs it
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option
    assert args.command == command and str(args.config) == f"/etc/kijkmee/{config}"  # config/*.toml go there
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome", "RestrictSUIDSGID"):
        assert entries[key] in (["yes"], ["strict"]), key


def test_relay_unit_drains_before_systemd_gives_up_and_keeps_one_capability(tmp_path: Path) -> None:
    entries = unit("kijkmee-relay.service")
    relays = [load(p, FakeRoot(tmp_path)) for p in CONFIGS if kind_of(p) == "relay"]
    assert all(float(entries["TimeoutStopSec"][0]) > r.drain_timeout for r in relays)
    assert entries["KillSignal"] == ["SIGTERM"] and entries["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert entries["DynamicUser"] == ["yes"] and entries["SupplementaryGroups"] == ["kijkmee"]
    assert entries["CapabilityBoundingSet"] == entries["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert any(split_host_port(a, "tls")[1] < 1024 for r in relays for a in r.tls_listen)  # why it needs it


def test_serve_unit_has_no_capability_and_its_state_folders_match_the_config(tmp_path: Path) -> None:
    entries = unit("kijkmee-serve.service")
    assert entries["CapabilityBoundingSet"] == [""] and entries["User"] == ["kijkmee"]
    assert entries["EnvironmentFile"] == ["/etc/kijkmee/serve.env"]
    assert "User=kijkmee" not in (DEPLOY / "systemd" / "kijkmee.sysusers.conf").read_text()
    assert (DEPLOY / "systemd" / "kijkmee.sysusers.conf").read_text().count("u kijkmee ") == 1
    state = set(entries["StateDirectory"][0].split())
    for path in (p for p in CONFIGS if kind_of(p) == "signal"):
        config = load(path, FakeRoot(tmp_path), serve_env())
        assert config.port >= 1024
        assert {config.data_dir.name, config.key_dir.name} == state
        assert {str(config.data_dir.parent), str(config.key_dir.parent)} == {"/var/lib"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_knows_every_directive(tmp_path: Path) -> None:
    kijkmee = shutil.which("kijkmee", path=str(ROOT / ".venv" / "bin")) or shutil.which("kijkmee")
    assert kijkmee is not None
    for path in (DEPLOY / "systemd").glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/kijkmee/venv/bin/kijkmee", kijkmee))
    done = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.glob("*.service")))],
                          capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if re.search(r"Unknown|Invalid|Failed|bad|not valid", line, re.IGNORECASE)]
    assert complaints == []


# -- compose ---------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} with no variable set: the default, or a stand-in."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+:\?[^}]*\}", "trial-password", value)


def test_images_are_ours_or_official_and_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        if "build" in service:
            assert service["build"] == {"context": "..", "dockerfile": "deploy/Containerfile"}, name
            assert image == "kijkmee:local"
        else:
            assert re.fullmatch(r"docker\.io/library/[a-z]+:\d[\w.-]*", image), (name, image)
    for line in (DEPLOY / "Containerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert re.fullmatch(r"FROM docker\.io/library/[a-z]+:\d[\w.-]*( AS \w+)?", line), line
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ after compose/make-certs.sh ran in it (needs openssl)."""
    if shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("openssl is not installed (make test installs it)")
        pytest.skip("openssl is not installed (make test installs it)")
    copy = tmp_path_factory.mktemp("trial") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns(".env", "tls", "secrets"))
    subprocess.run(["sh", str(copy / "compose" / "make-certs.sh")], check=True, capture_output=True, timeout=120)
    return copy


def test_make_certs_gives_every_mount_and_variable_compose_needs(trial: Path) -> None:
    assert re.fullmatch(r"REDIS_PASSWORD=[0-9a-f]{48}\n", (trial / ".env").read_text())
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (trial / source).exists(), (name, source)
    ca = trial / "compose" / "tls" / "ca.pem"
    for leaf in ("signal-1/node.pem", "signal-2/pg-client.pem", "postgres/node.pem", "redis/node.pem"):
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(trial / "compose" / "tls" / leaf)],
                                  capture_output=True, text=True, timeout=30)
        assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("name", ["signal-1", "signal-2", "relay-1", "relay-2"])
def test_compose_services_run_real_commands_on_configs_that_load(name: str, trial: Path) -> None:
    services = compose()["services"]
    service = services[name]
    args = vars(build_parser().parse_args(service["command"][1:]))
    assert service["command"][0] == "kijkmee"
    command, config_path = args.pop("command"), str(args.pop("config"))
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    root = trial.parent / f"root-{name}"
    for inside, outside in mounts.items():  # the container's file system, as far as kijkmee reads it
        source = trial / outside
        target = root / inside.lstrip("/")
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    file = root / config_path.lstrip("/")
    file.write_text(file.read_text().replace("/etc/kijkmee/", f"{root}/etc/kijkmee/"))
    env = {k: interpolate(str(v)).replace("/etc/kijkmee/", f"{root}/etc/kijkmee/")
           for k, v in service["environment"].items()}
    cls, section = (ServeConfig, None) if command == "serve" else (RelayNodeConfig, "relay")
    config = load_config(cls, file=file, env=env, flags=args, section=section)
    aliases = {a for s in services.values() for a in (s.get("networks", {}).get("internal") or {}).get("aliases", [])}
    if command == "serve":
        hosts = {node.health_url.split("/")[2].split(":")[0] for node in config.relay_nodes}
        hosts |= {config.redis.split("@")[1].split(":")[0], config.database_url.split("@")[1].split(":")[0]}
        assert hosts <= aliases, hosts - aliases  # every service it talks to is on the network by that name
        assert config.trusted_proxies == (services["proxy"]["networks"]["internal"]["ipv4_address"],)
        assert config.key_dir is not None and not config.key_dir.is_relative_to(config.data_dir)
        (keys_volume,) = [v for v in service["volumes"] if v.endswith(":" + str(config.key_dir))]
        assert keys_volume.split(":")[0] == "signal-keys"  # one shared key volume, apart from the data
    else:
        assert float(service["stop_grace_period"].rstrip("s")) > config.drain_timeout
        assert config.relay_ip == (service["networks"]["internal"]["ipv4_address"],)


def test_the_proxy_reaches_the_signaling_nodes_by_the_names_and_port_they_have() -> None:
    conf = (DEPLOY / "nginx" / "kijkmee.conf").read_text()
    upstream = re.findall(r"server (signal-\d\.kijkmee\.internal):(\d+)", conf)
    services = compose()["services"]
    assert {host for host, _ in upstream} == {a for n in ("signal-1", "signal-2")
                                              for a in services[n]["networks"]["internal"]["aliases"]}
    assert {int(port) for _, port in upstream} == {8443}
    assert set(re.findall(r"ssl_protocols ([^;]+);", conf)) == {"TLSv1.2 TLSv1.3"}  # browsers and nodes
    for location in re.findall(r"location [^{]+\{(.*?)\n    \}", conf, re.DOTALL):
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in location
        assert "proxy_set_header Host $host;" in location
    assert "proxy_set_header Upgrade $http_upgrade;" in conf and "hash $remote_addr consistent;" in conf
    assert "$remote_addr" not in re.search(r"log_format[^;]+;", conf).group(0)  # type: ignore[union-attr]
