"""The `repogate` command: serve, migrate, purge, health, schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from schema.model import SchemaError
from server import access, logs, schema_cli
from server.cache.errors import CacheMisconfigured
from server.settings import Settings
from server.settings_sources import SettingsError, describe

log = logging.getLogger("repogate")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key in ("listen", "workers")
        if (value := getattr(args, key, None)) is not None
    } | schema_cli.schema_override(args)
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        given: dict[str, str] = {k: f"--{k}" for k in ("listen", "workers") if k in overrides}
        print(f"repogate: invalid settings:\n{describe(exc, Settings, given)}", file=sys.stderr)
        return 2
    # The server's log and the access log: JSON lines, both on stderr (docs/telemetry.md).
    logs.configure(settings.log_level)
    access.configure(settings.access_log)
    try:
        return _run(args.func(settings, args))
    except OSError as exc:
        log.error("%s", exc)
        return 1
    except CacheMisconfigured as exc:
        print(f"repogate: invalid settings: {exc}", file=sys.stderr)
        return 2
    except SchemaError as exc:
        # A schema that cannot load, or changes to it that are refused: nothing started.
        from schema.migrations import Refused

        print(f"repogate: {exc}", file=sys.stderr)
        return schema_cli.REFUSED if isinstance(exc, Refused) else 2
    finally:
        access.flush()  # the lines of the last calls, should the server not have stopped


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repogate", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="command")
    serve = sub.add_parser("serve", help="run the gRPC server (migrates first)")
    serve.add_argument("--listen", help="host:port or unix:/path (default $REPOGATE_LISTEN)")
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    serve.add_argument(
        "--workers", type=int, help="processes sharing the port (default $REPOGATE_WORKERS or 1)"
    )
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser(
        "migrate", help="bring the database up to date, with $REPOGATE_SCHEMA's tables"
    )
    migrate.set_defaults(func=_migrate, listen=None)
    purge = sub.add_parser("purge", help="purge soft-deleted rows and request ids that are due")
    purge.set_defaults(func=_purge, listen=None)
    check = sub.add_parser("health", help="ask a server's health service; exit 0 if SERVING")
    check.add_argument("--listen", help="address to ask (default $REPOGATE_LISTEN)")
    check.add_argument("--service", default="", help="service name ('' for the server)")
    check.add_argument("--timeout", type=float, default=3.0)
    check.set_defaults(func=_health)
    schema_cli.add_commands(sub)
    return parser


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.workers > 1:
        return await _supervise(settings, args)
    from server.app import Repogate

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = Repogate(settings, migrate=not args.no_migrate)
    # Keys, JWT keys and certificates are loaded again, calls going on meanwhile; while
    # starting, when they are being read anyway, SIGHUP does nothing (rather than kill).
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    async with app:
        await stop.wait()
        log.info("stopping: draining calls for up to %ss", settings.shutdown_grace)
    log.info("stopped")
    return 0


async def _supervise(settings: Settings, args: argparse.Namespace) -> int:
    from server.workers import Supervisor

    if not args.no_migrate:
        await _migrate(settings, args)  # raises SchemaError: no worker starts
    return await Supervisor(settings).run()


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from repositories.database import create_engine
    from repositories.migrate import current_revision, upgrade

    declared = schema_cli.declared(settings)
    engine = create_engine(settings.database_url, settings.engine_options())
    try:
        await upgrade(engine, declared=declared)
        log.info("schema at revision %s", await current_revision(engine))
    finally:
        await engine.dispose()
    return 0


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    from repositories.database import Database, create_engine
    from repositories.maintenance import purge_due

    declared = schema_cli.declared(settings)
    db = Database(create_engine(settings.database_url, settings.engine_options()))
    try:
        purged = await purge_due(db, declared=None if declared is None else declared.metadata)
        if purged is None:
            print("skipped: another process is purging this database")
        else:
            print(" ".join(f"{table}={count}" for table, count in purged.items()))
    finally:
        await db.dispose()
    return 0


async def _health(settings: Settings, args: argparse.Namespace) -> int:
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with aio.insecure_channel(settings.listen) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except aio.AioRpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":  # workers run as `python -m server.cli`
    sys.exit(main())
