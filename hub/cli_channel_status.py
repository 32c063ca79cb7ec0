"""``inboxhub channels status [INSTANCE] [--json]``: channel health read from Redis, so it works
beside a running ``serve`` (any number of processes: their figures are summed there).

Registered by ``hub.cli`` (``add_parser`` on the ``channels`` subcommands); read-only, so it
needs no serve-time secrets."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from hub.channel_auth import oauth_instances
from hub.channel_health import ChannelHealth, health_service, summary_status
from hub.config import LoadedConfig
from storage.health import ErrorAt
from storage.store import Store
from storage.tokens import TokenKeyError

ACTION = "status"


def add_parser(channels: Any) -> argparse.ArgumentParser:
    """``channels status`` on the ``channels`` subparsers (``hub.cli``)."""
    parser: argparse.ArgumentParser = channels.add_parser(
        ACTION, help="health of every channel instance (or one): inbound, webhooks, polls, "
                     "sends, alerts")
    parser.add_argument("instance", nargs="?", help="one channel instance (default: all)")
    parser.add_argument("--json", action="store_true")
    return parser


async def channel_status(store: Store, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    tokens = None
    if oauth_instances(loaded.config):
        from hub.app import oauth_token_store  # the serve-time wiring, only when needed

        try:
            tokens = await oauth_token_store(loaded, store.redis, create_key=False)
        except TokenKeyError as exc:  # the rest of the status is still worth showing
            print(f"inboxhub: token state not shown: {exc}", file=sys.stderr)
    service = health_service(loaded, store.redis, tokens=tokens)
    records = await service.records(args.instance)
    if args.instance is not None and not records:
        print(f"inboxhub: no channel instance {args.instance!r} is configured", file=sys.stderr)
        return 1
    if args.json:
        body: Any = records[0] if args.instance is not None else {"channels": records}
        print(msgspec.json.encode(body).decode())
        return 0
    now = time.time()
    if args.instance is not None:
        print(detail(records[0], now))
    else:
        print(table(records, now))
    return 0


def ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    return f"{duration(max(0.0, now - t))} ago"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _error(error: ErrorAt | None, now: float) -> str:
    return "-" if error is None else f"{error.error} ({ago(error.at, now)})"


def _state(value: dict[str, Any] | None) -> str:
    """A plugged-in component's state (token, fetch backlog) in a few words."""
    if value is None:
        return "-"
    if "state" in value:
        return str(value["state"])
    return ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict | list))


def _webhooks(c: ChannelHealth) -> str:
    if c.webhook is None:
        return "-"
    rejected = sum(c.webhook.rejected.values())
    return f"{c.webhook.accepted} ok / {rejected} rejected"


def _pushes(c: ChannelHealth) -> str:
    if c.webhook is None:
        return "-"
    return f"{_rate(c.webhook.success_rate_6h)} of {c.webhook.pushes_6h}"


def _lag(c: ChannelHealth) -> str:
    if c.poll is None:
        return "-"
    return "never polled" if c.poll.lag_seconds is None else duration(c.poll.lag_seconds)


def table(records: list[ChannelHealth], now: float) -> str:
    if not records:
        return "no channels configured"
    header = ("INSTANCE", "TYPE", "STATUS", "LAST INBOUND", "WEBHOOKS", "6 H OK", "POLL LAG",
              "TOKEN", "FETCHES", "LAST SEND ERROR")
    rows = [header] + [
        (c.instance, c.type, summary_status(c), ago(c.last_inbound_at, now), _webhooks(c),
         _pushes(c), _lag(c), _state(c.token), _state(c.fetch_backlog),
         _error(c.last_send_error, now))
        for c in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
             + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def detail(c: ChannelHealth, now: float) -> str:
    labels = f" labels: {', '.join(c.labels)}" if c.labels else ""
    lines = [f"{c.instance} ({c.type}){labels}  status: {summary_status(c)}"
             + ("" if c.enabled else " (disabled in the config)")]
    silence = ("no silence alert configured" if c.alert_after_silence_minutes is None
               else f"alert after {c.alert_after_silence_minutes} min of silence")
    lines.append(f"  last inbound:   {ago(c.last_inbound_at, now)} ({silence})")
    if c.webhook is not None:
        w = c.webhook
        rejected = ", ".join(f"{k} {n}" for k, n in w.rejected.items())
        lines.append(f"  webhooks:       {w.accepted} accepted ({w.slow} slow); rejected: "
                     f"{rejected}")
        rule = f" — {c.push_subscription} subscription rule" if c.push_subscription else ""
        lines.append(f"  last 6 h:       {w.pushes_6h} pushes, {_rate(w.success_rate_6h)} "
                     f"answered well{rule}")
    if c.poll is not None:
        p = c.poll
        lines.append(f"  poll lag:       {_lag(c)} (last success {ago(p.last_success_at, now)}, "
                     f"cursor moved {ago(p.last_advanced_at, now)})")
        for account in p.accounts:
            lag = ("never polled" if account.lag_seconds is None
                   else duration(account.lag_seconds))
            lines.append(f"    {account.account}: lag {lag}, last error "
                         f"{_error(account.last_error, now)}")
    lines.append(f"  token:          {_state(c.token)}")
    lines.append(f"  fetch backlog:  {_state(c.fetch_backlog)}")
    lines.append(f"  last sent:      {ago(c.last_sent_at, now)}; last send error: "
                 f"{_error(c.last_send_error, now)}")
    a = c.alerts
    alerts = []
    if a.silent:
        alerts.append(f"silent (since {ago(a.silent_since, now)})")
    if a.subscription_at_risk is not None:
        alerts.append(f"push subscription at risk: {a.subscription_at_risk} "
                      f"(since {ago(a.subscription_since, now)})")
    evaluated = f"evaluated {ago(a.evaluated_at, now)}"
    lines.append(f"  alerts:         {'; '.join(alerts) or 'none'} ({evaluated})")
    return "\n".join(lines)
