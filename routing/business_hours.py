"""Business-hours arithmetic for SLA clocks and agents' working hours.

An SLA such as "first response within 4 business hours" only means something against the shop's
wall clock: opening hours are written in local time, holidays are local dates, and the clock
keeps ticking through DST changes while the sign on the door stays "09:00-18:00". Everything
else in inboxhub speaks UNIX seconds (UTC), so this module is the one place that turns the one
into the other; callers never touch ``zoneinfo`` themselves.

Wall times that do not map to exactly one instant follow one rule, so that touching intervals
stay touching and the mapping never runs backwards:

- a time skipped by a spring-forward jump (02:30 in Madrid on the last Sunday of March) means
  the instant the clocks jump, so an interval lying wholly inside the gap is empty;
- a time repeated by a fall-back (02:30 on the last Sunday of October) means its first
  occurrence, so 00:00-24:00 that day lasts 25 hours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any, Final, NamedTuple, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM: Final = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d|24:00")
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAY: Final = 86_400
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
# Per-day and per-week UTC intervals are memoised; the bound keeps a long-lived calendar that
# is asked about many distant dates from growing without limit.
_CACHE_LIMIT: Final = 4096

_Interval = tuple[float, float]
_K = TypeVar("_K")
_V = TypeVar("_V")


class BusinessHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Opening hours as an operator writes them in the routing TOML.

    ``weekly`` maps "mon".."sun" to ``[start, end]`` pairs in local "HH:MM" ("24:00" allowed as
    an end). A day left out is closed. Intervals do not cross midnight: a 22:00-06:00 night
    shift is ``mon = [["22:00", "24:00"]]`` plus ``tue = [["00:00", "06:00"]]``, and the two
    halves join seamlessly. ``holidays`` are local ISO dates that are closed all day.
    """

    weekly: dict[str, list[tuple[str, str]]]
    timezone: str = "UTC"
    holidays: list[str] = []

    @classmethod
    def always(cls) -> BusinessHours:
        """24x7: some duties (Amazon's 24 h reply window) ignore weekends and holidays."""
        return cls(weekly={day: [("00:00", "24:00")] for day in WEEKDAYS})


class _Rules(NamedTuple):
    zone: ZoneInfo
    # Per weekday (Monday first): merged, sorted (start, end) in local seconds after midnight.
    week: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[int]  # proleptic Gregorian ordinals of local dates


def parse_business_hours(data: Mapping[str, Any], where: str = "business_hours") -> BusinessHours:
    """Validate a config table up front so a typo fails at load time with the key to fix."""
    payload: Any = dict(data) if isinstance(data, Mapping) else data
    try:
        hours = msgspec.convert(payload, BusinessHours)
    except msgspec.ValidationError as exc:
        raise ValueError(_locate(payload, exc, where)) from None
    _compile(hours, where)
    return hours


def _locate(payload: Any, exc: msgspec.ValidationError, where: str) -> str:
    """msgspec reports a dict value as ``weekly[...]``; name the weekday so the operator can
    find the line."""
    weekly = payload.get("weekly") if isinstance(payload, dict) else None
    if isinstance(weekly, dict):
        for day, intervals in weekly.items():
            try:
                msgspec.convert(intervals, list[tuple[str, str]])
            except msgspec.ValidationError as inner:
                return _with_path(str(inner), f"{where}.weekly.{day}")
    return _with_path(str(exc), where)


def _with_path(message: str, prefix: str) -> str:
    text, sep, path = message.partition(" - at `$")
    return f"{prefix}{path.rstrip('`')}: {text}" if sep else f"{prefix}: {message}"


def _compile(hours: BusinessHours, where: str) -> _Rules:
    """Check what msgspec's types cannot express and turn the strings into numbers once."""
    try:
        zone = ZoneInfo(hours.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: a directory
        raise ValueError(
            f"{where}.timezone: unknown IANA time zone {hours.timezone!r}"
        ) from None

    week: list[tuple[tuple[int, int], ...]] = [() for _ in WEEKDAYS]
    for day, intervals in hours.weekly.items():
        path = f"{where}.weekly.{day}"
        if day not in WEEKDAYS:
            raise ValueError(
                f"{path}: unknown weekday {day!r}, expected one of {', '.join(WEEKDAYS)}"
            )
        week[WEEKDAYS.index(day)] = _compile_day(day, intervals, path)

    holidays: set[int] = set()
    for index, text in enumerate(hours.holidays):
        try:
            if not isinstance(text, str) or _ISO_DATE.fullmatch(text) is None:
                raise ValueError
            holidays.add(date.fromisoformat(text).toordinal())
        except ValueError:
            raise ValueError(
                f"{where}.holidays[{index}]: expected a date YYYY-MM-DD, got {text!r}"
            ) from None
    return _Rules(zone, tuple(week), frozenset(holidays))


def _compile_day(day: str, intervals: Any, path: str) -> tuple[tuple[int, int], ...]:
    parsed: list[tuple[int, int, int]] = []  # (start, end, index in the config)
    for index, interval in enumerate(intervals):
        here = f"{path}[{index}]"
        if not isinstance(interval, tuple | list) or len(interval) != 2:
            raise ValueError(f"{here}: expected [start, end], got {interval!r}")
        start, end = (_seconds(text, f"{here}[{i}]") for i, text in enumerate(interval))
        if start >= end:
            raise ValueError(
                f"{here}: expected start before end, got {interval[0]}-{interval[1]}"
            )
        parsed.append((start, end, index))
    parsed.sort()
    merged: list[tuple[int, int]] = []
    for (_, prev_end, prev_index), (start, _, index) in pairwise(parsed):
        if start < prev_end:
            first, second = sorted((prev_index, index))
            raise ValueError(
                f"{path}[{second}]: overlaps {day}[{first}] "
                f"({_hhmm(intervals[first])} and {_hhmm(intervals[second])})"
            )
    for start, end, _ in parsed:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _seconds(text: Any, where: str) -> int:
    if not isinstance(text, str) or _HHMM.fullmatch(text) is None:
        raise ValueError(f"{where}: expected HH:MM between 00:00 and 24:00, got {text!r}")
    return (int(text[:2]) * 60 + int(text[3:])) * 60


def _hhmm(interval: Any) -> str:
    return f"{interval[0]}-{interval[1]}"


class Calendar:
    """Answers SLA and shift questions against one ``BusinessHours``.

    Build it once per configuration (it validates and precomputes) and share it: it holds no
    state besides memoised conversions, and every answer is a pure function of the config.
    """

    __slots__ = (
        "_always",
        "_day_cache",
        "_last_holiday",
        "_midnight_cache",
        "_regular_cache",
        "_rules",
        "_week_cache",
        "_week_seconds",
        "hours",
    )

    def __init__(self, hours: BusinessHours) -> None:
        self.hours = hours
        self._rules = _compile(hours, "business_hours")
        self._week_seconds = sum(end - start for day in self._rules.week for start, end in day)
        self._last_holiday = max(self._rules.holidays, default=0)
        # Covering every wall-clock minute covers every instant whatever the zone does, so the
        # arithmetic can be exact (s + x) instead of merely within float noise.
        self._always = not self._rules.holidays and all(
            day == ((0, _DAY),) for day in self._rules.week
        )
        self._day_cache: dict[int, tuple[_Interval, ...]] = {}
        self._week_cache: dict[int, tuple[_Interval, ...]] = {}
        self._midnight_cache: dict[int, float] = {}
        self._regular_cache: dict[int, bool] = {}

    def is_open(self, t: float) -> bool:
        """Open intervals are half-open: at 18:00 a 09:00-18:00 desk is already closed."""
        _check_time(t, "t")
        if self._always:
            return True
        today = self._local_ordinal(t)
        # Yesterday too: during a repeated hour the wall date can lag behind the interval.
        return any(
            start <= t < end
            for ordinal in (today - 1, today)
            for start, end in self._day(ordinal)
        )

    def next_open(self, t: float) -> float:
        """When a message that arrives now starts its SLA clock."""
        _check_time(t, "t")
        if self._always:
            return t
        self._require_open_time()
        monday = self._monday_before(t)
        empty_weeks = 0
        while True:
            for start, end in self._week(monday):
                if end > t:
                    return max(start, t)
            empty_weeks = self._no_open_time_guard(monday, empty_weeks)
            monday += 7

    def add(self, start: float, seconds: float) -> float:
        """The SLA deadline: when ``seconds`` of open time have passed since ``start``.

        A deadline that uses up an interval exactly lands on its end (Friday 18:00), not on
        the next opening, so it is the last instant by which the work is still on time.
        """
        _check_time(start, "start")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds: expected a finite number >= 0, got {seconds!r}")
        if self._always or seconds == 0:
            return start + seconds
        self._require_open_time()
        remaining = seconds
        t = start
        monday = self._monday_before(start)
        empty_weeks = 0
        while True:
            # Long spans (30 business days, a quarter) skip weeks whose open time is known
            # without looking inside; strictly greater so the last week is walked and the
            # deadline lands on a real interval.
            if (
                remaining > self._week_seconds
                and self._midnight(monday) >= t
                and self._regular(monday)
            ):
                remaining -= self._week_seconds
                monday += 7
                t = self._midnight(monday)
                empty_weeks = 0
                continue
            for interval_start, end in self._week(monday):
                if end <= t:
                    continue
                begin = max(interval_start, t)
                if remaining <= end - begin:
                    return begin + remaining
                remaining -= end - begin
                t = end
            empty_weeks = self._no_open_time_guard(monday, empty_weeks)
            monday += 7

    def elapsed(self, start: float, end: float) -> float:
        """Business seconds of an SLA clock that ran from ``start`` to ``end``."""
        _check_time(start, "start")
        _check_time(end, "end")
        if end <= start:
            return 0.0
        if self._always:
            return end - start
        if self._week_seconds == 0:
            return 0.0
        total = 0.0
        monday = self._monday_before(start)
        while True:
            week_start = self._midnight(monday)
            if week_start >= end:
                return total
            if (
                week_start >= start
                and self._midnight(monday + 7) <= end
                and self._regular(monday)
            ):
                total += self._week_seconds
            else:
                for interval_start, interval_end in self._week(monday):
                    if interval_end <= start:
                        continue
                    if interval_start >= end:
                        return total
                    total += min(interval_end, end) - max(interval_start, start)
            monday += 7

    # -- conversions -------------------------------------------------------------------------

    def _require_open_time(self) -> None:
        if self._week_seconds == 0:
            raise ValueError("business hours have no open time at all")

    def _no_open_time_guard(self, monday: int, empty_weeks: int) -> int:
        """Stop a search that can never succeed instead of spinning: past the last holiday,
        a schedule with open time cannot stay shut for weeks on end."""
        if monday <= self._last_holiday or any(self._week(monday)):
            return 0
        if empty_weeks >= 2:
            raise ValueError("business hours have no open time at all")
        return empty_weeks + 1

    def _local_ordinal(self, t: float) -> int:
        return datetime.fromtimestamp(t, self._rules.zone).toordinal()

    def _monday_before(self, t: float) -> int:
        """Start walks a day early: during a repeated hour the wall date of ``t`` can be the day
        before the one whose intervals contain it."""
        ordinal = self._local_ordinal(t) - 1
        return ordinal - (ordinal - 1) % 7  # ordinal 1 (0001-01-01) was a Monday

    def _utc(self, ordinal: int, seconds: int) -> float:
        """Wall clock -> instant, following the module's rule for skipped and repeated times."""
        zone = self._rules.zone
        wall = datetime.fromordinal(ordinal) + timedelta(seconds=seconds)
        first = _seconds_of(zone.utcoffset(wall))  # the offset in force before any change
        second = _seconds_of(zone.utcoffset(wall.replace(fold=1)))
        local = (ordinal - _EPOCH_ORDINAL) * _DAY + seconds
        if first >= second:  # one instant, or a repeat whose first pass wins
            return float(local - first)
        # Skipped: the wall time lies between the jump's two offsets; find the jump itself
        # to the second (zone transitions are whole seconds).
        low, high = local - second, local - first
        while high - low > 1:
            middle = (low + high) // 2
            if _seconds_of(datetime.fromtimestamp(middle, zone).utcoffset()) == second:
                high = middle
            else:
                low = middle
        return float(high)

    def _midnight(self, ordinal: int) -> float:
        cached = self._midnight_cache.get(ordinal)
        if cached is None:
            cached = self._utc(ordinal, 0)
            _remember(self._midnight_cache, ordinal, cached)
        return cached

    def _day(self, ordinal: int) -> tuple[_Interval, ...]:
        cached = self._day_cache.get(ordinal)
        if cached is None:
            intervals: list[_Interval] = []
            if ordinal not in self._rules.holidays:
                for start, end in self._rules.week[(ordinal - 1) % 7]:
                    begin, finish = self._utc(ordinal, start), self._utc(ordinal, end)
                    if finish > begin:  # empty when it lies wholly in a skipped hour
                        intervals.append((begin, finish))
            cached = tuple(intervals)
            _remember(self._day_cache, ordinal, cached)
        return cached

    def _week(self, monday: int) -> tuple[_Interval, ...]:
        cached = self._week_cache.get(monday)
        if cached is None:
            cached = tuple(interval for i in range(7) for interval in self._day(monday + i))
            _remember(self._week_cache, monday, cached)
        return cached

    def _regular(self, monday: int) -> bool:
        """A week without holidays and without an offset change holds exactly the template's
        open time, so a long span can count it without converting its intervals. Offsets are
        compared at each local midnight; no zone changes offset and back within one day."""
        cached = self._regular_cache.get(monday)
        if cached is None:
            zone = self._rules.zone
            offsets = {zone.utcoffset(datetime.fromordinal(monday + i)) for i in range(8)}
            cached = len(offsets) == 1 and not any(
                monday + i in self._rules.holidays for i in range(7)
            )
            _remember(self._regular_cache, monday, cached)
        return cached


def _seconds_of(offset: timedelta | None) -> int:
    return 0 if offset is None else int(offset.total_seconds())


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _check_time(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite UNIX time, got {value!r}")
