"""Satisfaction surveys: what counts as an answer in each language, what the KPIs make of the
survey and its answer, and the whole loop through a running hub: a survey after resolve in
the buyer's language, an answer recorded without reopening, a normal message reopening, and
every case where no survey may go (Amazon, a closed window without a template)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from hub import keys as K
from hub.config import CsatSettings
from hub.csat import SurveySender
from hub.csat_answers import DEFAULT_WORDING, parse_rating, question
from hub.kpis import SURVEY_AUTHOR, fold
from routing.business_hours import BusinessHours, Calendar
from storage.events import Event
from storage.leases import RedisLeaseManager
from storage.store import Store
from tests.conftest import AGENT_TOKEN
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args
from tests.test_api_scope import SUPERVISOR_TOKEN, Hub, routing_config
from tests.test_kpis import conv, ev, stats

ALWAYS = Calendar(BusinessHours.always())


@pytest.mark.parametrize("text, score", [
    ("5", 5), (" 4 ", 4), ("4/5", 4), ("5 de 5", 5), ("3 stars", 3), ("5 estrelas", 5),
    ("⭐⭐⭐⭐", 4), ("★★", 2), ("5⭐", None), ("cinco", 5), ("Cuatro!", 4), ("dois", 2),
    ("três", 3), ("five", 5), ("五", 5), ("四分", 4), ("5分", 5), ("👍", 5), ("👍🏽", 5),
    ("👎", 1), ("👍👍", 5), ("excelente", 5), ("muy bien", 5), ("ótimo", 5), ("很好", 5),
    ("满意", 5), ("pésimo", 1), ("muito ruim", 1), ("差评", 1), ("bad", 1), ("Sí", 5),
])
def test_a_rating_in_any_of_the_languages(text: str, score: int | None) -> None:
    assert parse_rating(text, "five") == score
    if score is not None:
        assert parse_rating(text, "thumbs") == score


@pytest.mark.parametrize("text", [
    "5 days and still no refund", "no", "não", "不", "2 items are missing",
    "¿cuándo llega mi pedido?", "todavía no llega", "ok", "thanks", "gracias",
    "6", "0", "10", "55", "12345", "my order 5", "", "   ", "5" * 50, "好的，我的包裹呢",
    "<script>5</script>", "https://x.example/5",
])
def test_a_normal_message_is_never_a_rating(text: str) -> None:
    assert parse_rating(text, "five") is None
    assert parse_rating(text, "thumbs") is None


def test_the_question_is_in_the_conversations_language() -> None:
    assert question("five", "es", {}) == DEFAULT_WORDING["five"]["es"]
    assert question("thumbs", "zh", {}) == DEFAULT_WORDING["thumbs"]["zh"]
    assert question("five", "de", {}) == DEFAULT_WORDING["five"]["en"]
    assert question("five", "pt", {"pt": "Nota de 1 a 5?"}) == "Nota de 1 a 5?"
    assert question("five", None, {"en": "Rate us 1-5"}) == "Rate us 1-5"


T0 = 1_800_000_000.0


def test_kpis_count_the_survey_not_as_a_reply_and_its_answer_undoes_the_reopen() -> None:
    events = [
        ev("new_message", T0, new_conversation=True),
        ev("assignment", T0 + 1, action="assigned", agent="ana"),
        ev("reply", T0 + 60, agent="ana"),
        ev("status", T0 + 100, action="resolved"),
        ev("reply", T0 + 101, agent=SURVEY_AUTHOR),
        ev("new_message", T0 + 500),
        ev("status", T0 + 500, action="reopened"),
        ev("status", T0 + 501, action="rated", agent="ana", reason="4"),
    ]
    batch = fold(events, {}, {"0.a": conv()}, ALWAYS)
    s = stats(batch)
    assert s[("replies", "all")].n == 1  # the survey is not an agent's reply
    assert s[("csat_sent", "all")].n == 1
    assert s[("csat", "all")].n == 1 and s[("csat", "all")].wall == 4
    assert s[("csat_satisfied", "all")].n == 1
    assert ("reopened", "all") not in s
    assert stats(batch, "agent")[("csat", "ana")].wall == 4
    assert batch.states["0.a"]["resolved"] == "1"
    # A message that is not an answer: the reopening counts at its own time.
    other = fold([*events[:7], ev("reply", T0 + 600, agent="ana")], {}, {"0.a": conv()},
                 ALWAYS)
    assert stats(other)[("reopened", "all")].n == 1
    # A malformed score counts nothing.
    bad: list[Event] = [*events[:7], ev("status", T0 + 501, action="rated", reason="x")]
    assert ("csat", "all") not in stats(fold(bad, {}, {"0.a": conv()}, ALWAYS))


# -- through the hub ---------------------------------------------------------------------

CSAT = """
[csat]
enabled = true
answer_hours = 1
templates = {{ shop = "csat_survey" }}
wording = {{ es = "¿Nos calificas del 1 al 5?" }}
"""
TEMPLATE = """
[[channels.settings.templates]]
name = "csat_survey"
language = "es"
body = "¿Nos calificas del 1 al 5?"
"""


def csat_config(make_config: Any, endpoint: OperatorEndpoint, *, extra: str = "",
                **channel: Any) -> Any:
    return make_config(extra=routing_config("pools") + CSAT.replace("{{", "{").replace(
        "}}", "}") + extra, outbound_url=endpoint.url, channel_extra=TEMPLATE,
        overrides={"channel": channel} if channel else None)


async def _buyer_writes(client: Any, n: int, sender: str, text: str) -> None:
    r = await client.post("/webhooks/api/shop", **signed_post_args(
        {"id": f"m{n}", "sender": sender, "text": text, "language": "es"}))
    assert r.status == 200, await r.text()


async def _metric(client: Any, needle: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_survey_after_resolve_and_an_answer_that_does_not_reopen(
        make_config: Any, store: Store) -> None:
    async with OperatorEndpoint() as endpoint, \
            running_hub(csat_config(make_config, endpoint)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                      AGENT_TOKEN,
                                      json={"text": "Ya lo reviso"})
        assert status == 202, body
        await hub.resolve(cid)
        # the survey goes out through the channel, in Spanish, once
        survey = await eventually(lambda: _sent(endpoint, "¿Nos calificas"))
        assert survey["text"] == "¿Nos calificas del 1 al 5?"
        # the buyer answers "5": recorded, the conversation stays resolved and unassigned
        await _buyer_writes(client, 90, f"buyer{hub.n}", "5")

        async def rated() -> Any:
            r = await client.get("/api/v1/reports/summary", headers=auth(SUPERVISOR_TOKEN))
            body = await r.json()
            return body if body["csat"]["answered"] == 1 else None

        report = await eventually(rated)
        assert report["csat"] == {"sent": 1, "answered": 1, "mean_score": 5.0,
                                  "satisfied_share": 1.0, "response_rate": 1.0}
        assert report["counts"]["replies"] == 1 and report["counts"]["reopened"] == 0
        record = await hub.conv(cid)
        assert record["status"] == "resolved" and record["assignee"] is None
        assert await _metric(client, 'inboxhub_csat_surveys_total{outcome="answered"') == 1
        r = await client.get("/api/v1/reports/breakdown?by=agent",
                             headers=auth(SUPERVISOR_TOKEN))
        rows = {row["key"]: row for row in (await r.json())["rows"]}
        assert rows["ana.agent"]["csat"]["mean_score"] == 5.0
        r = await client.get("/api/v1/reports/chart?chart=csat",
                             headers=auth(SUPERVISOR_TOKEN))
        assert r.status == 200 and "Satisfaction" in await r.text()

        # a second conversation: the buyer writes about their parcel instead: reopened, routed
        second = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        await hub.resolve(second)
        await eventually(lambda: _sent(endpoint, "¿Nos calificas", count=2))
        await _buyer_writes(client, 91, f"buyer{hub.n}", "todavía no llega mi paquete")

        async def reopened() -> bool:
            return (await hub.conv(second))["status"] == "assigned"

        await eventually(reopened)
        # no second survey for the first conversation while its answer is in: one survey each
        assert len([m for m in endpoint.received if "¿Nos calificas" in m["text"]]) == 2


async def _sent(endpoint: OperatorEndpoint, prefix: str, count: int = 1) -> Any:
    found = [m for m in endpoint.received if m.get("text", "").startswith(prefix)]
    return found[-1] if len(found) >= count else None


async def test_no_survey_on_amazon_or_outside_the_window_without_a_template(
        make_config: Any, store: Store) -> None:
    label = '\n[routing.channel_labels]\nshop = "amazon"\n'
    async with OperatorEndpoint() as endpoint, \
            running_hub(csat_config(make_config, endpoint, extra=label)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        await hub.resolve(cid)
        await eventually(lambda: _metric(
            client, 'inboxhub_csat_surveys_total{outcome="skipped",'
                    'reason="amazon_forbids_surveys"}'))
        assert not [m for m in endpoint.received if "califica" in m.get("text", "")]


async def test_a_closed_window_takes_the_template_or_no_survey(
        make_config: Any, store: Store) -> None:
    async with OperatorEndpoint() as endpoint, running_hub(csat_config(
            make_config, endpoint, reply_window_seconds=3600)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        k = store.keys_for(cid)
        assert k is not None
        await store.redis.hset(k.conversation(cid), "last_inbound_at", repr(time.time() - 7200))
        await hub.resolve(cid)
        sent = await eventually(lambda: _sent(endpoint, "¿Nos calificas"))
        assert sent["template"]["name"] == "csat_survey"

    await store.redis.flushall()  # the same buyer again, on a hub with no survey template
    async with OperatorEndpoint() as endpoint, running_hub(make_config(
            extra=routing_config("pools") + "\n[csat]\nenabled = true\n",
            outbound_url=endpoint.url,
            overrides={"channel": {"reply_window_seconds": 3600}})) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        k = store.keys_for(cid)
        assert k is not None
        await store.redis.hset(k.conversation(cid), "last_inbound_at", repr(time.time() - 7200))
        await hub.resolve(cid)
        await eventually(lambda: _metric(
            client, 'inboxhub_csat_surveys_total{outcome="skipped",reason="window_closed"}'))
        assert endpoint.received == []


def test_csat_config_names_what_exists(tmp_path: Any, redis_server: Any, hub_env: None) -> None:
    from hub.config import ConfigError, load_config
    from tests.conftest import write_config

    for extra, word in [
        ('[csat]\nchannels = ["nope"]\n', "csat.channels[0]"),
        ('[csat]\nqueues = ["nope"]\n', "csat.queues[0]"),
        ('[csat]\ntemplates = { nope = "x" }\n', "csat.templates.nope"),
        ('[csat]\nwording = { Spanish = "x" }\n', "csat.wording.Spanish"),
        ('[csat]\nscale = "ten"\n', "csat.scale"),
        ('[csat]\nanswer_hours = 0\n', "csat.answer_hours"),
        ('[csat]\nwording = { es = "" }\n', "csat.wording"),
    ]:
        path = write_config(tmp_path, redis_server.url, extra=extra)
        with pytest.raises(ConfigError, match=word.replace("[", r"\[").replace("]", r"\]")):
            load_config(path)


async def test_a_survey_handled_again_after_a_crash_is_sent_once(
        make_config: Any, store: Store) -> None:
    """The sender records the wait, then queues the survey; killed in between, it handles
    the same resolution again: that is not "an answer is awaited" but the same survey, which
    goes out once. A survey of another round still waits."""
    async with OperatorEndpoint() as endpoint, running_hub(make_config(
            extra=routing_config("pools"), outbound_url=endpoint.url)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        await hub.resolve(cid)
        app_store = client.server.app[K.STORE]
        assert app_store.events is not None

        async def resolution() -> Any:
            _last, events = await app_store.events.after_raw("0-0", 1000)
            return next((e for e in events if e.conversation_id == cid
                         and e.kind == "status" and e.action == "resolved"), None)

        event = await eventually(resolution)
        sender = SurveySender(app_store, app_store.events, client.server.app[K.CHANNELS],
                              CsatSettings(enabled=True, answer_hours=1),
                              RedisLeaseManager(app_store.redis, owner="test"))
        # what the crashed sender had written before queueing
        assert await app_store.update_conversation(cid, {
            "csat_state": "sent", "csat_until": repr(time.time() + 3600),
            "csat_round": event.id, "csat_via": "message"})
        question_es = DEFAULT_WORDING["five"]["es"]

        def surveys() -> list[Any]:
            return [m for m in endpoint.received if m.get("text") == question_es]

        await sender.survey(event)
        await eventually(lambda: asyncio.sleep(0, surveys()))
        await sender.survey(event)  # and once more: still one
        another = msgspec.structs.replace(event, id="1-0")
        await sender.survey(another)  # another round while this one is awaited: none
        await asyncio.sleep(1.0)
        assert len(surveys()) == 1
