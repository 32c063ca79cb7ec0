"""Service KPIs as hour buckets in Redis: what the aggregator writes and the reports read.

The aggregator (hub/kpis.py) turns the event log (storage/events.py) into *samples*: a
duration ("first_response took 312 s, 95 s of them in business hours") or a count ("one
message in"), each tagged with the conversation's dimensions. Every sample is added to the
bucket of the UTC hour it happened in, once per dimension: the total ("all"), and the agent,
queue, language, market, channel and skill it belongs to. A report over any range sums
buckets, never scans messages; hours in the team's time zone are regrouped into days,
hours of day and days of week at read time (exact for whole-hour offsets; a zone 30 or 45
minutes off UTC sees each hour under the local hour it starts in).

A bucket is one hash ``ih:{kpi}:h:<hour>``; a field is ``measure|dimension|value|stat``
with stats ``n`` (samples), ``s`` (wall seconds), ``b`` (business seconds) and ``h<i>`` /
``g<i>`` (wall / business histogram counts over ``BOUNDS``). Percentiles come from the
histogram, interpolated inside a bucket: good to about a bucket's width, which is why the
bounds follow the steps people judge response times by (1 min, 5 min, 1 h, 24 h...).

Exactly once: a batch of increments is applied in one script together with the advance of
the cursor it was computed from (``lua/kpis.lua``); a concurrent or replayed batch finds the
cursor moved and writes nothing.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from redis.commands.core import AsyncScript

from storage.keys import PREFIX
from storage.scripts import load_script

KPI_BASE: Final = f"{PREFIX}:{{kpi}}:"
CURSOR_KEY: Final = f"{KPI_BASE}cursor"
HOUR: Final = 3600

# Upper bounds (seconds) of the histogram buckets; one more bucket holds everything longer.
BOUNDS: Final[tuple[float, ...]] = (
    30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 4 * 3600, 8 * 3600, 12 * 3600, 86400,
    2 * 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)

DIMENSIONS: Final = ("agent", "queue", "language", "market", "channel", "skill")
ALL: Final = "all"

# Durations: sampled once per occurrence, with business time and percentiles.
DURATIONS: Final = ("first_response", "next_response", "response", "resolution",
                    "queue_wait")
# Counts: how often something happened.
COUNTS: Final = ("conversations", "messages_in", "replies", "resolved", "reopened",
                 "transfers", "escalations", "first_response_breached", "sla_breaches",
                 "delivery_failed", "csat_sent", "csat_satisfied")
# Scores: a count and a sum (``n``, ``s``), no time and no histogram: the CSAT answers (1..5),
# and agents' time online (``n`` minutes sampled, ``s`` seconds).
SCORES: Final = ("csat", "online")
MEASURES: Final = DURATIONS + COUNTS + SCORES


def bucket_key(hour: int) -> str:
    return f"{KPI_BASE}h:{hour}"


def state_key(conversation_id: str) -> str:
    return f"{KPI_BASE}c:{conversation_id}"


def hour_of(at: float) -> int:
    return int(at // HOUR)


def _clean(value: str) -> str:
    """Field separators never occur inside a value (an agent id with a "|" would split)."""
    return value.replace("|", "/")[:80]


def histogram_index(seconds: float) -> int:
    return bisect.bisect_left(BOUNDS, seconds)


class Sample(msgspec.Struct, frozen=True):
    """One thing counted: ``seconds`` is None for a count, ``amount`` how many (a reply
    answering three buyer messages is one ``response`` sample of 3 with their summed wait)."""

    measure: str
    at: float
    dims: dict[str, str]
    seconds: float | None = None
    business_seconds: float | None = None
    amount: int = 1
    score: float | None = None


@dataclass
class Batch:
    """The writes of one aggregation step, keyed for one call of ``lua/kpis.lua``."""

    increments: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    states: dict[str, dict[str, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    # What was added, for the process's Prometheus metrics once the batch is applied.
    samples: list[Sample] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        key = bucket_key(hour_of(sample.at))
        pairs = [(ALL, ALL)] + [(d, _clean(v)) for d, v in sample.dims.items() if v]
        for dim, value in pairs:
            base = f"{sample.measure}|{dim}|{value}|"
            self.increments[(key, base + "n")] += sample.amount
            if sample.score is not None:
                self.increments[(key, base + "s")] += sample.score
                continue
            if sample.seconds is None:
                continue
            wall = max(0.0, sample.seconds)
            business = max(0.0, wall if sample.business_seconds is None
                           else sample.business_seconds)
            self.increments[(key, base + "s")] += wall
            self.increments[(key, base + "b")] += business
            if sample.amount == 1:  # a grouped sample has a sum, not a shape
                self.increments[(key, base + f"h{histogram_index(wall)}")] += 1
                self.increments[(key, base + f"g{histogram_index(business)}")] += 1

    def set_state(self, conversation_id: str, fields: Mapping[str, str]) -> None:
        self.deleted.discard(conversation_id)
        self.states.setdefault(conversation_id, {}).update(fields)

    def delete_state(self, conversation_id: str) -> None:
        self.states.pop(conversation_id, None)
        self.deleted.add(conversation_id)

    def __bool__(self) -> bool:
        return bool(self.increments or self.states or self.deleted)


class KpiStore:
    """The KPI keys: the cursor, per-conversation aggregation state, hour buckets."""

    def __init__(self, redis: Any, *, retention_days: float = 400.0,
                 state_ttl_days: float = 90.0) -> None:
        self.redis: Any = redis
        self.bucket_ttl = max(HOUR, int(retention_days * 86400))
        self.state_ttl = max(HOUR, int(state_ttl_days * 86400))
        self._apply: AsyncScript = load_script(redis, "kpis")
        self._once: AsyncScript = load_script(redis, "kpis_once")

    async def cursor(self) -> str:
        raw = await self.redis.get(CURSOR_KEY)
        return "" if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def states(self, conversation_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        ids = list(dict.fromkeys(conversation_ids))
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(state_key(cid))
            rows = await pipe.execute()
        return {cid: {_s(k): _s(v) for k, v in row.items()}
                for cid, row in zip(ids, rows, strict=True)}

    async def apply(self, expected_cursor: str, new_cursor: str, batch: Batch) -> bool:
        """Write ``batch`` and move the cursor, if it still is ``expected_cursor``."""
        index: dict[str, int] = {}

        def slot(key: str) -> int:
            if key not in index:
                index[key] = len(index) + 2
            return index[key]

        payload = {
            "i": [[slot(k), f, round(v, 3)] for (k, f), v in batch.increments.items() if v],
            "s": [[slot(state_key(cid)), f, v] for cid, fields in batch.states.items()
                  for f, v in fields.items()],
            "d": [slot(state_key(cid)) for cid in batch.deleted],
        }
        script_keys = [CURSOR_KEY, *index]
        applied = await self._apply(
            keys=script_keys,
            args=[expected_cursor, new_cursor, self.bucket_ttl, self.state_ttl,
                  msgspec.json.encode(payload)])
        return bool(applied)

    async def add_once(self, marker: str, batch: Batch, ttl_seconds: int = 7200) -> bool:
        """Add a batch whose samples all fall in one hour, unless ``marker`` was added
        already (another process, or this one again after a crash)."""
        buckets = {key for key, _field in batch.increments}
        if len(buckets) != 1:
            raise ValueError("add_once takes the samples of one hour")
        args: list[Any] = [ttl_seconds, self.bucket_ttl]
        for (_key, name), amount in batch.increments.items():
            args += [name, round(amount, 3)]
        return bool(await self._once(keys=[f"{KPI_BASE}once:{marker}", buckets.pop()],
                                     args=args))

    async def hours(self, first_hour: int, last_hour: int) -> dict[int, dict[str, float]]:
        """Every non-empty bucket from ``first_hour`` to ``last_hour`` inclusive."""
        hours = list(range(first_hour, last_hour + 1))
        out: dict[int, dict[str, float]] = {}
        for start in range(0, len(hours), 500):
            chunk = hours[start:start + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for hour in chunk:
                    pipe.hgetall(bucket_key(hour))
                rows = await pipe.execute()
            for hour, row in zip(chunk, rows, strict=True):
                if row:
                    out[hour] = {_s(k): float(_s(v)) for k, v in row.items()}
        return out


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- reading the buckets --------------------------------------------------------------------


class Stat(msgspec.Struct):
    """One measure summed over buckets, for one dimension value."""

    n: float = 0.0
    wall: float = 0.0
    business: float = 0.0
    histogram: list[float] = msgspec.field(default_factory=lambda: [0.0] * (len(BOUNDS) + 1))
    business_histogram: list[float] = msgspec.field(
        default_factory=lambda: [0.0] * (len(BOUNDS) + 1))

    def add(self, stat: str, value: float) -> None:
        if stat == "n":
            self.n += value
        elif stat == "s":
            self.wall += value
        elif stat == "b":
            self.business += value
        elif stat[:1] in ("h", "g") and stat[1:].isdigit():
            i = int(stat[1:])
            if i < len(self.histogram):
                (self.histogram if stat[0] == "h" else self.business_histogram)[i] += value


def collect(buckets: Iterable[Mapping[str, float]], *, dimension: str = ALL,
            value: str | None = None) -> dict[tuple[str, str], Stat]:
    """``(measure, dimension value) -> Stat`` over ``buckets`` for one dimension (and, given
    ``value``, only that value of it)."""
    out: dict[tuple[str, str], Stat] = {}
    for bucket in buckets:
        for name, amount in bucket.items():
            parts = name.split("|")
            if len(parts) != 4 or parts[1] != dimension:
                continue
            measure, _, dim_value, stat = parts
            if value is not None and dim_value != value:
                continue
            out.setdefault((measure, dim_value), Stat()).add(stat, amount)
    return out


def percentile(histogram: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram over ``BOUNDS``, linear inside its bucket;
    None without samples. The open last bucket answers with its lower bound."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(histogram):
        if count <= 0:
            continue
        if seen + count >= rank:
            low = 0.0 if i == 0 else BOUNDS[i - 1]
            if i >= len(BOUNDS):
                return low
            high = BOUNDS[i]
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return BOUNDS[-1]


def share(part: float, whole: float) -> float | None:
    return None if whole <= 0 else part / whole


def mean(total: float, n: float) -> float | None:
    return None if n <= 0 else total / n


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)
