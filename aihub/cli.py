"""The ``aihub`` command (SPEC.md §7).

Each sub-command parses its arguments and calls one function of the core; nothing else lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
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
    from aihub.db.setup import migrate

    applied = asyncio.run(migrate(get_settings()))
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
    serve(settings)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from aihub.runner import run_file

    return asyncio.run(run_file(get_settings(), args))


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
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("run", help="run a workflow file and follow it")
    p.add_argument("file")
    p.add_argument("-p", "--param", action="append", default=[], metavar="K=V", help="run parameter")
    p.add_argument("--name", help="run name")
    p.add_argument("--watch", action="store_true", help="follow the run (always on when embedded)")
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
