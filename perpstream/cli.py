"""The ``perpstream`` command line: serve, check-config, reindex, watch, version."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from perpstream import __version__
from perpstream.config import Config, ConfigError, check_role, load_config, unstructure, validate
from perpstream.logs import configure_logging
from perpstream.systemd import notify

__all__ = ["main"]

log = logging.getLogger("perpstream")

# After the first SIGTERM/SIGINT the daemon has this long to finish cleanly.
SHUTDOWN_DEADLINE_S = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perpstream",
        description="Real-time streaming daemon for a perpetual-futures DEX.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", metavar="FILE", help="TOML config (default: built-in embedded demo)")
    serve.add_argument("--host", help="address to bind (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to bind (overrides server.port)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides log.level")
    serve.add_argument("--log-format", choices=["text", "json"], help="overrides log.format")
    serve.add_argument("--role", choices=["all", "core", "edge"], default="all",
                       help="all: one process (default); core: the actors, publishing to the [bus]; "
                            "edge: WebSocket/REST clients, fed from the [bus] (docs/deployment.md)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="with --role edge: N edge processes sharing the port (one per CPU core)")

    check = commands.add_parser("check-config", help="validate a config file and print the effective config")
    check.add_argument("file", metavar="FILE")

    reindex = commands.add_parser(
        "reindex", help="empty the chain index so the next start reads the chain again (daemon stopped)")
    reindex.add_argument("--config", metavar="FILE", help="TOML config (default: built-in embedded demo)")
    reindex.add_argument("--from", dest="from_block", type=int, metavar="BLOCK",
                         help="block to index from (default: chain.start_block)")

    commands.add_parser("version", help="print the version")

    from perpstream.watch import add_watch_parser

    add_watch_parser(commands)
    return parser


def _mask(value: str) -> str:
    return "****" if value else ""


def effective_config(config: Config) -> dict[str, Any]:
    """The config as plain data, plus the secrets it reads from the environment (masked)."""
    data = unstructure(config)
    names = {
        "feed.hermes.api_key": config.feed.hermes.api_key_env,
        "chain.rpc_url": config.chain.rpc_url_env,
        "debug.token": config.debug.token_env,
    }
    data["environment"] = {
        key: {"variable": name, "set": bool(os.environ.get(name)), "value": _mask(os.environ.get(name, ""))}
        for key, name in names.items()
    }
    if data["chain"]["rpc_url"]:
        data["chain"]["rpc_url"] = _mask(data["chain"]["rpc_url"])
    return data


async def _serve_until_signalled(config: Config, role: str) -> None:
    """Run the daemon in ``role``; the first SIGINT/SIGTERM stops it gracefully, a second at once."""
    from perpstream.cluster import run_core, run_edge
    from perpstream.daemon import run_daemon

    run_role = {"all": run_daemon, "core": run_core, "edge": run_edge}[role]
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def daemon(task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
                await run_role(config, shutdown=shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()

            async def deadline() -> None:
                await trio.sleep(SHUTDOWN_DEADLINE_S)
                log.error("shutdown took longer than %.0f s; exiting now", SHUTDOWN_DEADLINE_S)
                os._exit(1)

            bound = await nursery.start(daemon)
            notify("READY=1\nSTATUS=serving " + " ".join(f"{host}:{port}" for host, port in bound))
            async for signum in signals:
                name = signal.Signals(signum).name
                if shutdown.is_set():
                    log.warning("second %s: exiting now", name)
                    logging.shutdown()
                    os._exit(128 + signum)
                log.info("%s received: shutting down gracefully (send it again to exit at once)", name)
                notify("STOPPING=1")
                shutdown.set()
                nursery.start_soon(deadline)


def _startup_error(exc: BaseException) -> Exception | None:
    """A refusal to start inside ``exc`` (a group from the nurseries): data directory in
    use, or an index file the indexer cannot use."""
    from perpstream.chain.store import StoreMismatchError
    from perpstream.data_lock import DataDirLocked

    if isinstance(exc, (DataDirLocked, StoreMismatchError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _startup_error(inner)) is not None:
                return found
    return None


def _bind_error(exc: BaseException) -> OSError | None:
    """The listening-socket error inside ``exc`` (a group from the nurseries), if any."""
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _bind_error(inner)) is not None:
                return found
    return None


def _serve(config: Config, role: str) -> int:
    try:
        trio.run(_serve_until_signalled, config, role)
    except (OSError, BaseExceptionGroup, RuntimeError) as exc:
        refusal = _startup_error(exc)
        if refusal is not None:
            print(f"perpstream: {refusal}", file=sys.stderr)
            return 1
        error = _bind_error(exc)
        if error is None:
            raise
        print(f"perpstream: cannot listen on {config.server.host}:{config.server.port}: {error.strerror}",
              file=sys.stderr)
        return 1
    return 0


def _workers(config: Config, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--workers N``: checked, then N edge processes with the same command line."""
    from perpstream.workers import run_workers

    if args.role != "edge" or not 1 <= args.workers <= 256:
        print(f"perpstream: --workers {args.workers}: expected 1 to 256, with --role edge only", file=sys.stderr)
        return 2
    if config.server.port == 0:
        print("perpstream: --workers needs a fixed port (they share it), not port 0", file=sys.stderr)
        return 2
    rest = [a for i, a in enumerate(argv) if a != "--workers" and not a.startswith("--workers=")
            and (i == 0 or argv[i - 1] != "--workers")]
    return run_workers(args.workers, rest)


def _reindex(config: Config, from_block: int | None) -> int:
    from perpstream.data_lock import DataDirLocked
    from perpstream.reindex import reindex

    try:
        print(reindex(config, from_block=from_block))
    except (DataDirLocked, ValueError) as exc:
        print(f"perpstream: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m perpstream``."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"perpstream {__version__}")
        return 0
    if args.command == "watch":
        from perpstream.watch import run_watch

        return run_watch(args)
    try:
        config = load_config(args.file if args.command == "check-config" else args.config)
    except ConfigError as exc:
        print(f"perpstream: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(effective_config(config), indent=2))
        print(f"{args.file}: OK", file=sys.stderr)
        return 0
    if args.command == "reindex":
        return _reindex(config, args.from_block)

    config = attrs.evolve(
        config,
        server=attrs.evolve(config.server, host=args.host or config.server.host,
                            port=config.server.port if args.port is None else args.port),
        log=attrs.evolve(config.log, level=args.log_level or config.log.level,
                         format=args.log_format or config.log.format),
    )
    try:
        validate(config, "the command line")
        check_role(config, args.role)
    except ConfigError as exc:
        print(f"perpstream: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    if args.workers != 1:
        return _workers(config, args, argv if argv is not None else sys.argv[1:])
    return _serve(config, args.role)
