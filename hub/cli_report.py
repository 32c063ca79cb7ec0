"""``inboxhub report``: the reports API's tables in a terminal, read from Redis directly.

    inboxhub report [summary] [--from D] [--to D] [--tz ZONE] [--dimension D --value V]
    inboxhub report breakdown --by agent|queue|language|market|channel|skill|hour_of_day|...
    inboxhub report timeseries [--interval hour|day]
    (every form takes --csv or --json)

Only Redis is needed: the hub's aggregator keeps the buckets current; this reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from hub.cli_redis import with_redis
from hub.config import LoadedConfig
from hub.reports import (
    BREAKDOWNS,
    TableRow,
    breakdown,
    parse_moment,
    parse_zone,
    report_range,
    summary,
    table_rows,
    timeseries,
    to_csv,
)
from storage.kpis import ALL, DIMENSIONS, KpiStore

SHOWN = ("first_response", "next_response", "resolution", "queue_wait")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("report", help="KPI tables: response times, resolution, volume")
    parser.add_argument("kind", nargs="?", choices=("summary", "breakdown", "timeseries"),
                        default="summary")
    parser.add_argument("--from", dest="start", help="a date, date and time, or UNIX seconds "
                                                     "(default: 7 days before --to)")
    parser.add_argument("--to", dest="end", help="end, exclusive (default: now)")
    parser.add_argument("--tz", help="IANA time zone (default: the team's business hours')")
    parser.add_argument("--by", choices=BREAKDOWNS, help="breakdown rows (required there)")
    parser.add_argument("--dimension", choices=(ALL, *DIMENSIONS), default=ALL)
    parser.add_argument("--value", help="the dimension's value")
    parser.add_argument("--interval", choices=("hour", "day"), default="day")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true")
    out.add_argument("--json", action="store_true")
    parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(run=run, read_only=True)


def run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    hours = loaded.config.routing.business_hours
    try:
        zone = parse_zone(args.tz) if args.tz else (hours.timezone if hours else "UTC")
        start = parse_moment(args.start, zone) if args.start else None
        end = parse_moment(args.end, zone) if args.end else None
        span = report_range(start, end, zone, time.time())
        if args.kind == "breakdown" and not args.by:
            raise ValueError(f"breakdown needs --by ({', '.join(BREAKDOWNS)})")
        if (args.dimension == ALL) != (args.value is None):
            raise ValueError("--dimension and --value go together")
    except ValueError as exc:
        print(f"inboxhub: report: {exc}", file=sys.stderr)
        return 2

    async def read(client: Any) -> int:
        kpis = KpiStore(client, retention_days=loaded.config.reports.retention_days)
        result: Any
        if args.kind == "breakdown":
            result = await breakdown(kpis, span, args.by)
            first = args.by
        elif args.kind == "timeseries":
            result = await timeseries(kpis, span, args.interval, dimension=args.dimension,
                                      value=args.value)
            first = "start"
        else:
            result = await summary(kpis, span, dimension=args.dimension, value=args.value)
            first = args.dimension
        rows = table_rows(result)
        if args.json:
            print(msgspec.json.encode(result).decode())
        elif args.csv:
            sys.stdout.write(to_csv(rows, first))
        else:
            print(f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(span.start))} .. "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(span.end))} ({span.zone})")
            print(table(rows, first))
        return 0

    return asyncio.run(with_redis(loaded, read))


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f}m" if seconds < 86400 else f"{seconds / 3600:.1f}h"


def table(rows: Sequence[TableRow], first: str) -> str:
    """Aligned columns: counts, then mean / p90 of the main durations (business time)."""
    header = [first, "convs", "in", "replies", "resolved", "reopened"] + [
        f"{m} mean/p90" for m in SHOWN] + ["csat"]
    lines = [header]
    for key, durations, counts, csat, _online in rows:
        lines.append([key, str(counts["conversations"]), str(counts["messages_in"]),
                      str(counts["replies"]), str(counts["resolved"]), str(counts["reopened"])]
                     + [f"{_minutes(durations[m].mean_business_seconds)}/"
                        f"{_minutes(durations[m].p90_business_seconds)}" for m in SHOWN]
                     + ["-" if csat.mean_score is None
                        else f"{csat.mean_score:.2f} ({csat.answered})"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)
