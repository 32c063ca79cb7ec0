"""``inboxhub agents``: sign-in accounts from a terminal, beside the admin API.

    inboxhub agents add ID --name NAME [--role agent|supervisor|admin]
    inboxhub agents passwd ID
    inboxhub agents disable ID | enable ID
    inboxhub agents list [--json]

A password is never an argument (argv shows in ``ps`` and shell history): it is asked twice
on a terminal, or read as the first line of stdin when piped (scripts, provisioning). Only
Redis is needed, not the channels' secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from typing import Any

import msgspec

from hub.cli_redis import stamp, with_redis
from hub.config import LoadedConfig
from storage.accounts import (
    ACCOUNT_ID_PATTERN,
    MAX_PASSWORD,
    AccountExists,
    AccountStore,
    UnknownAccount,
    WeakPassword,
)


def _account_id(text: str) -> str:
    if re.fullmatch(ACCOUNT_ID_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(
            f"an account id is the agent id: letters, digits and ._@- (got {text[:80]!r})")
    return text


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = sub.add_parser("agents", help="sign-in accounts of agents, supervisors, admins")
    actions = agents.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account (the password is asked for)")
    add.add_argument("id", type=_account_id, help="the agent id routing knows")
    add.add_argument("--name", required=True)
    add.add_argument("--role", choices=("agent", "supervisor", "admin"), default="agent")
    passwd = actions.add_parser("passwd", help="set a password; ends the account's sessions")
    passwd.add_argument("id", type=_account_id)
    disable = actions.add_parser("disable", help="disable; ends the account's sessions")
    disable.add_argument("id", type=_account_id)
    enable = actions.add_parser("enable", help="enable a disabled account")
    enable.add_argument("id", type=_account_id)
    listing = actions.add_parser("list", help="every account")
    listing.add_argument("--json", action="store_true")
    for p in (add, passwd, disable, enable, listing):
        p.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.set_defaults(run=run, read_only=True)


def _read_password() -> str:
    if sys.stdin is not None and not sys.stdin.isatty():
        line = sys.stdin.readline(MAX_PASSWORD + 2)
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    try:
        password = _read_password() if args.action in ("add", "passwd") else ""
    except ValueError as exc:
        print(f"inboxhub: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(with_redis(loaded, lambda client: _act(client, args, password)))
    except (WeakPassword, AccountExists) as exc:
        print(f"inboxhub: {exc}", file=sys.stderr)
        return 2
    except UnknownAccount as exc:
        print(f"inboxhub: no account {exc}", file=sys.stderr)
        return 1


async def _act(client: Any, args: argparse.Namespace, password: str) -> int:
    accounts = AccountStore(client)
    if args.action == "add":
        account = await accounts.create(args.id, name=args.name, role=args.role,
                                        password=password)
        print(f"created {account.id} ({account.role})")
    elif args.action == "passwd":
        await accounts.set_password(args.id, password)
        print(f"password of {args.id} set; its sessions ended")
    elif args.action in ("disable", "enable"):
        account = await accounts.set_enabled(args.id, args.action == "enable")
        print(f"{account.id} {'enabled' if account.enabled else 'disabled; sessions ended'}")
    else:
        listed = await accounts.list()
        if args.json:
            sys.stdout.write(msgspec.json.encode(listed).decode() + "\n")
        for account in [] if args.json else listed:
            state = "enabled" if account.enabled else "disabled"
            print(f"{account.id}\t{account.role}\t{state}\t{account.name}\t"
                  f"password set {stamp(account.password_changed_at)}")
    return 0
