"""`scriptflow`: start the stack or its parts, manage users and tokens (API.md "Starting it").

Kept light: Prefect reads its settings once, when first imported, so it is imported only by
the commands that need it, inside them, once its environment points at SCRIPTFLOW_HOME."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import getpass
import logging
import os
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

# Light on purpose: the long-running commands install their stop signals before the heavy
# imports (a second of them), so each command imports what it needs inside it.
from scriptflow_prefect.commands.stopping import STOP, StopRequested

if TYPE_CHECKING:
    from scriptflow_prefect.platform.db import Database
    from scriptflow_prefect.platform.settings import Settings


def _settings() -> Settings:
    from scriptflow_prefect.commands import startup
    from scriptflow_prefect.platform.settings import SettingsError, load_settings, set_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"scriptflow: bad setting: {exc}")
    startup.prepare_home(settings)
    set_settings(settings)
    return settings


def _database(settings: Settings) -> Database:
    from scriptflow_prefect.platform.db import Database

    db = Database(settings.sqlalchemy_url)
    db.migrate()
    return db


def cmd_up(args) -> int:
    from scriptflow_prefect.commands import stack

    return stack.run_stack(_settings())


def cmd_server(args) -> int:
    from scriptflow_prefect.commands import prefect_server

    return prefect_server.run_prefect_server_foreground(_settings())


def cmd_worker(args) -> int:
    from scriptflow_prefect.commands import worker

    return worker.run_worker_foreground(_settings())


def cmd_web(args) -> int:
    from scriptflow_prefect.commands import stack

    return stack.run_web_foreground(_settings())


def cmd_prefect_env(args) -> int:
    from scriptflow_prefect.commands.power_env import print_prefect_env
    from scriptflow_prefect.platform.settings import SettingsError, load_settings

    # Not _settings(): that prepares the home, and this command must not invent one.
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"scriptflow: bad setting: {exc}")
    return print_prefect_env(settings)


def _read_password(from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != first:
        sys.exit("scriptflow: the passwords differ")
    return first


def cmd_user_add(args) -> int:
    from scriptflow_prefect.accounts import service as accounts

    settings = _settings()
    db = _database(settings)
    password = _read_password(args.password_stdin)
    with db.session() as s:
        try:
            accounts.create_user(
                s,
                args.name,
                password,
                is_admin=args.admin,
                email=args.email,
                is_power_user=args.power_user,
            )
        except accounts.AccountError as exc:
            sys.exit(f"scriptflow: {exc}")
    role = " (admin)" if args.admin else " (power user)" if args.power_user else ""
    print(f"User {args.name} added{role}.")
    if args.email:  # their address may be a recipient: the notifications follow
        _notifications_follow_users(settings, db)
    return 0


def _notifications_follow_users(settings: Settings, db) -> None:
    import asyncio

    from scriptflow_prefect.platform.prefect_env import apply_client_env

    # Prefect reads its settings when first imported: point it at the stack's server first,
    # or its client starts a temporary server of its own and tells that one.
    apply_client_env(settings)
    from scriptflow_prefect.notifications import service as notifications
    from scriptflow_prefect.platform.errors import ServiceError

    with db.session() as s:
        try:
            asyncio.run(notifications.users_changed(s, settings))
        except ServiceError as exc:
            sys.exit(f"scriptflow: {exc}")


def cmd_user_list(args) -> int:
    from sqlalchemy import select

    from scriptflow_prefect.accounts.models import User

    db = _database(_settings())
    with db.session() as s:
        for user in s.scalars(select(User).order_by(User.username)):
            role = "admin" if user.is_admin else "power user" if user.is_power_user else "user"
            state = "active" if user.is_active else "disabled"
            print(f"{user.username}\t{role}\t{state}\t{user.email or ''}")
    return 0


def cmd_user_passwd(args) -> int:
    from scriptflow_prefect.accounts import service as accounts

    db = _database(_settings())
    with db.session() as s:
        user = accounts.find_user(s, args.name)
        if user is None:
            sys.exit(f"scriptflow: there is no user named {args.name}")
        try:
            accounts.set_password(user, _read_password(args.password_stdin))
        except accounts.AccountError as exc:
            sys.exit(f"scriptflow: {exc}")
    print(f"Password of {args.name} changed; their other sessions are signed out.")
    return 0


def cmd_token_create(args) -> int:
    from scriptflow_prefect.accounts import service as accounts

    db = _database(_settings())
    with db.session() as s:
        user = accounts.find_user(s, args.name)
        if user is None:
            sys.exit(f"scriptflow: there is no user named {args.name}")
        ttl = timedelta(days=args.days) if args.days else None
        token, _row = accounts.create_token(s, user, label=args.label or "cli", ttl=ttl)
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scriptflow", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="Prefect server, script runner and web overlay, in the foreground"
    ).set_defaults(func=cmd_up)
    sub.add_parser("server", help="only the Prefect server").set_defaults(func=cmd_server)
    sub.add_parser("worker", help="only a script runner (a ScriptFlow worker)").set_defaults(
        func=cmd_worker
    )
    sub.add_parser("web", help="only the web overlay").set_defaults(func=cmd_web)
    sub.add_parser(
        "prefect-env", help="shell exports that point `prefect` at ScriptFlow"
    ).set_defaults(func=cmd_prefect_env)

    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="user_cmd", required=True
    )
    add = user.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--email")
    add.add_argument(
        "--power-user", action="store_true", help="may open the Prefect UI (admins always may)"
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    add.set_defaults(func=cmd_user_add)
    user.add_parser("list", help="list the users, their role and state").set_defaults(
        func=cmd_user_list
    )
    passwd = user.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(func=cmd_user_passwd)

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    create = token.add_parser("create", help="print a new API token for user NAME")
    create.add_argument("name")
    create.add_argument("--label")
    create.add_argument("--days", type=int, help="expire after this many days (default: never)")
    create.set_defaults(func=cmd_token_create)
    return p


LONG_RUNNING = ("up", "web", "worker", "server")


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _limit_malloc_arenas(args) -> None:
    """glibc gives each thread its own malloc arena; with a thread per run that multiplies
    idle memory. Two arenas keep the runner lean: set for this process now, before its
    first thread (glibc counts arenas from then), and for its children (Prefect's server)
    in their environment. Not by re-executing with the variable set: that doubled the
    interpreter's start, a second where a stop signal found no handler yet."""
    if sys.platform.startswith("linux") and args.command in LONG_RUNNING:
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        with contextlib.suppress(OSError, AttributeError, ValueError):
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in LONG_RUNNING:
        STOP.install()  # first: Ctrl-C or SIGTERM from here on is a clean stop
    try:
        if argv is None:  # the command line, not a test calling main()
            _limit_malloc_arenas(args)
        from scriptflow_prefect.commands import startup

        startup.private_process()
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("scriptflow").setLevel(logging.INFO)
        return args.func(args) or 0
    except StopRequested:  # before the command had anything to stop
        return 0


if __name__ == "__main__":
    sys.exit(main())
