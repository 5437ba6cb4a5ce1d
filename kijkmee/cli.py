"""The `kijkmee` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kijkmee import __version__
from kijkmee.admin import DESCRIPTION as ADMIN_DESCRIPTION
from kijkmee.admin import add_admin_arguments, run_admin_command
from kijkmee.config import ConfigError, ServeConfig, load_config, option_help, option_names
from kijkmee.probe import DESCRIPTION as PROBE_DESCRIPTION
from kijkmee.probe import add_probe_arguments, run_probe_command
from kijkmee.relay import RelayNodeConfig

DESCRIPTION = """\
kijkmee: privacy-first video calls for up to three people, peer to peer, over TLS.

Every option can also be set in a TOML file (--config, or KIJKMEE_CONFIG) with the
option's name as key (data_dir = "/var/lib/kijkmee"), or as an environment variable
KIJKMEE_<NAME> (KIJKMEE_DATA_DIR=/var/lib/kijkmee). Flags win over the environment,
which wins over the file."""


METAVARS = {"redis": "URL"}
"""Placeholders in --help where the option's last word does not say what to give."""


def _add_options(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    helps = option_help(cls)
    defaults = cls()
    parser.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML file with options (default: $KIJKMEE_CONFIG, if set)")
    for name in option_names(cls):
        default = getattr(defaults, name)
        shown = "not set" if default is None else str(default)
        kind = hints[name]
        flag = f"--{name.replace('_', '-')}"
        text = helps.get(name, "")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_const", const="true", default=argparse.SUPPRESS,
                                help=f"{text} (default: {'on' if default else 'off'}; --no-{flag[2:]}: off)")
            parser.add_argument(f"--no-{flag[2:]}", dest=name, action="store_const", const="false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        if typing.get_origin(kind) is tuple:
            parser.add_argument(flag, dest=name, action="append", metavar="VALUE", default=argparse.SUPPRESS,
                                help=f"{text} (repeatable; default: {', '.join(map(str, default)) or 'none'})")
            continue
        metavar = ("N" if kind in (int, int | None, float, float | None)
                   else METAVARS.get(name, name.upper().split("_")[-1]))
        parser.add_argument(flag, dest=name, metavar=metavar, default=argparse.SUPPRESS,
                            help=f"{text} (default: {shown})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kijkmee", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kijkmee {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run HTTPS pages, signaling and the metadata store on this machine",
        description="Run kijkmee on one machine with embedded defaults and print the URL to open.",
    )
    _add_options(serve, ServeConfig)
    relay = commands.add_parser(
        "relay",
        help="run one TURN relay node (UDP, TCP, TLS) for ops",
        description=(
            "Run one TURN relay node (RFC 8656), interchangeable with coturn's use-auth-secret mode.\n"
            "Options also come from the [relay] table of the TOML file and KIJKMEE_RELAY_<NAME>.\n"
            "SIGHUP reloads the certificate and the secrets; SIGTERM drains (no new allocations,\n"
            "current ones run out up to --drain-timeout); a second SIGTERM stops at once."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(relay, RelayNodeConfig)
    probe = commands.add_parser("probe", help="check a TURN relay end to end with a relayed WebRTC call",
                                description=PROBE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_arguments(probe)
    admin = commands.add_parser("admin", help="data handling: retention, subject requests, export, audit, breaches",
                                description=ADMIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_admin_arguments(admin)
    return parser


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``pip install 'kijkmee[fast]'``, which `make run` and the
    container do), else None (asyncio's own). It trims the loop's share of each wake-up: 5-10 % less CPU per
    relayed packet at light and medium load (bench/relay_vs_coturn), and about a quarter less server CPU per
    signaling join (bench/signaling_load)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command", None)
    if command is None:
        parser.print_help()
        return 2
    if command == "probe":
        return run_probe_command(args)
    if command == "admin":
        return run_admin_command(argparse.Namespace(**args))
    config_file = args.pop("config", None) or (Path(os.environ["KIJKMEE_CONFIG"])
                                               if os.environ.get("KIJKMEE_CONFIG") else None)
    cls, section = (ServeConfig, None) if command == "serve" else (RelayNodeConfig, "relay")
    try:
        config = load_config(cls, file=config_file, env=os.environ, flags=args, section=section)
    except ConfigError as exc:
        print(f"kijkmee: configuration error: {exc}", file=sys.stderr)
        return 2
    from kijkmee.logs import setup_logging
    from kijkmee.relay import run_relay
    from kijkmee.serve import serve_forever
    from signaling.app import ClientMissing

    setup_logging(config.log_level)
    try:
        with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
            runner.run(serve_forever(config) if command == "serve" else run_relay(config))
    except ConfigError as exc:
        print(f"kijkmee: configuration error: {exc}", file=sys.stderr)
        return 2
    except ClientMissing as exc:
        print(f"kijkmee: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kijkmee: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
