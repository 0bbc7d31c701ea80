"""The ``perpstream`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import attrs
import trio

from perpstream import __version__
from perpstream.config import ConfigError, load_config
from perpstream.logs import configure_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perpstream",
        description="Real-time streaming daemon for a perpetual-futures DEX.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", metavar="FILE", help="TOML config (default: built-in embedded demo)")
    serve.add_argument("--host", help="address to bind (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to bind (overrides server.port)")

    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file", metavar="FILE")

    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m perpstream``."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"perpstream {__version__}")
        return 0
    try:
        config = load_config(args.file if args.command == "check-config" else args.config)
    except ConfigError as exc:
        print(f"perpstream: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.file}: OK")
        return 0

    server = config.server
    server = attrs.evolve(server, host=args.host or server.host, port=args.port or server.port)
    config = attrs.evolve(config, server=server)
    configure_logging(config.log.level, config.log.format)

    from perpstream.daemon import run_daemon

    try:
        trio.run(run_daemon, config)
    except KeyboardInterrupt:
        pass
    return 0
