"""``GET /api/v1/reports/...``: the KPI tables for supervisors, as JSON or CSV.

Every endpoint takes ``from`` / ``to`` (a date, a date and time, or UNIX seconds; a date or
time without an offset is in ``tz``), ``tz`` (default: the team's business-hours time zone)
and ``format=json|csv``. Summary and timeseries narrow to one dimension value
(``dimension=language&value=es``); a breakdown lists every value of one dimension, or hours
of the day / days of the week.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from hub import keys as K
from hub import query as q
from hub.api import json_response
from hub.auth import require_role
from hub.chart_words import LANGUAGES, words
from hub.charts import bar_chart, line_chart
from hub.errors import ApiError
from hub.openapi import SVG, OrCsv, operation
from hub.reports import (
    BREAKDOWNS,
    Breakdown,
    ReportRange,
    Summary,
    Timeseries,
    breakdown,
    parse_moment,
    parse_zone,
    report_range,
    series_by,
    summary,
    table_rows,
    timeseries,
    to_csv,
)
from storage.kpis import ALL, DIMENSIONS

routes = web.RouteTableDef()

_RANGE = (
    q.text("from", "start of the range: 2026-11-01, 2026-11-01T09:00, with an offset, or "
                   "UNIX seconds (default: 7 days before 'to')", 40),
    q.text("to", "end of the range, exclusive, same forms (default: now)", 40),
    q.text("tz", "IANA time zone for dates without an offset and for days and hours of the "
                 "report (default: the team's business-hours zone)", 64),
    q.choice("format", "json (default) or csv", ("json", "csv")),
)
_ONE_VALUE = (
    q.choice("dimension", "narrow to one value of this dimension (default: all)",
             (ALL, *DIMENSIONS)),
    q.text("value", "the dimension's value (an agent id, queue, language, market, channel "
                    "type or skill)", 80),
)
SUMMARY_QUERY = q.Query((*_RANGE, *_ONE_VALUE))
BREAKDOWN_QUERY = q.Query((*_RANGE, q.choice("by", "what the rows are (required)", BREAKDOWNS)))
CHARTS = ("response_time", "volume", "leaderboard", "csat")
CHART_QUERY = q.Query((
    *_RANGE[:3],
    q.choice("chart", "response_time (mean first response, business minutes), volume "
                      "(conversations), leaderboard (resolved per agent) or csat (mean "
                      "satisfaction score); required", CHARTS),
    q.choice("by", "the lines of a response_time or volume chart (default language)",
             ("language", "market", "channel", "queue", "skill")),
    q.choice("interval", "hour or day (default)", ("hour", "day")),
    q.choice("lang", "the language of the chart's title, axis and legend words: en "
                     "(default) or zh, the web inbox's interface languages", LANGUAGES),
))
TIMESERIES_QUERY = q.Query((
    *_RANGE, *_ONE_VALUE, q.choice("interval", "hour or day (default)", ("hour", "day"))))


def team_zone(request: web.Request) -> str:
    hours = request.app[K.CONFIG].config.routing.business_hours
    return hours.timezone if hours is not None else "UTC"


def _span(request: web.Request, query: dict[str, Any]) -> ReportRange:
    def parsed(name: str, parse: Any, *args: Any) -> Any:
        try:
            return parse(query[name], *args) if name in query else None
        except ValueError as exc:
            raise ApiError(400, f"{name}: {exc}", "invalid_parameter") from None

    zone = parsed("tz", parse_zone) or team_zone(request)
    start, end = parsed("from", parse_moment, zone), parsed("to", parse_moment, zone)
    try:
        return report_range(start, end, zone, time.time())
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_parameter") from None


def _dimension(query: dict[str, Any]) -> tuple[str, str | None]:
    dimension = query.get("dimension", ALL)
    value = query.get("value")
    if dimension != ALL and value is None:
        raise ApiError(400, f"dimension={dimension} needs a value", "invalid_parameter")
    if dimension == ALL and value is not None:
        raise ApiError(400, "value needs a dimension", "invalid_parameter")
    return dimension, value


def _csv(body: str, name: str) -> web.Response:
    return web.Response(
        text=body, content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="inboxhub-{name}.csv"'})


def _kpis(request: web.Request) -> Any:
    kpis = request.app.get(K.KPIS)
    if kpis is None:
        raise ApiError(503, "reports are not available: the hub is starting", "unavailable")
    return kpis


@routes.get("/api/v1/reports/summary")
@operation(
    "KPI summary over a range: response times, resolution, counts and rates",
    {200: OrCsv(Summary)}, role="supervisor", tag="reports", query=SUMMARY_QUERY,
    description="Durations in seconds, wall and business time (the team's business hours), "
                "with p50/p90 from histograms (accurate to a bucket's width). Spam and "
                "blocked conversations are left out. The aggregator runs a few seconds "
                "behind the event log.",
)
async def get_summary(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    query = SUMMARY_QUERY.parse(request)
    span = _span(request, query)
    dimension, value = _dimension(query)
    result = await summary(_kpis(request), span, dimension=dimension, value=value)
    if query.get("format") == "csv":
        return _csv(to_csv(table_rows(result), "dimension"),
                    "summary")
    return json_response(result)


@routes.get("/api/v1/reports/breakdown")
@operation(
    "KPIs per agent, queue, language, market, channel, skill, hour of day or day of week",
    {200: OrCsv(Breakdown)}, role="supervisor", tag="reports", query=BREAKDOWN_QUERY,
)
async def get_breakdown(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    query = BREAKDOWN_QUERY.parse(request)
    if "by" not in query:
        raise ApiError(400, f"by is required (one of {', '.join(BREAKDOWNS)})",
                       "invalid_parameter")
    result = await breakdown(_kpis(request), _span(request, query), query["by"])
    if query.get("format") == "csv":
        return _csv(to_csv(table_rows(result), result.by), f"by-{result.by}")
    return json_response(result)


@routes.get("/api/v1/reports/timeseries")
@operation(
    "KPIs per hour or day over a range, empty intervals included",
    {200: OrCsv(Timeseries)}, role="supervisor", tag="reports", query=TIMESERIES_QUERY,
)
async def get_timeseries(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    query = TIMESERIES_QUERY.parse(request)
    span = _span(request, query)
    interval = query.get("interval", "day")
    if interval == "hour" and span.end - span.start > 31 * 86400:
        raise ApiError(400, "an hourly series covers at most 31 days", "invalid_parameter")
    dimension, value = _dimension(query)
    result = await timeseries(_kpis(request), span, interval, dimension=dimension,
                              value=value)
    if query.get("format") == "csv":
        return _csv(to_csv(table_rows(result), "start"), "timeseries")
    return json_response(result)


@routes.get("/api/v1/reports/chart")
@operation(
    "A chart of the reports as an SVG image, drawn on the server",
    {200: SVG}, role="supervisor", tag="reports", query=CHART_QUERY,
    description="For the supervisor page (an <img>): response time and volume over time by "
                "language, market, channel, queue or skill, and the agent leaderboard. "
                "The image has no script and no external reference.",
)
async def get_chart(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    query = CHART_QUERY.parse(request)
    if "chart" not in query:
        raise ApiError(400, f"chart is required (one of {', '.join(CHARTS)})",
                       "invalid_parameter")
    span = _span(request, query)
    interval = query.get("interval", "day")
    if interval == "hour" and span.end - span.start > 31 * 86400:
        raise ApiError(400, "an hourly chart covers at most 31 days", "invalid_parameter")
    kpis = _kpis(request)
    chart, by = query["chart"], query.get("by", "language")
    title, unit, empty = words(query.get("lang", "en"), chart, by)
    if chart == "leaderboard":
        rows = (await breakdown(kpis, span, "agent")).rows
        ranked = sorted(((r.key, float(r.counts["resolved"])) for r in rows),
                        key=lambda kv: (-kv[1], kv[0]))
        svg = bar_chart(title, ranked, unit, empty=empty)
    else:
        measure = {"response_time": "first_response", "volume": "conversations",
                   "csat": "csat"}[chart]
        labels, series = await series_by(kpis, span, interval, by, measure)
        svg = line_chart(title, labels, series, unit, empty=empty)
    return web.Response(
        text=svg, content_type=SVG,
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
