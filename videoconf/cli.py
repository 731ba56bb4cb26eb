"""The ``videoconf`` command: run the server, migrate the database, show the configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from videoconf import runtime
from videoconf.config import ConfigError, Settings, load_settings, masked
from videoconf.webhooks_cli import add_commands as add_webhook_commands


def _settings(args: argparse.Namespace, secrets_needed: tuple[str, ...] | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "dev_tls", False):
        overrides["tls_self_signed"] = True
        # the processes of --processes read their settings from the environment
        os.environ["VIDEOCONF_TLS_SELF_SIGNED"] = "true"
    if secrets_needed is not None:
        return load_settings(args.config, secrets_needed=secrets_needed, **overrides)
    return load_settings(args.config, **overrides)


def _certificate(settings: Settings) -> tuple[Any, Any]:
    """The certificate a node serves (None without TLS) and the development one (or None)."""
    from videoconf.tls import CertificateFiles, TlsError, dev_certificate

    try:
        if settings.tls_self_signed:
            extra = [*settings.tls_hostnames]
            if settings.host not in ("0.0.0.0", "::", ""):
                extra.append(settings.host)
            dev = dev_certificate(settings.data_dir / "tls", extra)
            return CertificateFiles(dev.cert, dev.key), dev
        if settings.tls_cert is not None and settings.tls_key is not None:
            return CertificateFiles(settings.tls_cert, settings.tls_key), None
    except TlsError as exc:
        raise ConfigError(str(exc)) from exc
    return None, None


def _tell_about_dev_certificate(settings: Settings, dev: Any) -> None:
    urls = [
        f"https://{'[' + n + ']' if ':' in n else n}:{settings.port}"
        for n in dev.names
        if settings.host in ("0.0.0.0", "::") or n in (settings.host, "localhost")
    ]
    print(
        "Development HTTPS (a local certificate authority, made once):\n"
        f"  open: {' '.join(urls[:6])}\n"
        f"  trust the authority on each device once: {dev.ca} (also served at /tls/ca.pem)\n"
        f"  its SHA-256 fingerprint, to compare on the device: {dev.ca_sha256}\n"
        f"  Chromium pinned to this key instead: --ignore-certificate-errors-spki-list={dev.spki_sha256}",
        flush=True,
    )


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


async def keys_command(settings: Settings, action: str, *, name: str = "", scopes: list[str] | None = None, key_id: str = "") -> Any:
    """``videoconf keys create|list|revoke`` on the configured database: what to print as JSON.
    The secret is in what ``create`` returns, and nowhere else."""
    from control_api.services.api_keys import ApiKeys
    from control_api.services.context import utc_now
    from control_api.storage.database import Database

    db = Database(settings.effective_database_url, search_path=settings.database_schema)
    try:
        keys = ApiKeys(db, utc_now)
        if action == "create":
            key, secret = await keys.create(name, scopes or [])
            return {**key.public(), "secret": secret}
        if action == "revoke":
            return (await keys.revoke(key_id)).public()
        return [key.public() for key in await keys.list()]
    finally:
        await db.close()


def cmd_keys(args: argparse.Namespace) -> int:
    from control_api.errors import ServiceError

    try:
        result = asyncio.run(
            keys_command(
                _settings(args), args.keys_command, name=getattr(args, "name", ""),
                scopes=getattr(args, "scope", None), key_id=getattr(args, "key_id", ""),
            )
        )
    except ServiceError as exc:
        print(f"videoconf keys: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
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
    tls, dev = _certificate(settings)  # before the processes start: they find it made
    if args.processes != 1:
        return Supervisor(settings, args.processes, getattr(args, "config", None)).run()
    runtime.install()
    # The app is built with the loop it will run on current: its start-up checks build aiortc and
    # aioice objects, some of which make futures, and uvloop has no implicit loop to give them.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings, tls=tls, dev_ca=dev.ca if dev is not None else None)
    scheme = "https" if tls is not None else "http"
    print(f"VideoConf is running at {scheme}://{settings.host}:{settings.port} (Ctrl+C to stop)", flush=True)
    if dev is not None:
        _tell_about_dev_certificate(settings, dev)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        loop=loop,
        ssl_context=tls.context if tls is not None else None,
    )
    return 0


def _local_url(settings: Settings, path: str) -> str:
    host = (
        "127.0.0.1" if settings.host in ("0.0.0.0", "") else "::1" if settings.host == "::" else settings.host
    )
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if settings.tls_enabled else 'http'}://{host}:{settings.port}{path}"


def _call(url: str, method: str = "GET", token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """An HTTP request to this machine's node.  Its certificate is not checked: it is this very
    node, reached by an address its certificate may not name."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        url, method=method, headers=headers, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read(65536)
    except urllib.error.HTTPError as error:
        return error.code, error.read(65536)


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when this machine's node (or TURN server) answers /healthz: the container's
    HEALTHCHECK."""
    settings = _settings(args)
    if args.turn:
        if settings.turn.metrics_port is None:
            raise ConfigError("videoconf health --turn needs turn.metrics_port (the TURN server's /healthz)")
        host = "127.0.0.1" if settings.turn.metrics_host in ("0.0.0.0", "") else settings.turn.metrics_host
        url = f"http://{host}:{settings.turn.metrics_port}/healthz"
    else:
        url = _local_url(settings, "/healthz")
    try:
        status, _ = _call(url, timeout=args.timeout)
    except OSError as exc:
        print(f"unhealthy: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    print(f"healthy: {url}")
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """Drain this machine's cluster node (its meetings move to the other nodes, then it stops)
    and, with --wait, return once it has stopped: Kubernetes' preStop hook."""
    import time

    settings = _settings(args)
    if not settings.cluster:
        print(
            "not a cluster node: there is nowhere to move its meetings; it stops on SIGTERM", file=sys.stderr
        )
        return 0
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    node = settings.effective_node_id
    from urllib.parse import quote

    try:
        status, body = _call(_local_url(settings, f"/api/nodes/{quote(node, safe='')}/drain"), "POST", token)
    except OSError as exc:
        print(f"the node does not answer ({getattr(exc, 'reason', exc)}): nothing to drain", file=sys.stderr)
        return 0
    if status != 202:
        print(f"the drain order was refused: {status} {body.decode(errors='replace')[:300]}", file=sys.stderr)
        return 1
    print(f"node {node} is draining", flush=True)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        try:
            _call(_local_url(settings, "/healthz"), timeout=2.0)
        except OSError:
            print(f"node {node} has stopped", flush=True)
            return 0
        time.sleep(1.0)
    if args.wait:
        print(f"node {node} is still running after {args.wait:.0f} s", file=sys.stderr)
    return 0


def cmd_turn(args: argparse.Namespace) -> int:
    """Run the TURN server on its own (on a host of its own, typically), with uvloop.  Its TLS
    certificate is read again on SIGHUP and when its files change."""
    from turn.service import run_standalone
    from videoconf.app import sfu_media_addresses
    from videoconf.logs import setup_logging
    from videoconf.tls import TlsError, TlsReloader, turn_certificate

    settings = _settings(args, secrets_needed=())  # TURN signs no tokens
    setup_logging(settings.log_level, settings.log_json)
    if not settings.turn.secrets and not settings.turn.users:
        raise ConfigError("the TURN server needs turn.secrets or turn.users")
    try:
        files = turn_certificate(settings.turn)
    except TlsError as exc:
        raise ConfigError(str(exc)) from exc

    async def serve() -> None:
        reloader = TlsReloader([files] if files is not None else [])
        reloader.start()
        try:
            await run_standalone(
                settings.turn, sfu_media_addresses(settings), files.context if files is not None else None
            )
        finally:
            await reloader.stop()

    runtime.install()
    asyncio.run(serve())
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
    config_file.add_argument(
        "--config", default=argparse.SUPPRESS, help="TOML configuration file (also VIDEOCONF_CONFIG)"
    )
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[config_file], help="run the all-in-one server")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--migrate", action="store_true", help="migrate the database first")
    run.add_argument(
        "--dev-tls",
        action="store_true",
        help="serve HTTPS with a development certificate made once in <data_dir>/tls (= tls_self_signed), "
        "so that other devices on the LAN get camera and microphone",
    )
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run N nodes of one cluster, one per core (ports port..port+N-1; needs cluster and redis_url)",
    )
    run.set_defaults(func=cmd_run)

    turn = sub.add_parser(
        "turn", parents=[config_file], help="run the TURN server on its own ([turn] settings)"
    )
    turn.set_defaults(func=cmd_turn)

    migrate = sub.add_parser("migrate", parents=[config_file], help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="API keys of the server API (/api/server)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", parents=[config_file], help="make a key; prints its id and secret once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope", action="append", required=True,
        help="rooms:read, rooms:admin, tokens:create, recordings or webhooks (repeat for more)",
    )
    keys_sub.add_parser("list", parents=[config_file], help="the keys, without secrets")
    revoke = keys_sub.add_parser("revoke", parents=[config_file], help="revoke a key at once")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    add_webhook_commands(sub, config_file, _settings)

    health = sub.add_parser(
        "health", parents=[config_file], help="exit 0 when this machine's node answers /healthz"
    )
    health.add_argument(
        "--turn", action="store_true", help="ask the TURN server of `videoconf turn` (turn.metrics_port)"
    )
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(func=cmd_health)

    drain = sub.add_parser(
        "drain",
        parents=[config_file],
        help="drain this machine's cluster node: its meetings move, then it stops",
    )
    drain.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="return when it has stopped, or after SECONDS",
    )
    drain.set_defaults(func=cmd_drain)

    bot = sub.add_parser("bot", help="join a meeting as a bot and print a JSON report of the media received")

    def run_bot(args: argparse.Namespace) -> int:
        from clients.sdk.bot import cmd_bot

        return cmd_bot(args)

    from clients.sdk.bot import add_arguments

    add_arguments(bot)
    bot.set_defaults(func=run_bot)

    loadtest = sub.add_parser(
        "loadtest",
        parents=[config_file],
        help="load a node with bots: scenarios, a report and a capacity search",
    )

    def run_loadtest(args: argparse.Namespace) -> int:
        from clients.loadtest.cli import cmd_loadtest

        runtime.install()
        return cmd_loadtest(args, load_settings)

    from clients.loadtest.cli import add_arguments as loadtest_arguments

    loadtest_arguments(loadtest)
    loadtest.set_defaults(func=run_loadtest)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser(
        "show", parents=[config_file], help="print the effective configuration, secrets masked"
    )
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
