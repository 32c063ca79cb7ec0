"""Business-hours math behind SLA deadlines and agents' shifts: examples from real shops'
schedules, DST days in the markets we serve, config errors, and properties that must hold for
any schedule."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.business_hours import (
    WEEKDAYS,
    BusinessHours,
    Calendar,
    parse_business_hours,
)

HOUR = 3600.0
WEEKDAY_NAMES = WEEKDAYS[:5]


def at(zone: str, wall: str) -> float:
    """UNIX time of a local wall-clock reading (first occurrence if repeated)."""
    return datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(zone)).timestamp()


def wall(zone: str, t: float) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def office(zone: str, *, holidays: tuple[str, ...] = (),
           hours: tuple[str, str] = ("09:00", "18:00"),
           days: tuple[str, ...] = WEEKDAY_NAMES) -> Calendar:
    return Calendar(BusinessHours(timezone=zone, weekly={d: [hours] for d in days},
                                  holidays=list(holidays)))


MADRID = "Europe/Madrid"


# -- examples ------------------------------------------------------------------------------------


def test_friday_afternoon_message_is_due_monday_morning() -> None:
    cal = office(MADRID)
    due = cal.add(at(MADRID, "2026-03-20 17:00"), 2 * HOUR)
    assert wall(MADRID, due) == "2026-03-23 10:00"
    assert cal.elapsed(at(MADRID, "2026-03-20 17:00"), due) == 2 * HOUR


def test_deadline_that_uses_up_the_day_lands_on_closing_time() -> None:
    cal = office(MADRID)
    assert wall(MADRID, cal.add(at(MADRID, "2026-03-20 17:00"), HOUR)) == "2026-03-20 18:00"


def test_arrival_while_closed_starts_the_clock_at_opening() -> None:
    cal = office(MADRID)
    sunday = at(MADRID, "2026-06-07 11:00")
    assert not cal.is_open(sunday)
    assert wall(MADRID, cal.next_open(sunday)) == "2026-06-08 09:00"
    assert wall(MADRID, cal.add(sunday, 4 * HOUR)) == "2026-06-08 13:00"
    assert cal.elapsed(sunday, at(MADRID, "2026-06-08 09:00")) == 0


def test_intervals_are_half_open() -> None:
    cal = office(MADRID)
    assert cal.is_open(at(MADRID, "2026-06-08 09:00"))
    assert cal.is_open(at(MADRID, "2026-06-08 17:59:59.999"))
    assert not cal.is_open(at(MADRID, "2026-06-08 18:00"))
    assert not cal.is_open(at(MADRID, "2026-06-08 08:59:59.999"))
    open_now = at(MADRID, "2026-06-08 12:34:56.5")
    assert cal.next_open(open_now) == open_now


def test_zero_seconds_is_the_start_itself() -> None:
    cal = office(MADRID)
    sunday = at(MADRID, "2026-06-07 11:00")
    assert cal.add(sunday, 0) == sunday


def test_holidays_are_skipped() -> None:
    # 2026-12-25 is a Friday; 2027-01-01 too.
    cal = office(MADRID, holidays=("2026-12-25", "2027-01-01"))
    assert not cal.is_open(at(MADRID, "2026-12-25 12:00"))
    assert wall(MADRID, cal.add(at(MADRID, "2026-12-24 17:00"), 2 * HOUR)) == "2026-12-28 10:00"
    assert wall(MADRID, cal.next_open(at(MADRID, "2026-12-31 18:30"))) == "2027-01-04 09:00"
    # Week of Christmas: 4 working days.
    assert cal.elapsed(at(MADRID, "2026-12-21 00:00"), at(MADRID, "2026-12-28 00:00")) == 36 * HOUR


def test_thirty_business_days() -> None:
    cal = office(MADRID)
    start = at(MADRID, "2026-01-05 09:00")  # a Monday
    due = cal.add(start, 30 * 9 * HOUR)
    assert wall(MADRID, due) == "2026-02-13 18:00"
    assert cal.elapsed(start, due) == 30 * 9 * HOUR


def test_long_spans_jump_weeks_and_stay_exact() -> None:
    cal = office(MADRID, holidays=("2026-01-01", "2026-01-06", "2026-12-08", "2026-12-25"))
    start = at(MADRID, "2026-01-01 00:00")
    end = at(MADRID, "2027-01-01 00:00")
    working_days = sum(
        1 for i in range(365)
        if (d := date(2026, 1, 1) + timedelta(days=i)).weekday() < 5
        and d.isoformat() not in ("2026-01-01", "2026-01-06", "2026-12-08", "2026-12-25")
    )
    assert cal.elapsed(start, end) == working_days * 9 * HOUR
    assert wall(MADRID, cal.add(start, working_days * 9 * HOUR)) == "2026-12-31 18:00"
    began = time.perf_counter()
    far = cal.add(start, 10 * 52 * 45 * HOUR)  # ten years of 45-hour weeks
    assert cal.elapsed(start, far) == 10 * 52 * 45 * HOUR
    assert time.perf_counter() - began < 1.0


def test_split_shift() -> None:
    zone = "America/Mexico_City"
    cal = Calendar(BusinessHours(timezone=zone, weekly={
        d: [("15:00", "19:00"), ("09:00", "13:00")] for d in WEEKDAY_NAMES}))
    assert wall(zone, cal.add(at(zone, "2026-05-12 12:00"), 2 * HOUR)) == "2026-05-12 16:00"
    assert not cal.is_open(at(zone, "2026-05-12 13:30"))
    assert wall(zone, cal.next_open(at(zone, "2026-05-12 13:30"))) == "2026-05-12 15:00"
    assert wall(zone, cal.add(at(zone, "2026-05-12 13:30"), HOUR)) == "2026-05-12 16:00"
    assert wall(zone, cal.add(at(zone, "2026-05-12 18:00"), 5 * HOUR)) == "2026-05-13 13:00"
    assert cal.elapsed(at(zone, "2026-05-12 00:00"), at(zone, "2026-05-13 00:00")) == 8 * HOUR


def test_night_shift_across_midnight_is_continuous() -> None:
    zone = "Asia/Shanghai"
    cal = Calendar(BusinessHours(timezone=zone, weekly={
        "mon": [("22:00", "24:00")], "tue": [("00:00", "06:00")]}))
    assert wall(zone, cal.add(at(zone, "2026-06-01 23:00"), 2 * HOUR)) == "2026-06-02 01:00"
    assert cal.is_open(at(zone, "2026-06-02 00:00"))
    assert cal.elapsed(at(zone, "2026-06-01 00:00"), at(zone, "2026-06-08 00:00")) == 8 * HOUR


def test_shanghai_golden_week() -> None:
    zone = "Asia/Shanghai"
    golden_week = tuple(f"2026-10-0{d}" for d in range(1, 8))
    cal = office(zone, holidays=golden_week, hours=("09:00", "21:00"),
                 days=("mon", "tue", "wed", "thu", "fri", "sat"))
    assert at(zone, "2026-09-30 09:00") == at("UTC", "2026-09-30 01:00")
    due = cal.add(at(zone, "2026-09-30 20:00"), 2 * HOUR)
    assert wall(zone, due) == "2026-10-08 10:00"


@pytest.mark.parametrize(("zone", "utc_offset"), [
    ("America/Sao_Paulo", -3), ("America/Mexico_City", -6), ("Asia/Shanghai", 8)])
def test_zones_without_dst_keep_one_offset_all_year(zone: str, utc_offset: int) -> None:
    cal = office(zone)
    for month in range(1, 13):
        opening = cal.next_open(at(zone, f"2026-{month:02d}-01 00:00"))
        assert datetime.fromtimestamp(opening, ZoneInfo(zone)).hour == 9
        assert datetime.fromtimestamp(opening, ZoneInfo(zone)).utcoffset() == timedelta(
            hours=utc_offset)
    weekdays = sum(1 for i in range(365) if (date(2026, 1, 1) + timedelta(days=i)).weekday() < 5)
    year = cal.elapsed(at(zone, "2026-01-01 00:00"), at(zone, "2027-01-01 00:00"))
    assert year == weekdays * 9 * HOUR


# -- DST -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25),
                                            ("2026-04-05", 24)])
def test_madrid_whole_sunday_follows_the_clock_change(day: str, hours: int) -> None:
    cal = Calendar(BusinessHours(timezone=MADRID, weekly={"sun": [("00:00", "24:00")]}))
    start = at(MADRID, f"{day} 00:00")
    end = start + 2 * 86400  # past Monday, whatever the offset
    assert cal.elapsed(start, end) == hours * HOUR
    assert wall(MADRID, cal.add(start, hours * HOUR)) == (
        date.fromisoformat(day) + timedelta(days=1)).isoformat() + " 00:00"
    following = (date.fromisoformat(day) + timedelta(days=7)).isoformat()
    assert wall(MADRID, cal.add(start, hours * HOUR + 60)) == f"{following} 00:01"


@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_madrid_office_day_is_nine_hours_on_dst_sundays(day: str) -> None:
    cal = office(MADRID, days=("sun",))
    assert cal.elapsed(at(MADRID, f"{day} 00:00"), at(MADRID, f"{day} 23:00")) == 9 * HOUR
    assert wall(MADRID, cal.add(at(MADRID, f"{day} 09:00"), 9 * HOUR)) == f"{day} 18:00"


def test_madrid_intervals_touching_the_skipped_hour() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    def length(start: str, end: str) -> float:
        cal = Calendar(BusinessHours(timezone=MADRID, weekly={"sun": [(start, end)]}))
        return cal.elapsed(at(MADRID, "2026-03-28 12:00"), at(MADRID, "2026-03-30 12:00"))

    assert length("01:00", "03:00") == HOUR
    assert length("02:30", "05:00") == 2 * HOUR
    assert length("02:00", "03:00") == 0
    cal = Calendar(BusinessHours(timezone=MADRID, weekly={"sun": [("02:15", "02:45")]}))
    assert wall(MADRID, cal.next_open(at(MADRID, "2026-03-28 12:00"))) == "2026-04-05 02:15"


def test_madrid_repeated_hour_counts_twice_inside_an_interval() -> None:
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET.
    cal = Calendar(BusinessHours(timezone=MADRID, weekly={"sun": [("01:00", "04:00")]}))
    assert cal.elapsed(at(MADRID, "2026-10-24 12:00"), at(MADRID, "2026-10-26 12:00")) == 4 * HOUR
    second_two_thirty = at("UTC", "2026-10-25 01:30")  # 02:30 CET, the repeat
    assert cal.is_open(second_two_thirty)


def test_madrid_repeated_wall_time_means_its_first_occurrence() -> None:
    # On 2026-10-25 02:00-03:00 happens twice; an interval edge inside it is the first pass.
    first_pass = at("UTC", "2026-10-25 00:45")  # 02:45 CEST
    second_pass = at("UTC", "2026-10-25 01:45")  # 02:45 CET
    late = Calendar(BusinessHours(timezone=MADRID, weekly={"sun": [("02:30", "05:00")]}))
    assert late.is_open(first_pass) and late.is_open(second_pass)
    assert wall(MADRID, late.next_open(at(MADRID, "2026-10-25 00:00"))) == "2026-10-25 02:30"
    early = Calendar(BusinessHours(timezone=MADRID, weekly={"sun": [("01:00", "02:30")]}))
    assert not early.is_open(second_pass)
    day = (at(MADRID, "2026-10-25 00:00"), at(MADRID, "2026-10-26 00:00"))
    assert early.elapsed(*day) == 1.5 * HOUR
    assert late.elapsed(*day) == 3.5 * HOUR


def test_new_york_office_across_both_changes() -> None:
    zone = "America/New_York"
    cal = office(zone, hours=("09:00", "17:00"))
    # Spring forward on Sunday 2026-03-08: Friday 16:00 EST + 2 h -> Monday 10:00 EDT.
    friday = at(zone, "2026-03-06 16:00")
    due = cal.add(friday, 2 * HOUR)
    assert wall(zone, due) == "2026-03-09 10:00"
    assert due - friday == (2 * 24 + 18 - 1) * HOUR
    # Fall back on Sunday 2026-11-01.
    friday = at(zone, "2026-10-30 16:00")
    due = cal.add(friday, 2 * HOUR)
    assert wall(zone, due) == "2026-11-02 10:00"
    assert due - friday == (2 * 24 + 18 + 1) * HOUR


@pytest.mark.parametrize(("day", "hours"), [("2026-03-08", 23), ("2026-11-01", 25)])
def test_new_york_round_the_clock_day(day: str, hours: int) -> None:
    zone = "America/New_York"
    cal = Calendar(BusinessHours(timezone=zone, weekly={"sun": [("00:00", "24:00")],
                                                        "mon": [("09:00", "17:00")]}))
    assert cal.elapsed(at(zone, f"{day} 00:00"), at(zone, f"{day} 00:00") + 30 * HOUR) == (
        hours * HOUR)


def test_lord_howe_half_hour_shift() -> None:
    # Australia/Lord_Howe moves its clocks by 30 minutes; 2026-10-04 02:00 -> 02:30.
    zone = "Australia/Lord_Howe"
    cal = Calendar(BusinessHours(timezone=zone, weekly={"sun": [("00:00", "24:00")]}))
    start = at(zone, "2026-10-04 00:00")
    assert cal.elapsed(start, start + 2 * 86400) == 23.5 * HOUR


# -- 24x7 ----------------------------------------------------------------------------------------


def test_always_is_plain_arithmetic() -> None:
    cal = Calendar(BusinessHours.always())
    t = at(MADRID, "2026-12-25 03:00")
    assert cal.is_open(t)
    assert cal.next_open(t) == t
    assert cal.add(t, 24 * HOUR) == t + 24 * HOUR
    assert cal.elapsed(t, t + 24 * HOUR) == 24 * HOUR
    assert BusinessHours.always() == parse_business_hours(msgspec.to_builtins(
        BusinessHours.always()))


def test_round_the_clock_in_a_dst_zone_is_plain_arithmetic_too() -> None:
    cal = Calendar(BusinessHours(timezone=MADRID, weekly={d: [("00:00", "24:00")]
                                                          for d in WEEKDAYS}))
    t = at(MADRID, "2026-03-28 12:00")
    assert cal.add(t, 48 * HOUR) == t + 48 * HOUR


# -- no open time --------------------------------------------------------------------------------


def test_calendar_without_open_time() -> None:
    cal = Calendar(BusinessHours(weekly={}))
    t = at("UTC", "2026-06-01 00:00")
    assert not cal.is_open(t)
    assert cal.elapsed(t, t + 86400 * 30) == 0
    assert cal.add(t, 0) == t
    with pytest.raises(ValueError, match="no open time"):
        cal.next_open(t)
    with pytest.raises(ValueError, match="no open time"):
        cal.add(t, 1)


def test_all_year_holidays_then_open() -> None:
    holidays = tuple((date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(365))
    cal = office("UTC", holidays=holidays)
    t = at("UTC", "2026-01-01 00:00")
    assert wall("UTC", cal.next_open(t)) == "2027-01-01 09:00"


@pytest.mark.parametrize(("args", "message"), [
    ((float("nan"), 1.0), "start"), ((0.0, -1.0), "seconds"), ((0.0, float("inf")), "seconds")])
def test_add_rejects_nonsense(args: tuple[float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        office(MADRID).add(*args)


# -- config --------------------------------------------------------------------------------------


def test_parse_accepts_toml_shaped_tables() -> None:
    hours = parse_business_hours({
        "timezone": "America/Sao_Paulo",
        "weekly": {"mon": [["09:00", "13:00"], ["14:00", "18:00"]], "sat": [["10:00", "24:00"]]},
        "holidays": ["2026-02-16", "2026-02-17"],
    })
    assert hours.weekly["mon"] == [("09:00", "13:00"), ("14:00", "18:00")]
    assert hours.timezone == "America/Sao_Paulo"
    assert parse_business_hours({"weekly": {}}).timezone == "UTC"


W = "routing.business_hours"
BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"weekly": {"mon": [["18:00", "09:00"]]}},
     f"{W}.weekly.mon[0]: expected start before end, got 18:00-09:00"),
    ({"weekly": {"mon": [["09:00", "09:00"]]}},
     f"{W}.weekly.mon[0]: expected start before end, got 09:00-09:00"),
    ({"weekly": {"tue": [["09:00", "18:00"], ["9am", "6pm"]]}},
     f"{W}.weekly.tue[1][0]: expected HH:MM between 00:00 and 24:00, got '9am'"),
    ({"weekly": {"tue": [["09:00", "24:30"]]}}, rf"{W}.weekly.tue\[0\]\[1\]: expected HH:MM"),
    ({"weekly": {"tue": [["9:00", "18:00"]]}}, rf"{W}.weekly.tue\[0\]\[0\]: expected HH:MM"),
    ({"weekly": {"tue": [["24:00", "24:00"]]}}, rf"{W}.weekly.tue\[0\]: expected start before"),
    ({"weekly": {"wed": [["09:00", "13:00"], ["15:00", "19:00"], ["12:00", "16:00"]]}},
     f"{W}.weekly.wed[2]: overlaps wed[0] (09:00-13:00 and 12:00-16:00)"),
    ({"weekly": {"monday": [["09:00", "18:00"]]}},
     f"{W}.weekly.monday: unknown weekday 'monday', expected one of mon, tue, wed"),
    ({"weekly": {}, "timezone": "Europe/Madird"},
     f"{W}.timezone: unknown IANA time zone 'Europe/Madird'"),
    ({"weekly": {}, "timezone": "../../etc/passwd"}, f"{W}.timezone: unknown IANA time zone"),
    ({"weekly": {}, "holidays": ["2026-12-25", "2026-13-01"]},
     f"{W}.holidays[1]: expected a date YYYY-MM-DD, got '2026-13-01'"),
    ({"weekly": {}, "holidays": ["20261225"]}, rf"{W}.holidays\[0\]: expected a date"),
    ({"weekly": {"fri": [["09:00"]]}}, rf"{W}.weekly.fri\[0\]: Expected `array` of length 2"),
    ({"weekly": {"fri": [[9, "18:00"]]}}, rf"{W}.weekly.fri\[0\]\[0\]: Expected `str`"),
    ({"weekly": {}, "holidays": "2026-12-25"}, rf"{W}.holidays: Expected `array`"),
    ({"weekly": {}, "timezone": "UTC", "tz": "UTC"}, rf"{W}: Object contains unknown field `tz`"),
    ({"timezone": "UTC"}, rf"{W}: Object missing required field `weekly`"),
]


@pytest.mark.parametrize(("data", "message"), BAD_CONFIGS)
def test_bad_config_names_the_key(data: dict[str, Any], message: str) -> None:
    """``message`` is a regex matched from the start, or a literal prefix when it has no
    regex escapes."""
    with pytest.raises(ValueError) as info:
        parse_business_hours(data, where=W)
    pattern = message if "\\" in message else re.escape(message)
    assert re.match(pattern, str(info.value)), str(info.value)


def test_calendar_validates_structs_built_in_code() -> None:
    with pytest.raises(ValueError, match=r"business_hours.weekly.mon\[0\]: expected start"):
        Calendar(BusinessHours(weekly={"mon": [("18:00", "09:00")]}))


# -- properties ----------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Madrid", "America/New_York", "America/Sao_Paulo", "America/Mexico_City",
         "Asia/Shanghai", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]
FIXED_OFFSET_ZONES = ["UTC", "America/Sao_Paulo", "America/Mexico_City", "Asia/Shanghai",
                      "Asia/Kolkata"]
T0 = at("UTC", "2025-01-01 00:00")
T1 = at("UTC", "2028-01-01 00:00")


def _hhmm(slot: int) -> str:
    return f"{slot // 2:02d}:{slot % 2 * 30:02d}"


def _intervals(cuts: set[int]) -> list[tuple[str, str]]:
    ordered = sorted(cuts)[: len(cuts) // 2 * 2]
    return [(_hhmm(a), _hhmm(b)) for a, b in zip(ordered[::2], ordered[1::2], strict=True)]


def _hours(weekly: dict[str, list[tuple[str, str]]], zone: str,
           holidays: list[date]) -> BusinessHours:
    if not any(weekly.values()):
        weekly["wed"] = [("10:00", "11:00")]
    return BusinessHours(timezone=zone, weekly=weekly,
                         holidays=[d.isoformat() for d in holidays])


# Half-hour boundaries, so that DST gaps and repeats fall on and inside intervals. Strategies
# are built once: building them inside a composite dominates the run time.
_WEEKLY = st.dictionaries(st.sampled_from(WEEKDAYS),
                          st.sets(st.integers(0, 48), max_size=6).map(_intervals), min_size=1)
_HOLIDAYS = st.lists(st.dates(date(2025, 1, 1), date(2027, 12, 31)), max_size=20)


def schedules(zones: list[str] = ZONES) -> st.SearchStrategy[BusinessHours]:
    return st.builds(_hours, _WEEKLY, st.sampled_from(zones), _HOLIDAYS)


# Milliseconds, as timestamps arrive from the store; keeps deadlines off float-noise boundaries.
instants = st.integers(int(T0 * 1000), int(T1 * 1000)).map(lambda ms: ms / 1000)
durations = st.integers(0, 60 * 86400 * 1000).map(lambda ms: ms / 1000)
PROPERTY = settings(max_examples=200, deadline=None, database=None)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= max(1e-3, 1e-6 * abs(b))


@PROPERTY
@given(schedules(), instants, durations)
def test_elapsed_undoes_add(hours: BusinessHours, start: float, seconds: float) -> None:
    cal = Calendar(hours)
    due = cal.add(start, seconds)
    assert due >= start
    assert close(cal.elapsed(start, due), seconds)
    if seconds > 0:
        assert cal.is_open(due - 1e-4)
        assert due >= cal.next_open(start)


@PROPERTY
@given(schedules(), instants, durations, durations)
def test_add_is_monotonic(hours: BusinessHours, start: float, x: float, y: float) -> None:
    cal = Calendar(hours)
    low, high = sorted((x, y))
    assert cal.add(start, low) <= cal.add(start, high)


@PROPERTY
@given(schedules(), st.lists(instants, min_size=3, max_size=3))
def test_elapsed_is_additive(hours: BusinessHours, points: list[float]) -> None:
    cal = Calendar(hours)
    a, b, c = sorted(points)
    assert close(cal.elapsed(a, b) + cal.elapsed(b, c), cal.elapsed(a, c))
    assert 0 <= cal.elapsed(a, c) <= c - a
    assert cal.elapsed(c, a) == 0


@PROPERTY
@given(schedules(), instants)
def test_next_open_is_the_first_open_instant(hours: BusinessHours, t: float) -> None:
    cal = Calendar(hours)
    opening = cal.next_open(t)
    assert opening >= t
    assert cal.is_open(opening)
    assert cal.elapsed(t, opening) == 0
    assert (opening == t) == cal.is_open(t)


@PROPERTY
@given(instants, durations)
def test_always_adds_plain_seconds(start: float, seconds: float) -> None:
    cal = Calendar(BusinessHours.always())
    assert cal.add(start, seconds) == start + seconds
    assert cal.is_open(start)


def _open_by_wall_clock(hours: BusinessHours, t: float) -> bool:
    """Independent oracle: read the wall clock and look the time up in the table."""
    local = datetime.fromtimestamp(t, ZoneInfo(hours.timezone))
    if local.date().isoformat() in hours.holidays:
        return False
    minute = local.hour * 60 + local.minute
    return any(
        int(a[:2]) * 60 + int(a[3:]) <= minute < int(b[:2]) * 60 + int(b[3:])
        for a, b in hours.weekly.get(WEEKDAYS[local.weekday()], [])
    )


@PROPERTY
@given(schedules(), instants)
def test_is_open_matches_the_wall_clock(hours: BusinessHours, t: float) -> None:
    cal = Calendar(hours)
    local = datetime.fromtimestamp(t, ZoneInfo(hours.timezone))
    # A repeated hour's second pass follows the documented first-occurrence rule instead.
    if local.fold == 0:
        assert cal.is_open(t) == _open_by_wall_clock(hours, t)


@settings(max_examples=100, deadline=None, database=None)
@given(schedules(FIXED_OFFSET_ZONES), instants, st.integers(1, 40 * 48))
def test_elapsed_matches_half_hour_sampling(hours: BusinessHours, t: float, slots: int) -> None:
    cal = Calendar(hours)
    start = t - t % 1800  # these zones' offsets and the schedules are half-hour aligned
    open_slots = sum(_open_by_wall_clock(hours, start + i * 1800) for i in range(slots))
    assert cal.elapsed(start, start + slots * 1800) == open_slots * 1800


def _transitions(zone: str, year: int) -> list[float]:
    tz = ZoneInfo(zone)
    first = int(at("UTC", f"{year}-01-01 00:00"))

    def offset(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, tz).utcoffset()

    found = []
    for t in range(first, first + 366 * 86400, 86400):
        if offset(t) != offset(t + 86400):
            low, high = t, t + 86400
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(float(high))
    return found


DST_ZONES = ["Europe/Madrid", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham"]
NEAR_TRANSITIONS = [(zone, t) for zone in DST_ZONES for t in _transitions(zone, 2026)]


@PROPERTY
@given(schedules(DST_ZONES), st.sampled_from(NEAR_TRANSITIONS),
       st.integers(-3 * 3600 * 1000, 3 * 3600 * 1000)
       | st.integers(-2 * 86400 * 1000, 2 * 86400 * 1000), durations)
def test_properties_hold_next_to_clock_changes(
    hours: BusinessHours, transition: tuple[str, float], shift_ms: int, seconds: float,
) -> None:
    zone, instant = transition
    hours = msgspec.structs.replace(hours, timezone=zone)
    cal = Calendar(hours)
    t = instant + shift_ms / 1000
    if datetime.fromtimestamp(t, ZoneInfo(zone)).fold == 0:
        assert cal.is_open(t) == _open_by_wall_clock(hours, t)
    seconds = seconds % (3 * 86400)
    due = cal.add(t, seconds)
    assert close(cal.elapsed(t, due), seconds)
    if seconds > 0:
        assert cal.is_open(due - 1e-4)
    middle = min(due, t + shift_ms % 7200)
    assert close(cal.elapsed(t, middle) + cal.elapsed(middle, due), cal.elapsed(t, due))
