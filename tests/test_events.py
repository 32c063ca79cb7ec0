"""The live event stream against the running hub: every kind of event, scope per event,
resuming with Last-Event-ID, reset past retention, presence and collision warnings, slow
clients, shutdown, and bad input."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hub.auth import Principal
from hub.events_api import EVENT_HUB, EVENT_LOG, Stream
from storage.events import Event
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.events_client import SseClient
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, TEXTS, Hub, routing_config

SLA = """
[routing.sla.api]
first_response_minutes = 0.02
always = true
"""


def events_config(make_config: Any, *, endpoint: OperatorEndpoint | None = None,
                  sla: bool = False, **events: Any) -> Any:
    extra = routing_config("pools") + (SLA if sla else "")
    if events:
        extra += "\n[events]\n" + "\n".join(f"{k} = {v!r}" for k, v in events.items()) + "\n"
    kwargs: dict[str, Any] = {"extra": extra}
    if endpoint is not None:
        kwargs["outbound_url"] = endpoint.url
    return make_config(**kwargs)


def sse(client: Any, token: str, *, last_id: str | None = None, query: str = "") -> SseClient:
    headers = auth(token)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    return SseClient(client.get, "/api/v1/events" + query, headers)


def kinds(events: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.data.get("action")) for e in events]


async def test_every_kind_reaches_whoever_may_see_it(make_config: Any) -> None:
    async with OperatorEndpoint() as endpoint, \
            running_hub(events_config(make_config, endpoint=endpoint, sla=True)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        await hub.online("bruno")
        async with sse(client, SUPERVISOR_TOKEN) as boss, sse(client, AGENT_TOKEN) as ana, \
                sse(client, BRUNO_TOKEN) as bruno:
            mine = await hub.buyer("es", expect="assigned", assignee="ana.agent")
            # new_message then assignment, both for the supervisor
            await boss.wait_for(lambda e: e.kind == "assignment"
                                and e.data["conversation_id"] == mine)
            assert kinds(boss.of(mine))[:2] == [("new_message", None),
                                                ("assignment", "assigned")]
            first = boss.of(mine)[0].data
            assert first["new_conversation"] is True and first["channel"] == "shop"
            assert "text" not in first and set(first) <= set(Event.__struct_fields__)
            # ana: the assignment (the message came before routing: nobody's yet)
            got = await ana.wait_for(lambda e: e.data["conversation_id"] == mine)
            assert got.kind == "assignment" and got.data["agent"] == "ana.agent"

            # reply -> reply + delivery sent; a receipt -> delivery delivered
            status, body = await hub.call("POST", f"/api/v1/conversations/{mine}/replies",
                                          AGENT_TOKEN, json={"text": "Un momento"})
            assert status == 202, body
            await ana.wait_for(lambda e: e.kind == "delivery" and e.data["action"] == "sent")
            await eventually(lambda: asyncio.sleep(0, endpoint.received))
            receipt = await client.post("/webhooks/api/shop/status", **signed_post_args(
                {"id": "op-1", "status": "delivered"}))
            assert receipt.status < 300, await receipt.text()
            delivered = await ana.wait_for(lambda e: e.kind == "delivery"
                                           and e.data["action"] == "delivered")
            assert delivered.data["message_id"] == body["message"]["id"]
            assert ("reply", None) in kinds(ana.of(mine))

            # another buyer message on her conversation: ana gets the new_message itself
            await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "again-1", "sender": "buyer1", "text": TEXTS["es"]}))
            again = await ana.wait_for(lambda e: e.kind == "new_message")
            assert again.data["assignee"] == "ana.agent"

            # resolve -> status resolved; the buyer writes again -> status reopened
            await hub.resolve(mine)
            await boss.wait_for(lambda e: e.kind == "status"
                                and e.data["action"] == "resolved")
            await ana.wait_for(lambda e: e.kind == "status" and e.data["action"] == "resolved")
            await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "again-2", "sender": "buyer1", "text": TEXTS["es"]}))
            await boss.wait_for(lambda e: e.kind == "status" and e.data["action"] == "reopened")

            # transfer to bruno's queue: bruno (who serves pt) is not told about es work
            theirs = await hub.buyer("pt", expect="assigned", assignee="bruno")
            await bruno.wait_for(lambda e: e.data["conversation_id"] == theirs
                                 and e.kind == "assignment")
            await hub.online("zoe")
            status, body = await hub.call("POST", f"/api/v1/conversations/{theirs}/transfer",
                                          ADMIN_TOKEN, json={"agent": "zoe"})
            assert status == 200, body
            moved = await boss.wait_for(lambda e: e.kind == "assignment"
                                        and e.data["action"] == "transferred")
            assert moved.data["agent"] == "zoe" and moved.data["conversation_id"] == theirs
            assert moved.data["from_agent"] == "bruno"
            # bruno, whose conversation it was, is told it went (and nothing after)
            await bruno.wait_for(lambda e: e.id == moved.id)

            # waiting pt work breaches its SLA clock: bruno (serves pt) is told, ana not
            status, body = await hub.call("POST", "/api/v1/agents/bruno/status", ADMIN_TOKEN,
                                          json={"status": "away"})
            assert status == 200, body
            waiting = await hub.buyer("pt", expect="queued")
            await bruno.wait_for(lambda e: e.kind == "assignment" and e.data["action"] == "queued"
                                 and e.data["conversation_id"] == waiting)
            breach = await boss.wait_for(lambda e: e.kind == "sla_breach"
                                         and e.data["conversation_id"] == waiting, timeout=15)
            assert breach.data["clock"] == "first"
            await bruno.wait_for(lambda e: e.kind == "sla_breach"
                                 and e.data["conversation_id"] == breach.data["conversation_id"])

            # scope: ana never saw anything of bruno's conversations, bruno nothing of hers
            await asyncio.sleep(0.3)
            assert not ana.of(theirs) and not ana.of(waiting)
            assert not bruno.of(mine)
            seen = {e.kind for e in boss.events}
            assert {"new_message", "reply", "delivery", "assignment", "status",
                    "sla_breach"} <= seen
            ids = [e.id for e in boss.events]
            assert len(ids) == len(set(ids))


async def test_resume_with_last_event_id_loses_and_repeats_nothing(make_config: Any) -> None:
    async with running_hub(events_config(make_config)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        async with sse(client, SUPERVISOR_TOKEN) as boss:
            await hub.buyer("es", expect="assigned", assignee="ana.agent")
            await boss.wait_for(lambda e: e.kind == "assignment")
            before = list(boss.events)
        last = before[-1].id
        # while disconnected: more events
        for _ in range(3):
            await hub.buyer("es", expect="queued")
        log = client.server.app[EVENT_LOG]
        missed = await log.after(last, 1000)
        assert len(missed) >= 6
        async with sse(client, SUPERVISOR_TOKEN, last_id=last) as again:
            await again.wait_for(lambda e: e.id == missed[-1].id)
            await hub.buyer("es", expect="queued")  # and live after the catch-up
            await again.wait_for(lambda e: e.kind == "assignment"
                                 and e.id not in {m.id for m in missed})
            got = [e.id for e in again.events]
        assert got[:len(missed)] == [m.id for m in missed]
        assert len(got) == len(set(got))
        assert all(a < b for a, b in zip(map(_key, got), map(_key, got[1:]), strict=False))
        # the query parameter resumes the same way; the header wins over it
        async with sse(client, SUPERVISOR_TOKEN, query=f"?last_event_id={last}") as by_query:
            await by_query.wait_for(lambda e: e.id == missed[-1].id)
            assert by_query.events[0].id == missed[0].id
        async with sse(client, SUPERVISOR_TOKEN, last_id=missed[0].id,
                       query=f"?last_event_id={last}") as both:
            await both.wait_for(lambda e: e.id == missed[-1].id)
            assert both.events[0].id == missed[1].id


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def test_resume_from_past_retention_sends_reset(make_config: Any) -> None:
    async with running_hub(events_config(make_config, retention_entries=100)) as client:
        log = client.server.app[EVENT_LOG]
        first = await log.append("viewing", "0.00aa", agent="x", action="viewing")
        assert first is not None
        for _ in range(600):
            await log.append("viewing", "0.00aa", agent="x", action="viewing")
        assert await log.lost_since(first)
        async with sse(client, SUPERVISOR_TOKEN, last_id=first) as stale:
            reset = await stale.wait_for(lambda e: True)
            assert reset.kind == "reset" and reset.id == await log.latest_id()
            assert reset.data["id"] == reset.id
        # an id still retained is no reset
        recent = (await log.after("0-0", 1))[0].id
        async with sse(client, SUPERVISOR_TOKEN, last_id=recent) as fine:
            got = await fine.wait_for(lambda e: True)
            assert got.kind == "viewing"


async def test_presence_warns_of_a_collision(make_config: Any) -> None:
    async with running_hub(events_config(make_config)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        await hub.online("bruno")
        mine = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        path = f"/api/v1/conversations/{mine}/presence"
        async with sse(client, AGENT_TOKEN) as ana, sse(client, BRUNO_TOKEN) as bruno:
            status, body = await hub.call("POST", path, SUPERVISOR_TOKEN,
                                          json={"state": "viewing"})
            assert status == 200 and body == {"others": [], "emitted": True}
            warned = await ana.wait_for(lambda e: e.kind == "viewing")
            assert warned.data["agent"] == "sam" and warned.data["action"] == "viewing"
            status, body = await hub.call("POST", path, AGENT_TOKEN, json={"state": "typing"})
            assert status == 200 and body["emitted"] is True
            assert [(o["agent"], o["state"]) for o in body["others"]] == [("sam", "viewing")]
            # rate-limited: the same state again soon emits nothing
            status, body = await hub.call("POST", path, AGENT_TOKEN, json={"state": "typing"})
            assert status == 200 and body["emitted"] is False
            status, body = await hub.call("GET", path, SUPERVISOR_TOKEN)
            assert [(o["agent"], o["state"]) for o in body["others"]] == [("ana.agent",
                                                                           "typing")]
            status, body = await hub.call("POST", path, AGENT_TOKEN, json={"state": "left"})
            assert status == 200
            status, body = await hub.call("GET", path, SUPERVISOR_TOKEN)
            assert body["others"] == []
            await asyncio.sleep(0.3)
            assert not bruno.of(mine)  # not his: no presence events either
            typing = [e for e in ana.events if e.kind == "typing"]
            assert len(typing) == 1
        # out of scope: 404 like an unknown id; bad input: 400
        status, body = await hub.call("POST", path, BRUNO_TOKEN, json={"state": "viewing"})
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body = await hub.call("GET", path, BRUNO_TOKEN)
        assert status == 404
        status, body = await hub.call("POST", "/api/v1/conversations/0.00ff00ff/presence",
                                      ADMIN_TOKEN, json={"state": "viewing"})
        assert status == 404
        for bad in ({"state": "dancing"}, {"state": 1}, {}, {"state": "viewing", "x": 1}, []):
            status, body = await hub.call("POST", path, AGENT_TOKEN, json=bad)
            assert status == 400 and body["error"]["code"] == "invalid_body", bad
        r = await client.post(path, data=b"{not json", headers=auth(AGENT_TOKEN))
        assert r.status == 400
        r = await client.post(path, json={"state": "viewing"})
        assert r.status == 401


async def test_bad_stream_requests(make_config: Any) -> None:
    async with running_hub(events_config(make_config)) as client:
        for headers, query in (({"Last-Event-ID": "abc"}, ""), ({}, "?last_event_id=1-x"),
                               ({"Last-Event-ID": "1" * 30 + "-0"}, ""), ({}, "?since=1"),
                               ({}, "?last_event_id=1-0&last_event_id=2-0"),
                               ({"Last-Event-ID": "99999999999999999999-5"}, "")):
            r = await client.get("/api/v1/events" + query,
                                 headers={**auth(AGENT_TOKEN), **headers})
            assert r.status == 400, (headers, query)
            assert (await r.json())["error"]["code"] == "invalid_parameter"
        r = await client.get("/api/v1/events")
        assert r.status == 401
        assert not client.server.app[EVENT_HUB].streams


async def test_heartbeat_and_shutdown_end_streams_promptly(make_config: Any) -> None:
    loaded = events_config(make_config, heartbeat_seconds=0.2)
    async with running_hub(loaded) as client:
        stream = sse(client, AGENT_TOKEN)
        await stream.__aenter__()
        try:
            await eventually(lambda: asyncio.sleep(0, stream.comments >= 3), timeout=5)
            started = time.monotonic()
            await client.server.app.shutdown()
            await asyncio.wait_for(stream.ended.wait(), 3)
            assert time.monotonic() - started < 3
            assert not client.server.app[EVENT_HUB].streams
        finally:
            await stream.__aexit__()


async def test_a_slow_client_is_dropped_not_buffered(make_config: Any) -> None:
    async with running_hub(events_config(make_config, client_buffer=10)) as client:
        app = client.server.app
        hub = app[EVENT_HUB]
        slow = await hub.open(Principal("sam", "supervisor"), "pools")
        try:
            log = app[EVENT_LOG]
            for _ in range(11):
                await log.append("viewing", "0.00aa", agent="x", action="viewing")
            await eventually(lambda: asyncio.sleep(0, slow.dropped), timeout=5)
            assert not slow.waiting  # nothing kept for it
            assert await slow.next(0.01) is None
        finally:
            hub.release(slow)
        # over HTTP: the dropped stream's response ends; the client may resume
        async with sse(client, SUPERVISOR_TOKEN) as stream:
            await eventually(lambda: asyncio.sleep(0, len(hub.streams) == 1))
            (opened,) = hub.streams
            for _ in range(12):
                opened.offer(Event(id="1-1", kind="viewing", conversation_id="0.00aa", at=1.0))
            await asyncio.wait_for(stream.ended.wait(), 3)
        assert not hub.streams


def test_scope_of_one_event() -> None:
    def event(**kw: Any) -> Event:
        return Event(id="1-0", kind="assignment", conversation_id="0.0a", at=1.0, **kw)

    ana = Stream(Principal("ana", "agent"), "pools", frozenset({"es#0"}), 10)
    own = Stream(Principal("ana", "agent"), "own", frozenset(), 10)
    boss = Stream(Principal("sam", "supervisor"), "own", frozenset(), 10)
    cases = [
        (event(status="assigned", assignee="ana"), True, True),
        (event(status="assigned", assignee="bob"), False, False),
        (event(status="waiting", pool="es#0"), True, False),
        (event(status="waiting", pool="pt#0"), False, False),
        (event(status="closed", agent="ana"), True, True),  # taken from her: she is told
        (event(status="closed"), False, False),
        (event(status="assigned", assignee="bob", from_agent="ana"), True, True),
        (event(status=None), False, False),
    ]
    for e, pools, mine in cases:
        assert ana.may_see(e) is pools, e
        assert own.may_see(e) is mine, e
        assert boss.may_see(e) is True


async def test_any_valid_id_is_accepted(make_config: Any) -> None:
    async with running_hub(events_config(make_config)) as client:
        for value in ("0-0", "1712345678901-0", "18446744073709551615-18446744073709551615"):
            async with sse(client, ADMIN_TOKEN, last_id=value) as stream:
                await eventually(lambda s=stream: asyncio.sleep(0, s.comments >= 1))


async def test_work_status_changes_are_events(make_config: Any) -> None:
    async with running_hub(events_config(make_config)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        mine = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        path = f"/api/v1/conversations/{mine}/status"
        async with sse(client, AGENT_TOKEN) as ana, sse(client, BRUNO_TOKEN) as bruno:
            status, body = await hub.call("POST", path, AGENT_TOKEN, json={"status": "pending"})
            assert status == 200, body
            await ana.wait_for(lambda e: e.kind == "status" and e.data["action"] == "pending")
            status, body = await hub.call("POST", path, AGENT_TOKEN, json={
                "status": "snoozed", "snooze_until": time.time() + 0.5})
            assert status == 200, body
            await ana.wait_for(lambda e: e.kind == "status" and e.data["action"] == "snoozed")
            woken = await ana.wait_for(lambda e: e.kind == "status"
                                       and e.data["action"] == "woken", timeout=10)
            assert woken.data["conversation_id"] == mine
            assert woken.data["assignee"] == "ana.agent"
            await asyncio.sleep(0.2)
            assert not bruno.of(mine)
