"""The ``aihub`` command (SPEC.md §7).

Each sub-command parses its arguments and calls one function of the core; nothing else lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aihub.settings import get_settings


def _cmd_validate(args: argparse.Namespace) -> int:
    from aihub.domain.spec import SpecError, load_spec_file

    try:
        load_spec_file(Path(args.file))
    except SpecError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    print("ok")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from aihub.runtime import migrate_database

    applied = asyncio.run(migrate_database(get_settings()))
    print("\n".join(applied) if applied else "database is up to date")
    return 0


def _cmd_user_create(args: argparse.Namespace) -> int:
    from aihub.services.users import create_user_cli

    return asyncio.run(create_user_cli(get_settings(), args))


def _cmd_serve(args: argparse.Namespace) -> int:
    from aihub.server import serve

    settings = get_settings()
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    if args.role:
        settings.role = args.role
    serve(settings)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from aihub.cli.login import server_url

    if server_url() is not None:
        return _client(_run_remote, args)
    from aihub.cli.runner import run_file

    return asyncio.run(run_file(get_settings(), args))


# ------------------------------------------------------------------------------------------ client commands


def _client(command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    """Run a client command; a refused or failed request is one line on stderr and a non-zero exit."""
    from aihub.cli.client import ClientError, exit_code

    try:
        return asyncio.run(command(args))
    except ClientError as exc:
        hint = " (run `aihub login` or set AIHUB_TOKEN)" if exc.code == "UNAUTHENTICATED" else ""
        print(f"error: {exc.message}{hint}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


async def _run_remote(args: argparse.Namespace) -> int:
    from aihub.cli.client import connected_client, describe_run, follow_run, report_failure, submit_run
    from aihub.cli.runner import Printer, parse_params

    try:
        params = parse_params(args.param)
        source = await asyncio.to_thread(Path(args.file).read_text)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = connected_client()
    printer = Printer(sys.stdout)
    printer.line(f"server: {client.url} (aihub logout goes back to embedded runs)")
    run = await submit_run(client, source, params=params, name=args.name, use_cache=not args.no_cache)
    printer.line(describe_run(run))
    if not args.watch:
        return 0
    status = await follow_run(client, run, printer)
    if status == "SUCCEEDED":
        return 0
    await report_failure(client, run["id"], printer)
    return 1


def _cmd_login(args: argparse.Namespace) -> int:
    import getpass

    from aihub.cli.client import login, server_url

    url = args.url or server_url()
    if not url:
        print("error: give the server with --url URL (or AIHUB_URL)", file=sys.stderr)
        return 2
    username = args.username or input("username: ")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")

    async def log_in(args: argparse.Namespace) -> int:
        _, where = await login(url, username, password)
        print(f"logged in to {url} as {username}; token saved in {where}")
        return 0

    return _client(log_in, args)


async def _logout(args: argparse.Namespace) -> int:
    from aihub.cli.client import logout

    await logout()
    print("logged out")
    return 0


async def _runs(args: argparse.Namespace) -> int:
    from aihub.cli.client import connected_client, format_runs, list_runs

    runs = await list_runs(
        connected_client(), status=args.status, workflow=args.workflow, owner=args.owner, first=args.limit
    )
    print("\n".join(format_runs(runs)))
    return 0


async def _logs(args: argparse.Namespace) -> int:
    from aihub.cli.client import connected_client, follow_log, print_log

    client = connected_client()
    if args.follow:
        await follow_log(client, args.run, args.node, args.attempt, sys.stdout)
    else:
        await print_log(client, args.run, args.node, args.attempt, sys.stdout)
    return 0


async def _action(args: argparse.Namespace) -> int:
    from aihub.cli.client import connected_client, describe_run, run_action
    from aihub.cli.runner import parse_params

    extra: dict[str, object] = {}
    if args.command == "retry":
        extra["from"] = args.from_node
    elif args.command == "copy":
        try:
            extra = {"name": args.name, "params": parse_params(args.param) or None}
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    run = await run_action(connected_client(), args.command, args.run, **extra)
    print(describe_run(run))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aihub", description="AIHub Workflow: ML pipelines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a workflow spec file (YAML or JSON)")
    p.add_argument("file")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("user", help="manage users")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    p = user_sub.add_parser("create", help="create a user (prints a generated password)")
    p.add_argument("name")
    p.add_argument("--password", help="password (default: generated and printed once)")
    p.add_argument("--admin", action="store_true", help="make the user an administrator")
    p.add_argument("--team", help="team to join (created if missing)")
    p.add_argument("--leader", action="store_true", help="the user leads --team")
    p.set_defaults(func=_cmd_user_create)

    p = sub.add_parser("serve", help="start API, web UI and engine")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--role",
        choices=["all", "api", "worker"],
        help="all (default, AIHUB_ROLE): API, UI and engine; api: without driving runs; worker: engine and builds",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("run", help="run a workflow file and follow it")
    p.add_argument("file")
    p.add_argument("-p", "--param", action="append", default=[], metavar="K=V", help="run parameter")
    p.add_argument("--name", help="run name")
    p.add_argument("--watch", action="store_true", help="follow the run (always on when embedded)")
    p.add_argument(
        "--no-cache", action="store_true", help="re-run module nodes even when a cached result exists"
    )
    p.set_defaults(func=_cmd_run)

    _add_client_commands(sub)
    return parser


def _add_client_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Commands that talk to a server (AIHUB_URL / AIHUB_TOKEN, or what `aihub login` saved)."""

    def client(func: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
        return lambda args: _client(func, args)

    p = sub.add_parser("login", help="log in to a server and save the token")
    p.add_argument("--url", help="server URL, e.g. http://127.0.0.1:8000 (default: AIHUB_URL)")
    p.add_argument("-u", "--username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=_cmd_login)

    p = sub.add_parser("logout", help="revoke and forget the saved token")
    p.set_defaults(func=client(_logout))

    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--status", action="append", default=[], type=str.upper, help="filter (repeatable)")
    p.add_argument("--workflow", help="workflow id")
    p.add_argument("--owner", help="owner's username")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=client(_runs))

    p = sub.add_parser("logs", help="print a node's log (-f: follow it live)")
    p.add_argument("run")
    p.add_argument("node")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--attempt", type=int, help="attempt number (default: the current one)")
    p.set_defaults(func=client(_logs))

    p = sub.add_parser("stop", help="stop a run")
    p.add_argument("run")
    p.set_defaults(func=client(_action))

    p = sub.add_parser("retry", help="retry a failed or stopped run")
    p.add_argument("run")
    p.add_argument("--from", dest="from_node", metavar="NODE", help="also re-run NODE and its descendants")
    p.set_defaults(func=client(_action))

    p = sub.add_parser("copy", help="start a new run with the same version and params")
    p.add_argument("run")
    p.add_argument("-p", "--param", action="append", default=[], metavar="K=V", help="override a parameter")
    p.add_argument("--name", help="name of the new run")
    p.set_defaults(func=client(_action))


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:  # a bad AIHUB_* setting: one line per setting, naming its variable
        if exc.title != "Settings":
            raise
        for error in exc.errors():
            name = "AIHUB_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"error: {name}: {error['msg']}", file=sys.stderr)
        return 2
