"""KPI aggregation: what each event counts (pure ``fold``), business time, percentiles, exactly
once on real Redis (a replayed or concurrent batch counts nothing), and the reports API
end to end through a running hub, with roles and bad input."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import time
from datetime import datetime
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest

from hub import keys as K
from hub.kpis import UNROUTED_HOLD_SECONDS, KpiAggregator, first_unrouted, fold
from hub.reports import ReportRange, breakdown, summary, timeseries
from routing.business_hours import BusinessHours, Calendar
from storage.events import Event, EventLog
from storage.kpis import BOUNDS, Batch, KpiStore, collect, percentile
from storage.leases import RedisLeaseManager
from storage.records import Conversation
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, eventually, running_hub
from tests.test_api_scope import SUPERVISOR_TOKEN, Hub, routing_config

ALWAYS = Calendar(BusinessHours.always())
MADRID = ZoneInfo("Europe/Madrid")
_ids = itertools.count(1)


def conv(cid: str = "0.a", **kw: Any) -> Conversation:
    fields: dict[str, Any] = dict(
        id=cid, channel="telegram", channel_instance="tg", thread_id="t", contact_id="c",
        contact_handle="h", contact_name=None, status="assigned", language="es",
        market="MX", assignee="ana", queue="es", created_at=0.0, updated_at=0.0,
        last_inbound_at=None, message_count=1, skill="refund")
    fields.update(kw)
    return Conversation(**fields)


def ev(kind: str, at: float, cid: str = "0.a", **kw: Any) -> Event:
    return Event(id=f"{int(at * 1000)}-{next(_ids)}", kind=kind,  # type: ignore[arg-type]
                 conversation_id=cid, at=at, **kw)


def stats(batch: Batch, dimension: str = "all", value: str | None = None) -> Any:
    buckets: dict[str, dict[str, float]] = {}
    for (key, name), amount in batch.increments.items():
        buckets.setdefault(key, {})[name] = amount
    return collect(buckets.values(), dimension=dimension, value=value)


T0 = 1_800_000_000.0  # a Friday


def test_a_conversation_counts_every_measure_once() -> None:
    events = [
        ev("new_message", T0, new_conversation=True),
        ev("assignment", T0 + 1, action="queued"),
        ev("assignment", T0 + 31, action="assigned", agent="ana"),
        ev("new_message", T0 + 40, new_conversation=False),
        ev("reply", T0 + 100, agent="ana"),           # first response 100 s; answers two
        ev("new_message", T0 + 200),
        ev("reply", T0 + 260, agent="ana"),           # next response 60 s
        ev("status", T0 + 1000, action="resolved"),   # resolution 1000 s
    ]
    batch = fold(events, {}, {"0.a": conv()}, ALWAYS)
    s = stats(batch)
    assert s[("first_response", "all")].n == 1 and s[("first_response", "all")].wall == 100
    assert s[("next_response", "all")].wall == 60
    # response: mean over buyer messages: (100 + 60 + 60) / 3
    assert s[("response", "all")].n == 3 and s[("response", "all")].wall == 220
    assert s[("queue_wait", "all")].wall == 30
    assert s[("resolution", "all")].wall == 1000
    assert s[("conversations", "all")].n == 1 and s[("messages_in", "all")].n == 3
    assert s[("replies", "all")].n == 2 and s[("resolved", "all")].n == 1
    # the same samples under each dimension
    assert stats(batch, "agent")[("first_response", "ana")].wall == 100
    assert stats(batch, "language")[("resolution", "es")].n == 1
    assert stats(batch, "skill")[("conversations", "refund")].n == 1
    assert stats(batch, "channel")[("replies", "telegram")].n == 2
    # the state left for the next batch: resolved, first response done, nothing pending
    assert batch.states["0.a"]["resolved"] == "1"
    assert batch.states["0.a"].get("pending", "") == ""


def test_state_carries_across_batches_and_reopen_counts() -> None:
    first = fold([ev("new_message", T0, new_conversation=True),
                  ev("reply", T0 + 50, agent="ana"),
                  ev("status", T0 + 60, action="resolved")], {}, {"0.a": conv()}, ALWAYS)
    state = {k: v for k, v in first.states["0.a"].items() if v}
    second = fold([ev("new_message", T0 + 500), ev("status", T0 + 500, action="reopened"),
                   ev("reply", T0 + 530, agent="ana"),
                   ev("status", T0 + 600, action="resolved")],
                  {"0.a": state}, {"0.a": conv()}, ALWAYS)
    s = stats(second)
    assert s[("reopened", "all")].n == 1
    assert ("first_response", "all") not in s  # the conversation's first was in batch one
    assert s[("next_response", "all")].wall == 30
    assert s[("resolution", "all")].wall == 100  # from the reopening message


def test_a_resolve_seen_twice_counts_once_and_spam_counts_nothing() -> None:
    batch = fold([ev("new_message", T0), ev("status", T0 + 5, action="resolved"),
                  ev("status", T0 + 6, action="resolved")], {}, {"0.a": conv()}, ALWAYS)
    assert stats(batch)[("resolved", "all")].n == 1
    spam = fold([ev("new_message", T0, new_conversation=True)], {},
                {"0.a": conv(spam=True)}, ALWAYS)
    assert not spam
    erased = fold([ev("new_message", T0)], {}, {}, ALWAYS)
    assert not erased


def test_sla_breach_before_the_first_reply_marks_it_late() -> None:
    batch = fold([ev("new_message", T0), ev("sla_breach", T0 + 60, clock="first_response"),
                  ev("reply", T0 + 90, agent="ana"),
                  ev("assignment", T0 + 95, action="transferred",
                     agent="bruno"),
                  ev("delivery", T0 + 96, action="failed")], {}, {"0.a": conv()}, ALWAYS)
    s = stats(batch)
    assert s[("first_response_breached", "all")].n == 1
    assert s[("sla_breaches", "all")].n == 1
    assert s[("transfers", "all")].n == 1 and s[("delivery_failed", "all")].n == 1
    assert stats(batch, "agent")[("transfers", "bruno")].n == 1


def test_business_time_leaves_out_the_weekend() -> None:
    hours = BusinessHours(weekly={d: [("09:00", "17:00")] for d in
                                  ("mon", "tue", "wed", "thu", "fri")},
                          timezone="Europe/Madrid")
    friday = datetime(2026, 11, 27, 16, 0, tzinfo=MADRID).timestamp()
    monday = datetime(2026, 11, 30, 10, 0, tzinfo=MADRID).timestamp()
    batch = fold([ev("new_message", friday), ev("reply", monday, agent="ana")], {},
                 {"0.a": conv()}, Calendar(hours))
    first = stats(batch)[("first_response", "all")]
    assert first.wall == pytest.approx(monday - friday)
    assert first.business == pytest.approx(2 * 3600)  # Friday 16-17 and Monday 9-10


def test_percentiles_come_from_the_histogram() -> None:
    histogram = [0.0] * (len(BOUNDS) + 1)
    assert percentile(histogram, 0.5) is None
    histogram[0] = 50   # 0-30 s
    histogram[1] = 50   # 30-60 s
    assert percentile(histogram, 0.5) == pytest.approx(30.0)
    assert percentile(histogram, 0.9) == pytest.approx(30 + 30 * 0.8)
    histogram[-1] = 1000  # beyond the last bound: its lower bound
    assert percentile(histogram, 0.99) == BOUNDS[-1]


# -- on Redis: exactly once --------------------------------------------------------------


class _Store:
    """The one read the aggregator makes of the conversation store."""

    def __init__(self, conversations: dict[str, Conversation]) -> None:
        self.conversations = conversations

    async def get_conversations(self, ids: Any, *, fields: Any = None) -> list[Conversation]:
        return [self.conversations[i] for i in ids if i in self.conversations]


async def _log_conversation(log: EventLog, cid: str) -> None:
    await log.append("new_message", cid, new="1", channel="tg")
    await log.append("reply", cid, agent="ana")
    await log.append("status", cid, action="resolved")


async def test_a_replayed_or_concurrent_batch_counts_once(redis: Any) -> None:
    log = EventLog(redis)
    ids = [f"0.{i:x}" for i in range(1, 31)]
    for cid in ids:
        await _log_conversation(log, cid)
    store = _Store({cid: conv(cid) for cid in ids})
    kpis = KpiStore(redis)

    def aggregator(owner: str) -> KpiAggregator:
        return KpiAggregator(store, log, kpis, ALWAYS,  # type: ignore[arg-type]
                             RedisLeaseManager(redis, owner=owner), batch=7)

    one, two = aggregator("p1"), aggregator("p2")
    # Two processes stepping at the same time, without the lease: each batch lands once.
    while any(await asyncio.gather(one.step(), two.step())):
        pass
    # A replay: a batch computed from an old cursor is refused whole.
    assert not await kpis.apply("", "9999999999999-0", fold(
        await log.after("0-0"), {}, store.conversations, ALWAYS))
    now = time.time()
    span = ReportRange(now - 3600, now + 3600, "UTC")
    report = await summary(kpis, span)
    assert report.counts["resolved"] == 30 and report.counts["replies"] == 30
    assert report.counts["messages_in"] == 30 and report.durations["first_response"].n == 30
    # Only the lease holder works while it holds the lease.
    assert await one.iteration() is False  # nothing new
    assert await two._hold_lease() is False
    await one.close()
    assert await two._hold_lease() is True
    await two.close()


async def test_a_conversation_routing_has_not_classified_yet_is_counted_once_it_has(
        redis: Any) -> None:
    """Folded before routing set its language, a new conversation would count under no
    language (the reports' flaky 'es' line): its events wait for routing, up to a limit."""
    log = EventLog(redis)
    await _log_conversation(log, "0.a")
    store = _Store({"0.a": conv("0.a", status="new", language=None, queue=None)})
    kpis = KpiStore(redis)
    aggregator = KpiAggregator(store, log, kpis, ALWAYS,  # type: ignore[arg-type]
                               RedisLeaseManager(redis, owner="p1"))
    assert await aggregator.step() is False and not await kpis.cursor()  # held
    store.conversations["0.a"] = conv("0.a", status="assigned")  # routing ran
    assert await aggregator.step() is True
    now = time.time()
    by_language = await breakdown(kpis, ReportRange(now - 3600, now + 3600, "UTC"), "language")
    assert [(r.key, r.counts["conversations"]) for r in by_language.rows] == [("es", 1)]
    # Past the hold (routing down), an event is counted with what is known.
    events = await log.after("0-0")
    unrouted = {"0.a": conv("0.a", status="new")}
    assert first_unrouted(events, unrouted, events[0].at + 1) == 0
    assert first_unrouted(events, unrouted, events[0].at + UNROUTED_HOLD_SECONDS + 1) is None
    assert first_unrouted(events, {"0.a": conv("0.a", status="new", blocked=True)},
                          events[0].at) is None  # never counted: nothing to wait for


async def test_reports_regroup_hours_in_the_team_zone(redis: Any) -> None:
    kpis = KpiStore(redis)
    # 23:30 UTC on Sunday is 00:30 Monday in Madrid (winter, UTC+1)
    sunday_night = datetime(2026, 11, 29, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    batch = fold([ev("new_message", sunday_night, new_conversation=True),
                  ev("reply", sunday_night + 120, agent="ana")], {}, {"0.a": conv()}, ALWAYS)
    assert await kpis.apply("", "1-0", batch)
    span = ReportRange(sunday_night - 86400, sunday_night + 86400, "Europe/Madrid")
    by_day = await breakdown(kpis, span, "day_of_week")
    assert {r.key: r.counts["replies"] for r in by_day.rows}["mon"] == 1
    by_hour = await breakdown(kpis, span, "hour_of_day")
    assert {r.key: r.counts["replies"] for r in by_hour.rows}["00"] == 1
    series = await timeseries(kpis, span, "day")
    assert [p.start for p in series.points] == ["2026-11-29", "2026-11-30", "2026-12-01"]
    assert [p.counts["conversations"] for p in series.points] == [0, 1, 0]
    agents = await breakdown(kpis, span, "agent")
    assert [r.key for r in agents.rows] == ["ana"]
    assert agents.rows[0].durations["first_response"].mean_seconds == 120


# -- through the hub ---------------------------------------------------------------------


async def test_reports_api_end_to_end(make_config: Any) -> None:
    async with OperatorEndpoint() as endpoint, running_hub(make_config(
            extra=routing_config("pools"), outbound_url=endpoint.url)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                      AGENT_TOKEN, json={"text": "Hola"})
        assert status == 202, body
        await hub.resolve(cid)

        async def counted() -> Any:
            status, body = await hub.call("GET", "/api/v1/reports/summary", SUPERVISOR_TOKEN)
            assert status == 200, body
            return body if body["counts"]["resolved"] == 1 else None

        report = await eventually(counted)
        assert report["counts"]["conversations"] == 1
        assert report["durations"]["first_response"]["n"] == 1
        assert report["rates"]["replies_per_conversation"] == 1.0
        assert report["skill_shares"] == {} or sum(report["skill_shares"].values()) <= 1.0

        status, body = await hub.call(
            "GET", "/api/v1/reports/summary?dimension=agent&value=ana.agent", ADMIN_TOKEN)
        assert status == 200 and body["counts"]["replies"] == 1
        status, body = await hub.call("GET", "/api/v1/reports/breakdown?by=language",
                                      SUPERVISOR_TOKEN)
        assert status == 200 and [r["key"] for r in body["rows"]] == ["es"]
        status, body = await hub.call(
            "GET", "/api/v1/reports/timeseries?interval=hour&from=" + str(int(
                report["end"]) - 7200), SUPERVISOR_TOKEN)
        assert status == 200 and sum(p["counts"]["replies"] for p in body["points"]) == 1

        r = await client.get("/api/v1/reports/breakdown?by=agent&format=csv",
                             headers={"Authorization": f"Bearer {SUPERVISOR_TOKEN}"})
        assert r.status == 200 and r.content_type == "text/csv"
        assert "attachment" in r.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert rows[0]["agent"] == "ana.agent" and rows[0]["replies"] == "1"

        for chart in ("response_time", "volume", "leaderboard"):
            r = await client.get(f"/api/v1/reports/chart?chart={chart}&by=language",
                                 headers={"Authorization": f"Bearer {SUPERVISOR_TOKEN}"})
            assert r.status == 200 and r.content_type == "image/svg+xml"
            assert "script-src" not in r.headers["Content-Security-Policy"]
            svg = ElementTree.fromstring(await r.text())
            labels = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
            assert ("ana.agent" if chart == "leaderboard" else "es") in labels, labels
        status, body = await hub.call("GET", "/api/v1/reports/chart", SUPERVISOR_TOKEN)
        assert status == 400 and "chart is required" in body["error"]["message"]
        # In the page's other interface language: its words, the data's own labels.
        r = await client.get("/api/v1/reports/chart?chart=volume&by=market&lang=zh",
                             headers={"Authorization": f"Bearer {SUPERVISOR_TOKEN}"})
        svg = ElementTree.fromstring(await r.text())
        assert svg.findtext("{http://www.w3.org/2000/svg}title") == "按市场的会话量"
        r = await client.get("/api/v1/reports/chart?chart=leaderboard&lang=zh",
                             headers={"Authorization": f"Bearer {SUPERVISOR_TOKEN}"})
        labels = [t.text for t in ElementTree.fromstring(await r.text()).iter(
            "{http://www.w3.org/2000/svg}text")]
        assert "各坐席已解决的会话" in labels and "ana.agent" in labels
        for bad in ("fr", "ZH", "", "zh&lang=en"):
            status, body = await hub.call("GET", f"/api/v1/reports/chart?chart=volume&lang={bad}",
                                          SUPERVISOR_TOKEN)
            assert status == 400 and "lang" in body["error"]["message"], (bad, body)

        # Prometheus: config-bounded labels, no buyer or conversation ids
        r = await client.get("/metrics")
        text = await r.text()
        assert 'inboxhub_first_response_seconds_count{channel="api"} 1.0' in text
        assert 'inboxhub_queue_waiting{queue="es"} 0.0' in text
        assert 'inboxhub_agents_online{language="es"} 1.0' in text
        assert cid not in text

        # agents do not see reports; bad input is a 400 that names the parameter
        status, _ = await hub.call("GET", "/api/v1/reports/summary", AGENT_TOKEN)
        assert status == 403
        for query, word in [("from=yesterday", "from"), ("tz=Mars/Olympus", "time zone"),
                            ("from=2020-01-01&to=2026-01-01", "at most"),
                            ("from=2026-02-01&to=2026-01-01", "empty"),
                            ("dimension=agent", "needs a value"), ("value=x", "dimension"),
                            ("format=xml", "format"), ("nope=1", "unknown")]:
            status, body = await hub.call("GET", f"/api/v1/reports/summary?{query}",
                                          SUPERVISOR_TOKEN)
            assert status == 400 and word in body["error"]["message"], (query, body)
        status, body = await hub.call("GET", "/api/v1/reports/breakdown", SUPERVISOR_TOKEN)
        assert status == 400 and "by is required" in body["error"]["message"]
        status, body = await hub.call(
            "GET", "/api/v1/reports/timeseries?interval=hour&from=2026-01-01&to=2026-03-01",
            SUPERVISOR_TOKEN)
        assert status == 400 and "31 days" in body["error"]["message"]


def test_csv_cells_never_run_as_formulas() -> None:
    from hub.reports import Csat, Duration, Online, to_csv

    empty = Duration(0, None, None, None, None, None, None)
    text = to_csv([("=HYPERLINK(\"x\")", {"first_response": empty}, {"replies": 1},
                    Csat(0, 0, None, None, None), Online(0.0, None))], "agent")
    assert list(csv.reader(io.StringIO(text)))[1][0] == "'=HYPERLINK(\"x\")"


def test_the_report_cli_prints_the_same_tables(
        tmp_path: Any, redis_server: Any, hub_env: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    from redis.asyncio import Redis

    from hub.cli import main
    from tests.conftest import write_config

    config = str(write_config(tmp_path, redis_server.url))
    now = time.time()

    async def seed() -> None:
        client = Redis.from_url(redis_server.url)
        try:
            await client.flushall()  # as the ``redis`` fixture does for async tests
            batch = fold([ev("new_message", now - 600, new_conversation=True),
                          ev("reply", now - 300, agent="ana"),
                          ev("status", now - 60, action="resolved")],
                         {}, {"0.a": conv()}, ALWAYS)
            assert await KpiStore(client).apply(await KpiStore(client).cursor(), "2-0", batch)
        finally:
            await client.aclose()

    asyncio.run(seed())

    def cli(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", config, "report", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli()
    assert code == 0 and "5.0m/" in out  # first response: 5 minutes
    code, out, _ = cli("breakdown", "--by", "agent", "--csv")
    assert code == 0 and next(csv.DictReader(io.StringIO(out)))["agent"] == "ana"
    code, out, _ = cli("timeseries", "--interval", "hour", "--from", str(int(now - 7200)),
                       "--json")
    assert code == 0 and sum(p["counts"]["replies"] for p in json.loads(out)["points"]) == 1
    code, _, err = cli("breakdown")
    assert code == 2 and "--by" in err
    code, _, err = cli("--from", "soon")
    assert code == 2 and "expected a date" in err
    code, _, err = cli("--dimension", "agent")
    assert code == 2 and "together" in err


def test_a_time_zone_that_names_a_directory_is_refused_not_a_crash() -> None:
    from hub.reports import parse_moment, parse_zone
    from routing.business_hours import parse_business_hours

    for bad in ("America", "../etc", "/etc/localtime", "", "\x00"):
        with pytest.raises(ValueError, match="time zone"):
            parse_zone(bad)
    with pytest.raises(ValueError, match="unknown IANA time zone 'America'"):
        parse_business_hours({"weekly": {}, "timezone": "America"})
    assert parse_zone("Europe/Madrid") == "Europe/Madrid"
    for bad in ("1e400", "99999999999999999999", "0001-01-01", "2026-13-01", "soon"):
        with pytest.raises(ValueError):
            parse_moment(bad, "UTC")
    assert parse_moment("2026-11-30T09:00+02:00", "Europe/Madrid") == 1796022000.0


def test_chart_labels_below_one_stay_readable() -> None:
    from hub.charts import _fmt
    assert [_fmt(v) for v in (0.0, 0.0025, 0.005, 0.0075, 0.01, 0.25, 0.5, 1.5, 2.0, 150.4)] \
        == ["0", "0.0025", "0.005", "0.0075", "0.01", "0.25", "0.5", "1.5", "2", "150"]


def test_charts_escape_every_label_and_draw_gaps() -> None:
    from hub.charts import bar_chart, line_chart

    hostile = '<script>alert(1)</script>"&'
    svg = line_chart(hostile, ["2026-11-29", "2026-11-30", "2026-12-01"],
                     {hostile: [1.0, None, 3.0], "pt": [0.0, 2.5, 2.0]}, "minutes")
    tree = ElementTree.fromstring(svg)  # well-formed: nothing broke out of its element
    ns = "{http://www.w3.org/2000/svg}"
    assert not list(tree.iter(f"{ns}script")) and "<script>" not in svg
    assert tree.find(f"{ns}title").text == hostile  # type: ignore[union-attr]
    # the gap splits the first series: two single points (circles), the second a line
    assert len(list(tree.iter(f"{ns}circle"))) == 2
    assert len(list(tree.iter(f"{ns}polyline"))) == 1
    bars = ElementTree.fromstring(bar_chart("Resolved", [(hostile, 5.0), ("ana", 2.0)], "n"))
    assert len(list(bars.iter(f"{ns}rect"))) == 3  # the background and two bars
    empty = ElementTree.fromstring(line_chart("Nothing", [], {}, "minutes"))
    assert any(t.text == "no data in this range" for t in empty.iter(f"{ns}text"))


async def test_online_minutes_count_once_and_give_resolved_per_agent_hour(redis: Any) -> None:
    kpis = KpiStore(redis)
    log = EventLog(redis)

    async def online() -> list[str]:
        return ["ana", "bruno"]

    def aggregator(owner: str) -> KpiAggregator:
        return KpiAggregator(_Store({}), log, kpis, ALWAYS,  # type: ignore[arg-type]
                             RedisLeaseManager(redis, owner=owner), online_agents=online)

    one, two = aggregator("p1"), aggregator("p2")
    start = (time.time() // 3600) * 3600  # within one hour
    for minute in range(30):
        at = start + minute * 60 + 5
        assert await one.sample_online(at) is True
        assert await two.sample_online(at) is False  # the other process: that minute is in
        assert await one.sample_online(at + 20) is False  # the same minute again: nothing
    batch = fold([ev("new_message", start + 10, new_conversation=True),
                  ev("status", start + 100, action="resolved")], {},
                 {"0.a": conv(assignee="ana")}, ALWAYS)
    assert await kpis.apply(await kpis.cursor(), "5-0", batch)
    span = ReportRange(start, start + 3600, "UTC")
    report = await summary(kpis, span)
    assert report.online.agent_hours == pytest.approx(1.0)  # 2 agents x 30 minutes
    assert report.online.resolved_per_agent_hour == pytest.approx(1.0)
    rows = {r.key: r for r in (await breakdown(kpis, span, "agent")).rows}
    assert rows["ana"].online.agent_hours == pytest.approx(0.5)
    assert rows["ana"].online.resolved_per_agent_hour == pytest.approx(2.0)
    assert rows["bruno"].online.resolved_per_agent_hour == 0.0


async def test_a_hub_with_aggregate_off_counts_nothing(make_config: Any) -> None:
    """``reports.aggregate = false``: the events are in the log but no loop folds them, so the
    cursor never moves and the reports (still served) stay empty; the same events do count
    once an aggregator reads them (what a hub with it on would do)."""
    extra = "[reports]\naggregate = false\naggregate_every_seconds = 0.05\n"
    async with OperatorEndpoint() as endpoint, running_hub(make_config(
            extra=extra + routing_config("pools"), outbound_url=endpoint.url)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        await hub.resolve(cid)
        app_store = client.server.app[K.STORE]
        kpis = client.server.app[K.KPIS]

        async def logged() -> bool:
            events = await app_store.events.after("0-0")
            return any(e.kind == "status" and e.action == "resolved" for e in events)

        await eventually(logged)
        await asyncio.sleep(1.0)  # twenty idle intervals: an aggregator would have run
        assert await kpis.cursor() == ""
        status, body = await hub.call("GET", "/api/v1/reports/summary", SUPERVISOR_TOKEN)
        assert status == 200, body
        assert body["counts"]["conversations"] == 0 and body["counts"]["resolved"] == 0
        # The events were there to count: one step of the real aggregator counts them.
        aggregator = KpiAggregator(app_store, app_store.events, kpis, ALWAYS,
                                   RedisLeaseManager(app_store.redis, owner="test"))
        while await aggregator.step():
            pass
        status, body = await hub.call("GET", "/api/v1/reports/summary", SUPERVISOR_TOKEN)
        assert status == 200 and body["counts"]["resolved"] == 1, body
