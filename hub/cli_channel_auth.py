"""``inboxhub channels auth INSTANCE`` and ``inboxhub channels tokens``: load a channel's first
OAuth tokens, see every instance's token state. Never a token on the command line (``ps``
shows argv): they come as JSON on stdin or from environment variables named by flags, and
nothing prints them.

    inboxhub channels auth meli < token-answer.json
    MELI_AT=... MELI_RT=... inboxhub channels auth meli --access-token-env MELI_AT \\
        --refresh-token-env MELI_RT --expires-in 21600
    inboxhub channels auth meli --show
    inboxhub channels tokens [--json]

Both only reach Redis (and the token key): they run without the API tokens and webhook
secrets ``serve`` needs. Registered in ``hub.cli`` under the shared ``channels`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hub.cli_redis import stamp, with_redis
from hub.config import LoadedConfig

T = TypeVar("T")


def add_commands(channels: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``auth`` and ``tokens`` to the ``channels`` command's subcommands."""
    auth = channels.add_parser(
        "auth", allow_abbrev=False,  # "--access-token VALUE" must not pass for the -env flag
        help="load an instance's OAuth tokens: JSON on stdin, or --access-token-env",
        description="Reads {\"access_token\", \"refresh_token\", \"expires_in\" or "
                    "\"expires_at\", \"scope\"} from stdin (a provider's token answer), or "
                    "the tokens from the environment variables the flags name. Prints the "
                    "instance's token state, never the tokens.")
    auth.add_argument("instance")
    auth.add_argument("--access-token-env", metavar="NAME", type=_env_name,
                      help="read the access token from environment variable NAME")
    auth.add_argument("--refresh-token-env", metavar="NAME", type=_env_name,
                      help="read the refresh token from environment variable NAME")
    auth.add_argument("--expires-in", type=_seconds, metavar="SECONDS")
    auth.add_argument("--expires-at", type=_seconds, metavar="UNIX_TIME")
    auth.add_argument("--scope")
    auth.add_argument("--show", action="store_true",
                      help="print the instance's token state; load nothing")
    auth.add_argument("--json", action="store_true")
    auth.set_defaults(run=run_auth, read_only=True)
    tokens = channels.add_parser("tokens", help="every OAuth instance's token state")
    tokens.add_argument("--json", action="store_true")
    tokens.set_defaults(run=run_tokens, read_only=True)
    for p in (auth, tokens):
        p.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _env_name(text: str) -> str:
    """An environment variable's name; never echoed otherwise (it might be a pasted token)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", text) is None:
        raise argparse.ArgumentTypeError("expected the NAME of an environment variable "
                                         "(letters, digits, _), not its value")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") \
            from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fail(message: str, code: int = 1) -> int:
    print(f"inboxhub: {message}", file=sys.stderr)
    return code


def _describe(state: Any, now: float) -> str:
    """One line per instance, for a person: status, expiry, last refresh, last error."""
    parts = [f"{state.instance}: {state.status}"]
    if state.expires_at is not None:
        left = state.expires_at - now
        when = f"in {_span(left)}" if left > 0 else f"{_span(-left)} ago"
        parts.append(f"access token expires {stamp(state.expires_at)} ({when})")
    if state.status != "missing":
        parts.append("refreshable" if state.refreshable else "no refresh token")
        parts.append(f"generation {state.generation}")
    if state.last_refresh_at is not None:
        parts.append(f"last refresh {stamp(state.last_refresh_at)}")
    if state.last_error:
        parts.append(f"last error: {state.last_error}")
    if state.status in ("missing", "needs_reauth"):
        parts.append(f"load tokens with: inboxhub channels auth {state.instance}")
    return "; ".join(parts)


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours < 48 else f"{hours // 24}d {hours % 24}h"


async def _with_token_store(loaded: LoadedConfig, action: Callable[[Any], Awaitable[T]]) -> T:
    from hub.app import oauth_token_store

    config = loaded.config

    async def on_client(client: Any) -> T:
        # With the embedded Redis the data directory is the hub's own, so its key file may be
        # made here (tokens loaded before the first serve); against an external Redis the hub
        # processes may be elsewhere, and a key made here would seal tokens none can read.
        return await action(await oauth_token_store(
            loaded, client, create_key=not config.storage.redis_url))

    return await with_redis(loaded, on_client)


def _read_tokens(args: argparse.Namespace) -> bytes:
    """The load request's JSON: from the environment variables named by flags, else stdin."""
    import msgspec

    from hub.channel_auth import MAX_BODY_BYTES

    if args.access_token_env:
        body: dict[str, Any] = {}
        for field, name in (("access_token", args.access_token_env),
                            ("refresh_token", args.refresh_token_env)):
            if name:
                value = os.environ.get(name)
                if not value:
                    raise ValueError(f"environment variable {name} is not set")
                body[field] = value
        for field in ("expires_in", "expires_at", "scope"):
            if getattr(args, field) is not None:
                body[field] = getattr(args, field)
        return msgspec.json.encode(body)
    if args.refresh_token_env or args.expires_in or args.expires_at or args.scope:
        raise ValueError("--refresh-token-env, --expires-in, --expires-at and --scope go with "
                         "--access-token-env; with JSON on stdin, put them in the JSON")
    if sys.stdin is None:
        raise ValueError("no tokens: pipe the JSON on stdin or use --access-token-env")
    if sys.stdin.isatty():
        print("paste the token JSON, then press Ctrl-D:", file=sys.stderr)
    data = sys.stdin.buffer.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise ValueError(f"the tokens are larger than {MAX_BODY_BYTES} bytes")
    if not data.strip():
        raise ValueError("no tokens on stdin (or use --access-token-env)")
    return data


def run_auth(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    import msgspec

    from hub.channel_auth import NotAnOAuthChannel, oauth_channel, parse_token_load

    try:
        oauth_channel(loaded.config, args.instance)
    except NotAnOAuthChannel as exc:
        return _fail(str(exc))
    except LookupError as exc:
        return _fail(str(exc))
    if args.show:
        state = asyncio.run(_with_token_store(loaded, lambda s: s.state(args.instance)))
    else:
        try:
            tokens = parse_token_load(_read_tokens(args))
        except ValueError as exc:
            return _fail(f"invalid tokens: {exc}", 2)
        state = asyncio.run(_with_token_store(loaded, lambda s: s.put(args.instance, tokens)))
    if args.json:
        print(msgspec.json.encode(state).decode())
    else:
        print(("tokens loaded. " if not args.show else "") + _describe(state, time.time()))
    return 0


def run_tokens(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    import msgspec

    from hub.channel_auth import ChannelTokenStates, oauth_instances

    names = oauth_instances(loaded.config)

    async def states(store: Any) -> list[Any]:
        return [await store.state(name) for name in names]

    found = asyncio.run(_with_token_store(loaded, states)) if names else []
    if args.json:
        print(msgspec.json.encode(ChannelTokenStates(found)).decode())
        return 0
    if not found:
        print("no configured channel uses OAuth tokens")
    now = time.time()
    for state in found:
        print(_describe(state, now))
    return 0
