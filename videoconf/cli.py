"""The ``videoconf`` command: run the server, migrate the database, show the configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from videoconf import runtime
from videoconf.config import ConfigError, Settings, load_settings, masked


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    return load_settings(args.config, **overrides)


async def _migrate(settings: Settings) -> str | None:
    from control_api.storage.database import Database
    from control_api.storage.migrate import current_revision, upgrade

    db = Database(settings.effective_database_url, search_path=settings.database_schema)
    try:
        await upgrade(db)
        return await current_revision(db)
    finally:
        await db.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    revision = asyncio.run(_migrate(settings))
    print(f"database at revision {revision}: {masked(settings)['effective']['database_url']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from videoconf.app import create_app
    from videoconf.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_json)
    if args.processes != 1:
        from videoconf.supervisor import Supervisor, check

        check(settings, args.processes)
    if args.migrate:
        asyncio.run(_migrate(settings))
    if args.processes != 1:
        return Supervisor(settings, args.processes, getattr(args, "config", None)).run()
    runtime.install()
    # The app is built with the loop it will run on current: its start-up checks build aiortc and
    # aioice objects, some of which make futures, and uvloop has no implicit loop to give them.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    print(f"VideoConf is running at http://{settings.host}:{settings.port} (Ctrl+C to stop)", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None, loop=loop)
    return 0


def cmd_turn(args: argparse.Namespace) -> int:
    """Run the TURN server on its own (on a host of its own, typically), with uvloop."""
    from turn.service import run_standalone
    from videoconf.app import sfu_media_addresses
    from videoconf.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_json)
    if not settings.turn.secrets and not settings.turn.users:
        raise ConfigError("the TURN server needs turn.secrets or turn.users")
    runtime.install()
    asyncio.run(run_standalone(settings.turn, sfu_media_addresses(settings)))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(json.dumps(masked(_settings(args)), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="videoconf", description="VideoConf server and tools")
    top.add_argument("--config", help="TOML configuration file (also VIDEOCONF_CONFIG)")
    # ``--config`` is taken after the command too (``videoconf loadtest --config prod.toml``);
    # there it is suppressed unless given, so it never hides one given before the command.
    config_file = argparse.ArgumentParser(add_help=False)
    config_file.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file (also VIDEOCONF_CONFIG)")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[config_file], help="run the all-in-one server")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--migrate", action="store_true", help="migrate the database first")
    run.add_argument(
        "--processes", type=int, default=1,
        help="run N nodes of one cluster, one per core (ports port..port+N-1; needs cluster and redis_url)",
    )
    run.set_defaults(func=cmd_run)

    turn = sub.add_parser("turn", parents=[config_file], help="run the TURN server on its own ([turn] settings)")
    turn.set_defaults(func=cmd_turn)

    migrate = sub.add_parser("migrate", parents=[config_file], help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    bot = sub.add_parser("bot", help="join a meeting as a bot and print a JSON report of the media received")

    def run_bot(args: argparse.Namespace) -> int:
        from clients.sdk.bot import cmd_bot

        return cmd_bot(args)

    from clients.sdk.bot import add_arguments

    add_arguments(bot)
    bot.set_defaults(func=run_bot)

    loadtest = sub.add_parser("loadtest", parents=[config_file], help="load a node with bots: scenarios, a report and a capacity search")

    def run_loadtest(args: argparse.Namespace) -> int:
        from clients.loadtest.cli import cmd_loadtest

        runtime.install()
        return cmd_loadtest(args, load_settings)

    from clients.loadtest.cli import add_arguments as loadtest_arguments

    loadtest_arguments(loadtest)
    loadtest.set_defaults(func=run_loadtest)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", parents=[config_file], help="print the effective configuration, secrets masked")
    show.set_defaults(func=cmd_config_show)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"videoconf: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
