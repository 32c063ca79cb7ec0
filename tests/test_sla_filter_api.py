"""``GET /api/v1/conversations?sla=...`` / ``sla_due_within=...`` against the running hub (two
partitions): soonest deadline first, by role and scope, with the other filters, cursor paging,
clocks stopping on an answer, resolve and erasure, and bad input refused with a 400."""

from __future__ import annotations

from typing import Any

from hub import keys as K
from storage import keys
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import eventually, running_hub
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, Hub, routing_config

# First response due at once (0.12 s), resolution in ten hours: every buyer is soon breached,
# and an answer leaves only the resolution clock running.
SLA = """
[routing.sla.chat]
first_response_minutes = 0.002
resolution_minutes = 600
always = true
"""


async def listed(hub: Hub, query: str, token: str = SUPERVISOR_TOKEN) -> list[str]:
    status, body = await hub.call("GET", f"/api/v1/conversations?{query}", token)
    assert status == 200, (query, body)
    return [c["id"] for c in body["conversations"]]


async def soonest(hub: Hub, cid: str) -> float:
    return min((await hub.state(cid))["sla_deadlines"].values())


async def test_sla_list_by_role_scope_filters_and_paging(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools") + SLA)) as client:
        hub = Hub(client)
        c = await hub.seed()  # mine, pool (es, queued), theirs (bruno), elsewhere (pt), resolved
        open_ = [c["mine"], c["pool"], c["theirs"], c["elsewhere"]]
        deadlines = {cid: await soonest(hub, cid) for cid in open_}
        by_deadline = sorted(open_, key=lambda cid: (deadlines[cid], cid.encode()))

        async def all_breached() -> bool:
            return set(await listed(hub, "sla=breached")) == set(open_)

        await eventually(all_breached)
        # -- soonest deadline first; the resolved one has no running clock -----------------
        for token in (SUPERVISOR_TOKEN, ADMIN_TOKEN):
            assert await listed(hub, "sla=breached", token) == by_deadline
            assert await listed(hub, "sla=running", token) == by_deadline
        # -- an agent sees only what her scope allows ----------------------------------------
        assert await listed(hub, "sla=breached", AGENT_TOKEN) == [
            cid for cid in by_deadline if cid in (c["mine"], c["pool"])]
        assert await listed(hub, "sla=breached", BRUNO_TOKEN) == [
            cid for cid in by_deadline if cid in (c["theirs"], c["elsewhere"])]
        assert await listed(hub, "sla=running&mine=true", AGENT_TOKEN) == [c["mine"]]

        # -- an answer stops the first-response clock: resolution (10 h) is what is left ----
        status, body = await hub.call("POST", f"/api/v1/conversations/{c['mine']}/replies",
                                      AGENT_TOKEN, json={"text": "Ya lo miro"})
        assert status == 202, body
        rest = [cid for cid in by_deadline if cid != c["mine"]]
        assert await listed(hub, "sla=breached") == rest
        assert await listed(hub, "sla_due_within=0") == rest
        assert await listed(hub, "sla_due_within=599") == rest
        assert await listed(hub, "sla_due_within=601") == [*rest, c["mine"]]
        assert await listed(hub, "sla=running") == [*rest, c["mine"]]
        assert await listed(hub, "sla=breached&sla_due_within=601") == rest  # breached wins
        assert await listed(hub, "sla=running&mine=true", AGENT_TOKEN) == [c["mine"]]
        assert await listed(hub, "sla=breached&mine=true", AGENT_TOKEN) == []

        # -- with the other filters ----------------------------------------------------------
        assert await listed(hub, "sla=breached&language=pt") == [
            cid for cid in rest if cid in (c["theirs"], c["elsewhere"])]
        assert await listed(hub, "sla=running&unassigned=true") == [
            cid for cid in rest if cid in (c["pool"], c["elsewhere"])]
        assert await listed(hub, "sla=running&status=resolved") == []
        assert await listed(hub, "sla=running&queue=es&channel=api") == [
            cid for cid in [*rest, c["mine"]] if cid in (c["mine"], c["pool"])]
        assert await listed(hub, "sla=running&assignee=bruno&mine=true", AGENT_TOKEN) == []

        # -- cursor paging: one at a time, same order, each once -----------------------------
        seen: list[str] = []
        cursor = ""
        for _ in range(10):
            status, body = await hub.call(
                "GET", f"/api/v1/conversations?sla=running&limit=1{cursor}", SUPERVISOR_TOKEN)
            assert status == 200, body
            seen += [x["id"] for x in body["conversations"]]
            if body["next_cursor"] is None:
                break
            cursor = f"&cursor={body['next_cursor']}"
        assert seen == [*rest, c["mine"]]
        # a cursor of one ordering is refused by the other
        status, body = await hub.call("GET", "/api/v1/conversations?limit=1", SUPERVISOR_TOKEN)
        activity_cursor = body["next_cursor"]
        status, body = await hub.call(
            "GET", f"/api/v1/conversations?sla=running&cursor={activity_cursor}",
            SUPERVISOR_TOKEN)
        assert status == 400 and body["error"]["code"] == "invalid_cursor", body
        status, body = await hub.call("GET", "/api/v1/conversations?sla=running&limit=1",
                                      SUPERVISOR_TOKEN)
        status, body = await hub.call(
            "GET", f"/api/v1/conversations?cursor={body['next_cursor']}", SUPERVISOR_TOKEN)
        assert status == 400 and body["error"]["code"] == "invalid_cursor", body

        # -- resolve and erasure stop every clock: out of the list at once -------------------
        await hub.resolve(c["pool"])
        assert c["pool"] not in await listed(hub, "sla=running")
        contact = (await hub.conv(c["theirs"]))["contact_id"]
        status, body = await hub.call("DELETE", f"/api/v1/contacts/{contact}", ADMIN_TOKEN)
        assert status == 200, body
        assert c["theirs"] not in await listed(hub, "sla=running")
        redis = client.server.app[K.STORE].redis
        members = {m.decode() for m in await redis.zrange(keys.ROUTING_SLA_DUE, 0, -1)}
        assert members == {c["elsewhere"], c["mine"]}


async def test_sla_list_refuses_bad_input(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools") + SLA)) as client:
        hub = Hub(client)
        for query in ("sla_due_within=-1", "sla_due_within=43201",
                      "sla_due_within=99999999999999", "sla_due_within=abc",
                      "sla_due_within=1.5", "sla_due_within=", "sla_due_within=%201",
                      "sla_due_within=1e3", "sla_due_within=١", "sla_due_within=5&sla_due_within=6",
                      "sla=late", "sla=", "sla=BREACHED", "sla=breached&sla=running",
                      "sla=breached&before=1700000000", "sla_due_within=5&before=1",
                      "sla=running&cursor=not-a-cursor", "sla=running&cursor=" + "A" * 600):
            for token in (AGENT_TOKEN, SUPERVISOR_TOKEN):
                status, body = await hub.call("GET", f"/api/v1/conversations?{query}", token)
                assert status == 400, (query, body)
                assert body["error"]["code"] in ("invalid_parameter", "invalid_cursor"), body
        r = await client.get("/api/v1/conversations?sla=breached")
        assert r.status == 401
        assert await listed(hub, "sla_due_within=43200") == []
        assert await listed(hub, "sla=running", AGENT_TOKEN) == []


async def test_every_list_row_carries_its_soonest_running_deadline(make_config: Any) -> None:
    """``sla_due_at`` on each row of the activity list, the SLA list and search: the soonest
    running deadline (what the inbox counts down), null once every clock has stopped."""
    async with running_hub(make_config(extra=routing_config("pools") + SLA)) as client:
        hub = Hub(client)
        c = await hub.seed()

        async def rows(query: str = "limit=200", path: str = "conversations",
                       token: str = SUPERVISOR_TOKEN) -> dict[str, Any]:
            status, body = await hub.call("GET", f"/api/v1/{path}?{query}", token)
            assert status == 200, body
            return {x["id"]: x["sla_due_at"] for x in body["conversations"]}

        listed_rows = await rows()
        assert listed_rows[c["resolved"]] is None  # resolve stopped every clock
        for name in ("mine", "pool", "theirs", "elsewhere"):
            assert listed_rows[c[name]] == await soonest(hub, c[name]), name
        by_deadline = await rows("sla=running")
        assert by_deadline == {cid: d for cid, d in listed_rows.items() if d is not None}
        assert (await rows(token=AGENT_TOKEN)).keys() == {c["mine"], c["pool"]}
        # an answer stops first response: the row now counts down to resolution (10 h)
        status, body = await hub.call("POST", f"/api/v1/conversations/{c['mine']}/replies",
                                      AGENT_TOKEN, json={"text": "Ya lo miro"})
        assert status == 202, body
        after = (await rows())[c["mine"]]
        assert after == (await hub.state(c["mine"]))["sla_deadlines"]["resolution"]
        assert after > listed_rows[c["mine"]] + 3000
        # search rows carry it too
        contact = await hub.conv(c["pool"])
        found = await rows(f"q={contact['thread_id']}", path="search")
        assert found[c["pool"]] == listed_rows[c["pool"]]
