"""The ``inboxhub`` command: serve, check, and operator views of quarantine and dead letters."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from hub import cli_channel_status, cli_fetches
from hub.cli_agents import add_commands as add_agent_commands
from hub.cli_channel_auth import add_commands as add_channel_auth_commands
from hub.cli_redis import stamp, with_redis
from hub.cli_report import add_commands as add_report_commands
from hub.config import ConfigError, LoadedConfig, load_config
from hub.redis_connection import replica_acks
from hub.roles import MAX_PROCESSES, ROLES, PortInUse, port_arg, processes_arg, role_arg
from routing.explain import describe, summary
from storage import keys
from storage.embedded import EmbeddedRedisError
from storage.schema import SchemaTooNew
from storage.store import NotRetryable, Store, UnknownMessage
from storage.tokens import TokenKeyError

DEFAULT_CONFIG = os.environ.get("INBOXHUB_CONFIG", "config/example.toml")


# Operator views that only read Redis: they run without the serve-time secrets (API tokens,
# webhook secrets), so an operator can look at a broken hub from a shell that lacks them.
_READ_ONLY = {("quarantine", "list"), ("dlq", "list"), ("routing", "explain"),
              ("channels", "fetches"), ("channels", "status")}


def _limit(text: str) -> int:
    """``--limit``: a positive number of entries (0 or less would silently show nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def command_group(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                  help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subcommands of command ``name`` (``channels``), made by whichever module asks
    first: each module adds its own to it in one call. A subcommand that sets a ``run``
    default (``run(loaded, args) -> exit code``) is dispatched by ``main``; one that sets
    ``read_only`` needs only Redis, not the serve-time secrets."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help)
        parser.set_defaults(_subcommands=parser.add_subparsers(dest="action", required=True))
    group: argparse._SubParsersAction[argparse.ArgumentParser] = parser.get_default(
        "_subcommands")
    return group


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inboxhub", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="TOML config file (default: $INBOXHUB_CONFIG or %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the hub")
    serve.add_argument("--role", type=role_arg, default="all", metavar="{" + ",".join(ROLES) + "}",
                       help="http: webhooks, API and web inbox, no background loops; workers: "
                            "every background loop and poller, HTTP for /healthz, /readyz and "
                            "/metrics only; all (default): both")
    serve.add_argument("--processes", type=processes_arg, default=1, metavar="N",
                       help=f"run N hub processes (1-{MAX_PROCESSES}) sharing the port with "
                            "SO_REUSEPORT, supervised by this one (default 1: no supervisor)")
    serve.add_argument("--port", type=port_arg, default=None,
                       help="listen on this port instead of hub.port (e.g. a workers process "
                            "beside an http one on the same host)")
    # Set by the --processes supervisor on its children only.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("check", help="run every check serve runs at start-up, start nothing")
    q = sub.add_parser("quarantine", help="inputs that could not be normalized")
    qs = q.add_subparsers(dest="action", required=True)
    ql = qs.add_parser("list")
    ql.add_argument("--limit", type=_limit, default=50)
    ql.add_argument("--json", action="store_true")
    qr = qs.add_parser("retry", help="parse a quarantined input again (after a fix or upgrade)")
    qr.add_argument("entry_id")
    d = sub.add_parser("dlq", help="replies that failed for good")
    ds = d.add_subparsers(dest="action", required=True)
    dl = ds.add_parser("list")
    dl.add_argument("--limit", type=_limit, default=50)
    dl.add_argument("--json", action="store_true")
    dr = ds.add_parser("retry")
    dr.add_argument("message_id", nargs="?")
    dr.add_argument("--all", action="store_true", help="every dead-lettered reply")
    r = sub.add_parser("routing", help="routing operations")
    rs = r.add_subparsers(dest="action", required=True)
    rr = rs.add_parser("reload", help="validate the config and make every hub reload routing")
    re_ = rs.add_parser("explain", help="why a conversation went where it went")
    re_.add_argument("conversation_id")
    re_.add_argument("--json", action="store_true")
    channels = command_group(sub, "channels", "channel instances")
    add_channel_auth_commands(channels)
    cli_fetches.add_parser(channels)
    cs = cli_channel_status.add_parser(channels)
    add_agent_commands(sub)
    add_report_commands(sub)
    # Accept --config after the subcommand too (inboxhub check --config FILE).
    for p in (sub.choices["serve"], sub.choices["check"], ql, qr, dl, dr, rr, re_, cs):
        p.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


async def _with_store(loaded: LoadedConfig, action: Callable[[Store], Awaitable[int]]) -> int:
    storage = loaded.config.storage

    async def on_store(client: Any) -> int:
        return await action(Store(client, partitions=storage.partitions,
                                  quarantine_max_entries=storage.quarantine_max_entries,
                                  quarantine_max_bytes=storage.quarantine_max_bytes,
                                  replica_acks=replica_acks(loaded.config)))

    return await with_redis(loaded, on_store)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    read_only = (args.command, getattr(args, "action", None)) in _READ_ONLY or \
        getattr(args, "read_only", False)
    try:
        # check and serve load the same way: channel settings, secrets, the routing engine's
        # parts (language models, skill rules, calendars) are all built here.
        loaded = load_config(args.config, read_only=read_only)
    except ConfigError as exc:
        print(f"inboxhub: config error: {exc}", file=sys.stderr)
        return 2
    level = loaded.config.hub.log_level.upper()
    # Processes that share one output (serve --processes N) say which one wrote each line.
    pooled = args.command == "serve" and (args.processes > 1 or args.reuse_port)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s "
                        + ("[%(process)d] " if pooled else "") + "%(name)s: %(message)s")

    if args.command == "check":
        config = loaded.config
        names = ", ".join(f"{c.name} ({c.type})" for c in config.channels) or "none"
        routing = config.routing
        print(f"{loaded.path}: OK — channels: {names}; routing: "
              f"{len(routing.effective_queues())} queues, {len(routing.rules)} rules, "
              f"{len(routing.agents)} agents, languages {', '.join(routing.languages)}")
        return 0
    try:
        run = getattr(args, "run", None)
        if run is not None:
            return int(run(loaded, args))
        if args.command == "serve" and args.processes > 1:
            from hub.serve_processes import supervise

            return asyncio.run(supervise(loaded, role=args.role, processes=args.processes,
                                         port=args.port))
        if args.command == "serve":
            from hub.serve import serve

            asyncio.run(serve(loaded, role=args.role, port=args.port,
                              reuse_port=args.reuse_port))
            return 0
        if args.command == "channels" and args.action == "fetches":
            return cli_fetches.main(loaded, args)
        if args.command == "quarantine" and args.action == "retry":
            from hub.cli_lifecycle import quarantine_retry

            return asyncio.run(_with_store(loaded, lambda s: quarantine_retry(s, loaded, args)))
        if args.command == "quarantine":
            return asyncio.run(_with_store(loaded, lambda s: _quarantine_list(s, args)))
        if args.command == "dlq" and args.action == "list":
            return asyncio.run(_with_store(loaded, lambda s: _dlq_list(s, args)))
        if args.command == "dlq" and args.action == "retry" and args.all:
            from hub.cli_lifecycle import dlq_retry_all

            return asyncio.run(_with_store(loaded, dlq_retry_all))
        if args.command == "dlq" and args.action == "retry":
            if not args.message_id:
                print("inboxhub: dlq retry needs a MESSAGE_ID or --all", file=sys.stderr)
                return 2
            return asyncio.run(_with_store(loaded, lambda s: _dlq_retry(s, args.message_id)))
        if args.command == "routing" and args.action == "reload":
            return asyncio.run(_with_store(loaded, _routing_reload))
        if args.command == "routing" and args.action == "explain":
            return asyncio.run(_with_store(loaded, lambda s: _routing_explain(s, args)))
        if args.command == "channels" and args.action == cli_channel_status.ACTION:
            return asyncio.run(_with_store(
                loaded, lambda s: cli_channel_status.channel_status(s, loaded, args)))
    except (EmbeddedRedisError, SchemaTooNew, TokenKeyError, PortInUse) as exc:
        print(f"inboxhub: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


async def _quarantine_list(store: Store, args: argparse.Namespace) -> int:
    entries = await store.list_quarantine(args.limit)
    if args.json:
        print(msgspec.json.encode(entries).decode())
        return 0
    if not entries:
        print("quarantine is empty")
    for e in entries:
        cut = " (truncated)" if e.raw_truncated else ""
        print(f"{e.id}  {stamp(e.received_at)}  {e.channel_instance}  {e.error}  "
              f"[{len(e.raw)} chars{cut}]")
    return 0


async def _dlq_list(store: Store, args: argparse.Namespace) -> int:
    entries = await store.list_dead_letters(args.limit)
    if args.json:
        print(msgspec.json.encode(entries).decode())
        return 0
    if not entries:
        print("dead-letter queue is empty")
    for e in entries:
        print(f"{e.message_id}  {stamp(e.failed_at)}  {e.channel_instance}  "
              f"attempts={e.attempts}  {e.error}")
    return 0


async def _dlq_retry(store: Store, message_id: str) -> int:
    try:
        await store.retry_dead_letter(message_id)
    except UnknownMessage:
        print(f"inboxhub: no message {message_id}", file=sys.stderr)
        return 1
    except NotRetryable:
        print(f"inboxhub: message {message_id} is not a failed reply", file=sys.stderr)
        return 1
    print(f"{message_id} queued for sending again")
    return 0


async def _routing_reload(store: Store) -> int:
    receivers = await store.redis.publish(keys.ROUTING_RELOAD_CHANNEL, b"reload")
    if receivers == 0:
        print("config is valid; no running hub process received the reload")
        return 1
    print(f"config is valid; {receivers} hub process(es) reloading routing")
    return 0


async def _routing_explain(store: Store, args: argparse.Namespace) -> int:
    cid = args.conversation_id
    conversation = await store.get_conversation(cid)
    if conversation is None:
        print(f"inboxhub: no conversation {cid}", file=sys.stderr)
        return 1
    base = keys.ROUTING_BASE
    state = {k.decode(): v.decode() for k, v in
             (await store.redis.hgetall(f"{base}rc:{cid}")).items()}
    log = [msgspec.json.decode(row) for row in
           reversed(await store.redis.lrange(f"{base}rc:{cid}:log", 0, -1))]
    if args.json:
        entries = [{**e, "text": describe(e, state)} for e in log]
        print(msgspec.json.encode({"state": state, "summary": summary(state, log),
                                   "log": entries}).decode())
        return 0
    print(f"conversation {cid}  channel={conversation.channel_instance}  "
          f"status={conversation.status}  assignee={conversation.assignee or '-'}")
    print(f"routing: queue={state.get('queue', '-')} step={state.get('step', '-')} "
          f"priority={state.get('priority', '-')} status={state.get('status', '-')}")
    print(f"now: {summary(state, log)}")
    for entry in log:
        when = stamp(float(entry.get("at", 0)))
        print(f"  {when}  {entry.get('event', '?'):<11} {describe(entry, state)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
