"""Reports over the KPI buckets: the same tables for the API (hub/reports_api.py), its CSV
export and ``inboxhub report``.

A range is read hour by hour from ``storage.kpis`` and regrouped in the team's time zone
(``routing.business_hours.timezone`` unless the caller names one), so "Monday" and "09:00"
mean the team's Monday and 09:00.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from storage.kpis import (
    ALL,
    COUNTS,
    DIMENSIONS,
    DURATIONS,
    HOUR,
    SCORES,
    KpiStore,
    Stat,
    collect,
    finite,
    mean,
    percentile,
    share,
)

MAX_RANGE_DAYS = 400
LATEST = 32_503_680_000.0  # the year 3000: later is a typo, and past what datetime handles
Interval = Literal["hour", "day"]
BREAKDOWNS: tuple[str, ...] = (*DIMENSIONS, "hour_of_day", "day_of_week")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Duration(msgspec.Struct, frozen=True):
    """A duration measure: samples, means and percentiles in seconds, wall and business."""

    n: int
    mean_seconds: float | None
    p50_seconds: float | None
    p90_seconds: float | None
    mean_business_seconds: float | None
    p50_business_seconds: float | None
    p90_business_seconds: float | None


class Csat(msgspec.Struct, frozen=True):
    """Satisfaction: surveys sent and answered, the mean score (1..5; a thumbs up is 5, down
    is 1), the share of answers that were 4 or 5, and the share of surveys answered."""

    sent: int
    answered: int
    mean_score: float | None
    satisfied_share: float | None
    response_rate: float | None


class Online(msgspec.Struct, frozen=True):
    """Agents' time online (presence sampled each minute) and what it handled: conversations
    resolved per agent-hour online (null: nobody was online)."""

    agent_hours: float
    resolved_per_agent_hour: float | None


class Rates(msgspec.Struct, frozen=True):
    """Ratios over the range (null: nothing to divide by)."""

    reopen_rate: float | None
    replies_per_conversation: float | None
    buyer_messages_per_reply: float | None
    first_response_within_sla: float | None


class Summary(msgspec.Struct, frozen=True):
    start: float
    end: float
    timezone: str
    dimension: str
    value: str | None
    durations: dict[str, Duration]
    counts: dict[str, int]
    csat: Csat
    online: Online
    rates: Rates
    # Share of conversations per skill (refund, complaint, ...): the dispute and return share.
    skill_shares: dict[str, float]


class Row(msgspec.Struct, frozen=True):
    key: str
    durations: dict[str, Duration]
    counts: dict[str, int]
    csat: Csat
    online: Online


class Breakdown(msgspec.Struct, frozen=True):
    start: float
    end: float
    timezone: str
    by: str
    rows: list[Row]


class Point(msgspec.Struct, frozen=True):
    start: str  # ISO 8601 in the report's time zone
    durations: dict[str, Duration]
    counts: dict[str, int]
    csat: Csat
    online: Online


class Timeseries(msgspec.Struct, frozen=True):
    start: float
    end: float
    timezone: str
    interval: Interval
    dimension: str
    value: str | None
    points: list[Point]


class ReportRange(msgspec.Struct, frozen=True):
    start: float
    end: float
    zone: str

    @property
    def tz(self) -> tzinfo:
        return UTC if self.zone == "UTC" else ZoneInfo(self.zone)


def parse_zone(name: str) -> str:
    if name in ("UTC", "utc", "Z"):
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a directory
        raise ValueError(f"unknown time zone {name[:64]!r} (an IANA name such as "
                         "America/Mexico_City)") from None
    return name


def parse_moment(raw: str, zone: str) -> float:
    """``2026-11-30`` (that day's midnight in the zone), ``2026-11-30T09:00`` or with an
    offset, or UNIX seconds."""
    text = raw.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            value = float(text)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC if zone == "UTC" else ZoneInfo(zone))
            value = moment.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"expected a date (2026-11-30), a date and time or UNIX seconds, "
                         f"got {raw[:40]!r}") from None
    if not (math.isfinite(value) and 0 <= value <= LATEST):
        raise ValueError(f"{raw[:40]!r} is outside 1970..3000")
    return value


def report_range(start: float | None, end: float | None, zone: str, now: float,
                 ) -> ReportRange:
    """Defaults: the last 7 days up to now. Longer than ``MAX_RANGE_DAYS`` is refused."""
    end = now if end is None else end
    start = end - 7 * 86400 if start is None else start
    if end <= start:
        raise ValueError("the range is empty: 'to' must be after 'from'")
    if end - start > MAX_RANGE_DAYS * 86400:
        raise ValueError(f"a report covers at most {MAX_RANGE_DAYS} days")
    return ReportRange(start, end, zone)


async def _buckets(kpis: KpiStore, span: ReportRange) -> dict[int, dict[str, float]]:
    first = int(span.start // HOUR)
    last = math.ceil(span.end / HOUR) - 1
    return await kpis.hours(first, max(first, last))


def _duration(stat: Stat | None) -> Duration:
    if stat is None:
        return Duration(0, None, None, None, None, None, None)
    grouped = sum(stat.histogram) < stat.n  # grouped samples: a mean, no shape
    return Duration(
        n=int(stat.n),
        mean_seconds=finite(mean(stat.wall, stat.n)),
        p50_seconds=None if grouped else finite(percentile(stat.histogram, 0.5)),
        p90_seconds=None if grouped else finite(percentile(stat.histogram, 0.9)),
        mean_business_seconds=finite(mean(stat.business, stat.n)),
        p50_business_seconds=None if grouped else finite(
            percentile(stat.business_histogram, 0.5)),
        p90_business_seconds=None if grouped else finite(
            percentile(stat.business_histogram, 0.9)),
    )


def _tables(stats: Mapping[tuple[str, str], Stat], key: str,
            ) -> tuple[dict[str, Duration], dict[str, int], Csat, Online]:
    durations = {m: _duration(stats.get((m, key))) for m in DURATIONS}
    counts = {m: int(stats[(m, key)].n) if (m, key) in stats else 0 for m in COUNTS}
    scores = stats.get(("csat", key))
    answered = int(scores.n) if scores is not None else 0
    csat = Csat(
        sent=counts["csat_sent"], answered=answered,
        mean_score=finite(mean(scores.wall, scores.n)) if scores is not None else None,
        satisfied_share=finite(share(counts["csat_satisfied"], answered)),
        response_rate=finite(share(answered, counts["csat_sent"])))
    online_stat = stats.get(("online", key))
    hours = online_stat.wall / 3600 if online_stat is not None else 0.0
    online = Online(round(hours, 3), finite(share(counts["resolved"], hours)))
    return durations, counts, csat, online


def _rates(durations: Mapping[str, Duration], counts: Mapping[str, int]) -> Rates:
    first = durations["first_response"].n
    late = counts["first_response_breached"]
    return Rates(
        reopen_rate=finite(share(counts["reopened"], counts["resolved"])),
        replies_per_conversation=finite(share(counts["replies"], counts["conversations"])),
        buyer_messages_per_reply=finite(share(counts["messages_in"], counts["replies"])),
        first_response_within_sla=finite(share(first - late, first)),
    )


async def summary(kpis: KpiStore, span: ReportRange, *, dimension: str = ALL,
                  value: str | None = None) -> Summary:
    buckets = list((await _buckets(kpis, span)).values())
    key = ALL if dimension == ALL else (value or "")
    stats = collect(buckets, dimension=dimension, value=None if dimension == ALL else value)
    durations, counts, csat, online = _tables(stats, key)
    skills = collect(buckets, dimension="skill")
    total = counts["conversations"]
    skill_shares = {} if dimension != ALL or not total else {
        skill: round(stat.n / total, 4) for (measure, skill), stat in sorted(skills.items())
        if measure == "conversations"}
    return Summary(span.start, span.end, span.zone, dimension, value, durations, counts,
                   csat, online, _rates(durations, counts), skill_shares)


def _local(hour: int, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(hour * HOUR, tz)


async def breakdown(kpis: KpiStore, span: ReportRange, by: str) -> Breakdown:
    hours = await _buckets(kpis, span)
    if by in ("hour_of_day", "day_of_week"):
        regrouped: dict[str, list[dict[str, float]]] = {}
        for hour, bucket in hours.items():
            local = _local(hour, span.tz)
            label = f"{local.hour:02d}" if by == "hour_of_day" else WEEKDAYS[local.weekday()]
            regrouped.setdefault(label, []).append(bucket)
        order = ([f"{h:02d}" for h in range(24)] if by == "hour_of_day" else list(WEEKDAYS))
        rows = []
        for label in order:
            stats = collect(regrouped.get(label, []))
            rows.append(Row(label, *_tables(stats, ALL)))
        return Breakdown(span.start, span.end, span.zone, by, rows)
    stats = collect(hours.values(), dimension=by)
    keys = sorted({value for (_measure, value) in stats})
    rows = [Row(k, *_tables(stats, k)) for k in keys]
    return Breakdown(span.start, span.end, span.zone, by, rows)


async def timeseries(kpis: KpiStore, span: ReportRange, interval: Interval, *,
                     dimension: str = ALL, value: str | None = None) -> Timeseries:
    hours = await _buckets(kpis, span)
    tz = span.tz
    grouped: dict[str, list[dict[str, float]]] = {}
    for label in _labels(span, interval):
        grouped[label] = []
    for hour, bucket in sorted(hours.items()):
        label = _label(_local(hour, tz), interval)
        grouped.setdefault(label, []).append(bucket)
    key = ALL if dimension == ALL else (value or "")
    points = []
    for label, buckets in grouped.items():
        stats = collect(buckets, dimension=dimension,
                        value=None if dimension == ALL else value)
        points.append(Point(label, *_tables(stats, key)))
    return Timeseries(span.start, span.end, span.zone, interval, dimension, value, points)


async def series_by(kpis: KpiStore, span: ReportRange, interval: Interval, dimension: str,
                    measure: str, *, top: int = 6,
                    ) -> tuple[list[str], dict[str, list[float | None]]]:
    """One series per value of ``dimension`` (the ``top`` busiest): a count per interval,
    or for a duration its mean in business minutes (None where nothing was measured)."""
    hours = await _buckets(kpis, span)
    labels = list(_labels(span, interval))
    position = {label: i for i, label in enumerate(labels)}
    per_label: dict[int, list[dict[str, float]]] = {}
    for hour, bucket in hours.items():
        i = position.get(_label(_local(hour, span.tz), interval))
        if i is not None:
            per_label.setdefault(i, []).append(bucket)
    series: dict[str, list[float | None]] = {}
    weight: dict[str, float] = {}
    for i, buckets in per_label.items():
        for (name, value), stat in collect(buckets, dimension=dimension).items():
            if name != measure or stat.n <= 0:
                continue
            if measure in SCORES:
                point = stat.wall / stat.n  # the mean score
            elif measure in DURATIONS:
                point = stat.business / stat.n / 60
            else:
                point = stat.n
            series.setdefault(value, [None] * len(labels))[i] = round(point, 3)
            weight[value] = weight.get(value, 0.0) + stat.n
    if measure in COUNTS:  # a count is 0, not unknown, where nothing happened
        series = {k: [v or 0.0 for v in values] for k, values in series.items()}
    busiest = sorted(series, key=lambda k: (-weight[k], k))[:top]
    return labels, {k: series[k] for k in busiest}


def _label(local: datetime, interval: Interval) -> str:
    if interval == "day":
        return local.date().isoformat()
    return local.replace(minute=0, second=0, microsecond=0).isoformat()


def _labels(span: ReportRange, interval: Interval) -> Iterable[str]:
    """Every interval of the range, empty ones included (a chart needs its gaps)."""
    tz = span.tz
    step = timedelta(hours=1)
    moment = _local(int(span.start // HOUR), tz)
    end = datetime.fromtimestamp(span.end, tz)
    seen: set[str] = set()
    while moment < end:
        label = _label(moment, interval)
        if label not in seen:
            seen.add(label)
            yield label
        moment = datetime.fromtimestamp(moment.timestamp() + step.total_seconds(), tz)


# -- CSV -------------------------------------------------------------------------------------

TableRow = tuple[str, Mapping[str, Duration], Mapping[str, int], Csat, Online]


def table_rows(result: Summary | Breakdown | Timeseries) -> list[TableRow]:
    """A report's rows for a CSV or a terminal table, labelled by their first column."""
    if isinstance(result, Breakdown):
        return [(r.key, r.durations, r.counts, r.csat, r.online) for r in result.rows]
    if isinstance(result, Timeseries):
        return [(p.start, p.durations, p.counts, p.csat, p.online) for p in result.points]
    return [(result.value or ALL, result.durations, result.counts, result.csat, result.online)]


def _flat(durations: Mapping[str, Duration], counts: Mapping[str, int], csat: Csat,
          online: Online) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, d in durations.items():
        out[f"{name}_n"] = d.n
        out[f"{name}_mean_s"] = d.mean_seconds
        out[f"{name}_p50_s"] = d.p50_seconds
        out[f"{name}_p90_s"] = d.p90_seconds
        out[f"{name}_mean_business_s"] = d.mean_business_seconds
    out.update(counts)
    out.update(csat_answered=csat.answered, csat_mean_score=csat.mean_score,
               csat_satisfied_share=csat.satisfied_share, agent_hours_online=online.agent_hours,
               resolved_per_agent_hour=online.resolved_per_agent_hour)
    return out


def to_csv(rows: Sequence[TableRow], first_column: str) -> str:
    """One line per row; durations flattened into ``<measure>_n``, ``_mean_s``..."""
    buffer = io.StringIO()
    flats = [(key, _flat(d, c, csat, online)) for key, d, c, csat, online in rows]
    columns = [first_column] + (list(flats[0][1]) if flats else [])
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for key, flat in flats:
        writer.writerow([_csv_safe(key)] + ["" if v is None else v for v in flat.values()])
    return buffer.getvalue()


def _csv_safe(value: str) -> str:
    """A cell a spreadsheet would run as a formula (=, +, -, @) is quoted as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
