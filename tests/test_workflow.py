"""The work an agent does on a conversation, against the running hub: private notes (never
sent), priority, the work status (pending, snoozed until, resolved; the buyer's next message
reopens), spam and blocked senders (stored, not routed), bulk actions; every route by role
and scope, and bad input."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, eventually, running_hub
from tests.workflow_hub import BRUNO_TOKEN, SUPERVISOR_TOKEN, WorkflowHub, config

ROLES = {"agent": AGENT_TOKEN, "supervisor": SUPERVISOR_TOKEN, "admin": ADMIN_TOKEN}
# With agent_scope "pools" Ana acts on "mine" and "pool"; "theirs" and "elsewhere" are not hers.
OUT_OF_SCOPE = ("theirs", "elsewhere")
UNKNOWN = "0.00ff00ff"


async def _scope_matrix(hub: WorkflowHub, convs: dict[str, str], path: str,
                        payload: dict[str, Any]) -> None:
    """An action on a conversation out of Ana's scope is 403 out_of_scope and changes nothing;
    on an unknown id 404, for every role."""
    for relation in OUT_OF_SCOPE:
        before = await hub.conv(convs[relation])
        status, body = await hub.post(path.format(id=convs[relation]), AGENT_TOKEN, payload)
        assert status == 403 and body["error"]["code"] == "out_of_scope", (path, body)
        assert await hub.conv(convs[relation]) == before
    for token in ROLES.values():
        status, body = await hub.post(path.format(id=UNKNOWN), token, payload)
        assert status == 404 and body["error"]["code"] == "not_found", (path, body)


async def _bad_bodies(hub: WorkflowHub, path: str, bodies: list[Any]) -> None:
    for payload in bodies:
        raw = payload if isinstance(payload, bytes) else None
        status, body = await hub.post(path, ADMIN_TOKEN, None if raw else payload, raw=raw)
        assert status == 400, (path, payload, body)
        assert body["error"]["code"] == "invalid_body", body


async def test_notes_are_private_and_never_sent(make_config: Any, redis: Redis) -> None:
    async with OperatorEndpoint() as endpoint, running_hub(make_config(
            outbound_url=endpoint.url, extra=config())) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        mine = convs["mine"]
        notes = f"/api/v1/conversations/{mine}/notes"
        status, note = await hub.post(notes, AGENT_TOKEN,
                                      {"text": "Cliente VIP — não prometer reembolso <b>"})
        assert status == 201, note
        assert note["kind"] == "note" and note["author"] == "ana.agent"
        assert note["text"] == "Cliente VIP — não prometer reembolso <b>"
        assert abs(note["created_at"] - time.time()) < 30
        status, second = await hub.post(notes, SUPERVISOR_TOKEN, {"text": "ok, combinado"})
        assert status == 201 and second["author"] == "sam"
        # a reply goes out; the notes never do, and they are not among the messages
        status, reply = await hub.post(f"/api/v1/conversations/{mine}/replies", AGENT_TOKEN,
                                       {"text": "Ya lo reviso"})
        assert status == 202, reply
        await eventually(lambda: _delivered(hub, mine))
        await hub.router_idle()
        assert [r["text"] for r in endpoint.received] == ["Ya lo reviso"]
        messages = (await hub.admin_get(f"/api/v1/conversations/{mine}/messages"))["messages"]
        assert all("VIP" not in m["text"] and "combinado" not in m["text"] for m in messages)
        assert (await hub.conv(mine))["message_count"] == 2  # the buyer's and the reply

        # listed oldest first, paged, to every role that may read the conversation
        for token in ROLES.values():
            status, body = await hub.call("GET", notes, token)
            assert status == 200, body
            assert [n["text"] for n in body["notes"]] == [note["text"], "ok, combinado"]
        status, body = await hub.call("GET", notes + "?limit=1", AGENT_TOKEN)
        assert [n["id"] for n in body["notes"]] == [note["id"]] and body["next_offset"] == 1
        status, body = await hub.call("GET", notes + f"?limit=1&offset={body['next_offset']}",
                                      AGENT_TOKEN)
        assert [n["id"] for n in body["notes"]] == [second["id"]]
        assert body["next_offset"] is None
        for query in ("?limit=0", "?offset=-1", "?limit=x", "?nope=1"):
            status, body = await hub.call("GET", notes + query, AGENT_TOKEN)
            assert status == 400, (query, body)

        # scope: out of scope a read is 404 (like an unknown id), a write 403
        for relation in OUT_OF_SCOPE:
            status, body = await hub.call(
                "GET", f"/api/v1/conversations/{convs[relation]}/notes", AGENT_TOKEN)
            assert status == 404 and body["error"]["message"] == "no such conversation"
        status, body = await hub.call("GET", f"/api/v1/conversations/{UNKNOWN}/notes",
                                      ADMIN_TOKEN)
        assert status == 404
        await _scope_matrix(hub, convs, "/api/v1/conversations/{id}/notes", {"text": "hola"})
        status, body = await hub.post(f"/api/v1/conversations/{convs['theirs']}/notes",
                                      BRUNO_TOKEN, {"text": "é minha"})
        assert status == 201 and body["author"] == "bruno"

        await _bad_bodies(hub, notes, [
            {}, {"text": ""}, {"text": "   "}, {"text": 5}, {"text": "x" * 10_001},
            {"text": "a", "author": "bruno"}, [], b"{broken", b"\xff\xfe"])
        status, body = await hub.call("GET", notes, ADMIN_TOKEN)
        assert len(body["notes"]) == 2  # nothing refused was kept
        assert len(endpoint.received) == 1


async def _delivered(hub: WorkflowHub, cid: str) -> bool:
    messages = (await hub.admin_get(f"/api/v1/conversations/{cid}/messages"))["messages"]
    return any(m["direction"] == "out" and m["status"] == "sent" for m in messages)


async def test_priority_is_shown_on_the_conversation(make_config: Any, redis: Redis) -> None:
    async with running_hub(make_config(extra=config())) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        assert (await hub.conv(convs["mine"]))["priority"] == "normal"
        path = f"/api/v1/conversations/{convs['mine']}/priority"
        for priority in ("urgent", "low", "high"):
            status, body = await hub.post(path, AGENT_TOKEN, {"priority": priority})
            assert status == 200 and body["conversation"]["priority"] == priority, body
        assert (await hub.conv(convs["mine"]))["priority"] == "high"
        listed = (await hub.admin_get("/api/v1/conversations"))["conversations"]
        assert {c["id"]: c["priority"] for c in listed}[convs["mine"]] == "high"
        status, body = await hub.post(f"/api/v1/conversations/{convs['pool']}/priority",
                                      AGENT_TOKEN, {"priority": "urgent"})
        assert status == 200, body  # waiting in a queue she serves
        status, body = await hub.post(f"/api/v1/conversations/{convs['theirs']}/priority",
                                      SUPERVISOR_TOKEN, {"priority": "low"})
        assert status == 200 and body["conversation"]["priority"] == "low"
        await _scope_matrix(hub, convs, "/api/v1/conversations/{id}/priority",
                            {"priority": "urgent"})
        await _bad_bodies(hub, path, [{}, {"priority": "critical"}, {"priority": 1},
                                      {"priority": "high", "x": 1}, b"", b"[1"])
        assert (await hub.conv(convs["mine"]))["priority"] == "high"


async def test_status_pending_snoozed_resolved_and_reopen(make_config: Any,
                                                          redis: Redis) -> None:
    async with running_hub(make_config(extra=config())) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        mine, pool = convs["mine"], convs["pool"]
        path = f"/api/v1/conversations/{mine}/status"
        assert (await hub.conv(mine))["work_status"] == "open"

        # pending: the agent keeps it; the buyer's next message makes it open again
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "pending"})
        assert status == 200, body
        assert body["conversation"]["work_status"] == "pending"
        assert body["conversation"]["assignee"] == "ana.agent"
        assert (await hub.state(mine))["status"] == "assigned"
        await hub.write(await hub.thread_of(mine), "¿Alguna novedad?")
        assert (await hub.conv(mine))["work_status"] == "open"
        await hub.router_idle()
        assert (await hub.state(mine))["assignee"] == "ana.agent"

        # snoozed: wakes at its time by itself, or earlier when the buyer writes
        until = time.time() + 1.5
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "snoozed",
                                                          "snooze_until": until})
        assert status == 200, body
        assert body["conversation"]["work_status"] == "snoozed"
        assert body["conversation"]["snoozed_until"] == until
        await eventually(lambda: _work_status(hub, mine, "open"), timeout=10)
        assert (await hub.conv(mine))["snoozed_until"] is None
        assert time.time() >= until
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "snoozed",
                                                          "snooze_until": time.time() + 3600})
        assert status == 200
        await hub.write(await hub.thread_of(mine), "Hola otra vez")
        assert (await hub.conv(mine))["work_status"] == "open"
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "pending"})
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "open"})
        assert status == 200 and body["conversation"]["work_status"] == "open"

        # bad input: nothing changes
        await _bad_bodies(hub, path, [{}, {"status": "closed"}, {"status": "snoozed"},
                                      {"status": "snoozed", "snooze_until": time.time() - 5},
                                      {"status": "snoozed",
                                       "snooze_until": time.time() + 400 * 86400},
                                      {"status": "snoozed", "snooze_until": "tomorrow"},
                                      {"status": "open", "snooze_until": time.time() + 60},
                                      {"status": "open", "extra": True}, b"nope"])
        assert (await hub.conv(mine))["work_status"] == "open"
        await _scope_matrix(hub, convs, "/api/v1/conversations/{id}/status",
                            {"status": "pending"})

        # resolved: what /resolve does; Ana's capacity goes to the buyer waiting in her pool
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "resolved"})
        assert status == 200, body
        assert body["conversation"]["status"] == "resolved"
        assert body["conversation"]["work_status"] == "resolved"
        await eventually(lambda: _assignee(hub, pool, "ana.agent"))
        assert (await hub.state(mine))["status"] == "closed"
        for status_name in ("open", "pending"):
            status, body = await hub.post(path, ADMIN_TOKEN, {"status": status_name})
            assert status == 409 and body["error"]["code"] == "resolved", body
        status, body = await hub.post(path, ADMIN_TOKEN, {"status": "snoozed",
                                                          "snooze_until": time.time() + 60})
        assert status == 409
        # now out of Ana's scope: the conversation is nobody's work
        status, body = await hub.post(path, AGENT_TOKEN, {"status": "open"})
        assert status == 403 and body["error"]["code"] == "out_of_scope"

        # the buyer writes again: routed like a new conversation, open
        await hub.write(await hub.thread_of(mine), "No me llegó nada")
        await eventually(lambda: _status_in(hub, mine, {"queued", "assigned"}))
        assert (await hub.conv(mine))["work_status"] == "open"
        # the old /resolve route still works and is seen as resolved here too
        status, body = await hub.post(f"/api/v1/conversations/{pool}/resolve", AGENT_TOKEN)
        assert status == 200, body
        assert (await hub.conv(pool))["work_status"] == "resolved"


async def _work_status(hub: WorkflowHub, cid: str, want: str) -> bool:
    return (await hub.conv(cid))["work_status"] == want


async def _assignee(hub: WorkflowHub, cid: str, want: str) -> bool:
    return (await hub.conv(cid))["assignee"] == want


async def _status_in(hub: WorkflowHub, cid: str, want: set[str]) -> bool:
    return (await hub.conv(cid))["status"] in want


async def test_spam_and_blocked_senders_are_stored_not_routed(make_config: Any,
                                                              redis: Redis) -> None:
    async with running_hub(make_config(extra=config())) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        mine, pool = convs["mine"], convs["pool"]
        spammer = await hub.thread_of(mine)
        await _scope_matrix(hub, convs, "/api/v1/conversations/{id}/spam", {})
        status, body = await hub.post(f"/api/v1/conversations/{mine}/spam", AGENT_TOKEN)
        assert status == 200, body
        record = body["conversation"]
        assert record["spam"] and record["blocked"] and record["status"] == "resolved"
        # resolved: her capacity went to the buyer waiting in her pool
        await eventually(lambda: _assignee(hub, pool, "ana.agent"))
        log_before = (await hub.admin_get(f"/api/v1/conversations/{mine}/routing"))["log"]

        # the spammer writes again, in the same thread and in a new one: stored, not routed
        await hub.write(spammer, "COMPRE JÁ 💰💰💰")
        await hub.write(spammer, "<script>alert(1)</script>", thread="other-thread")
        await hub.router_idle()
        again = await hub.conv(mine)
        assert again["message_count"] == 2 and again["status"] == "resolved"
        assert again["blocked"] and again["spam"]
        explain = await hub.admin_get(f"/api/v1/conversations/{mine}/routing")
        assert explain["log"] == log_before and explain["state"]["status"] == "closed"
        listed = (await hub.admin_get("/api/v1/conversations?limit=200"))["conversations"]
        fresh = next(c for c in listed if c["thread_id"] == "other-thread")
        assert fresh["blocked"] and not fresh["spam"]
        assert fresh["status"] == "resolved" and fresh["message_count"] == 1
        assert (await hub.state(fresh["id"]))["status"] is None  # routing never saw it
        assert (await hub.conv(pool))["assignee"] == "ana.agent"  # nothing was reshuffled

        # block / unblock: supervisors only
        contact = again["contact_id"]
        for token in (AGENT_TOKEN, BRUNO_TOKEN):
            for action in ("block", "unblock"):
                status, body = await hub.post(f"/api/v1/contacts/{contact}/{action}", token)
                assert status == 403, body
        for bad in (UNKNOWN, "nope", "0." + "f" * 60):
            status, body = await hub.post(f"/api/v1/contacts/{bad}/block", SUPERVISOR_TOKEN)
            assert status == 404 and body["error"]["message"] == "no such contact"
        status, body = await hub.post(f"/api/v1/conversations/{mine}/spam", AGENT_TOKEN,
                                      {"spam": False})
        assert status == 403, body
        status, body = await hub.post(f"/api/v1/contacts/{contact}/unblock", SUPERVISOR_TOKEN)
        assert status == 200, body
        assert body == {"contact_id": contact, "blocked": False, "conversations": 2}
        assert not (await hub.conv(mine))["blocked"]
        assert not (await hub.conv(fresh["id"]))["blocked"]
        # unblocked: the next message routes the conversation again (the spam mark stays
        # until a supervisor takes it away)
        await hub.write(spammer, "Desculpe, era eu mesmo", thread="other-thread")
        await eventually(lambda: _status_in(hub, fresh["id"], {"queued", "assigned"}))
        status, body = await hub.post(f"/api/v1/contacts/{contact}/block", SUPERVISOR_TOKEN)
        assert status == 200 and body["blocked"] and body["conversations"] == 2
        status, body = await hub.post(f"/api/v1/conversations/{mine}/spam", SUPERVISOR_TOKEN,
                                      {"spam": False})
        assert status == 200, body
        cleared = body["conversation"]
        assert not cleared["spam"] and not cleared["blocked"]
        assert cleared["status"] == "resolved"  # taking the mark away does not reopen
        await _bad_bodies(hub, f"/api/v1/conversations/{mine}/spam",
                          [{"spam": "yes"}, {"spam": True, "x": 1}, b"{", [True]])


async def test_bulk_actions_judge_each_id(make_config: Any, redis: Redis) -> None:
    async with running_hub(make_config(extra=config())) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        ids = [convs[r] for r in ("mine", "theirs", "elsewhere")] + [UNKNOWN, "junk",
                                                                     convs["mine"]]
        status, body = await hub.post("/api/v1/conversations/bulk", AGENT_TOKEN,
                                      {"action": "priority", "ids": ids, "priority": "urgent"})
        assert status == 200, body
        got = {r["id"]: (r["ok"], r["status"], r.get("code")) for r in body["results"]}
        assert got == {convs["mine"]: (True, 200, None),
                       convs["theirs"]: (False, 403, "out_of_scope"),
                       convs["elsewhere"]: (False, 403, "out_of_scope"),
                       UNKNOWN: (False, 404, "not_found"), "junk": (False, 404, "not_found")}
        assert [r["id"] for r in body["results"]] == list(dict.fromkeys(ids))
        assert body["succeeded"] == 1 and body["failed"] == 4
        assert (await hub.conv(convs["mine"]))["priority"] == "urgent"
        assert (await hub.conv(convs["theirs"]))["priority"] == "normal"

        # assign: the rules of a transfer, per id (agents hand over only their own)
        await hub.online("zoe")
        status, body = await hub.post("/api/v1/conversations/bulk", AGENT_TOKEN, {
            "action": "assign", "agent": "zoe", "ids": [convs["pool"], convs["mine"]]})
        assert status == 200, body
        assert [(r["ok"], r.get("code")) for r in body["results"]] == [
            (False, "not_assigned_to_you"), (True, None)]
        assert (await hub.state(convs["mine"]))["assignee"] == "zoe"
        status, body = await hub.post("/api/v1/conversations/bulk", SUPERVISOR_TOKEN, {
            "action": "assign", "agent": "bruno", "ids": [convs["elsewhere"], convs["pool"]]})
        assert [(r["ok"], r.get("code")) for r in body["results"]] == [
            (False, "agent_full"), (False, "language_floor")], body

        # tag: added to each id in scope, normalised like POST .../tags; a full one fails alone
        status, body = await hub.post("/api/v1/conversations/bulk", SUPERVISOR_TOKEN, {
            "action": "tag", "ids": [convs["theirs"]],
            "tags": [f"t{i}" for i in range(20)]})
        assert status == 200 and body["succeeded"] == 1, body
        # ("mine" went to zoe above: out of Ana's scope now)
        status, body = await hub.post("/api/v1/conversations/bulk", AGENT_TOKEN, {
            "action": "tag", "tags": ["  Reembolso ", "reembolso", "VIP"],
            "ids": [convs["pool"], convs["mine"], convs["theirs"], UNKNOWN]})
        assert status == 200, body
        assert [(r["ok"], r["status"]) for r in body["results"]] == [
            (True, 200), (False, 403), (False, 403), (False, 404)], body
        assert (await hub.conv(convs["pool"]))["tags"] == ["reembolso", "vip"]
        status, body = await hub.post("/api/v1/conversations/bulk", SUPERVISOR_TOKEN, {
            "action": "tag", "tags": ["vip"], "ids": [convs["theirs"], convs["mine"]]})
        assert [(r["ok"], r.get("code")) for r in body["results"]] == [
            (False, "too_many_tags"), (True, None)], body
        assert (await hub.conv(convs["mine"]))["tags"] == ["vip"]
        assert "vip" not in (await hub.conv(convs["theirs"]))["tags"]

        # resolve: supervisors act on every conversation
        targets = [convs["mine"], convs["theirs"], convs["resolved"]]
        status, body = await hub.post("/api/v1/conversations/bulk", SUPERVISOR_TOKEN,
                                      {"action": "resolve", "ids": targets})
        assert status == 200 and body["succeeded"] == 3, body
        for cid in targets:
            assert (await hub.conv(cid))["status"] == "resolved"
            assert (await hub.state(cid))["status"] == "closed"

        path = "/api/v1/conversations/bulk"
        too_many = [f"0.{i:08x}" for i in range(101)]
        await _bad_bodies(hub, path, [
            {"action": "resolve", "ids": []}, {"action": "resolve", "ids": too_many},
            {"action": "resolve"}, {"action": "delete", "ids": [convs["pool"]]},
            {"action": "assign", "ids": [convs["pool"]]},
            {"action": "priority", "ids": [convs["pool"]]},
            {"action": "priority", "ids": [convs["pool"]], "priority": "meh"},
            {"action": "resolve", "ids": [convs["pool"]], "agent": "zoe"},
            {"action": "tag", "ids": [convs["pool"]]},
            {"action": "tag", "ids": [convs["pool"]], "tags": []},
            {"action": "tag", "ids": [convs["pool"]], "tags": ["   "]},
            {"action": "tag", "ids": [convs["pool"]], "tags": ["x" * 33]},
            {"action": "tag", "ids": [convs["pool"]], "tags": [1]},
            {"action": "resolve", "ids": [convs["pool"]], "tags": ["vip"]},
            {"action": "resolve", "ids": ["x" * 65]}, {"action": "resolve", "ids": [1]},
            b"{\"action\": ", b""])
        assert (await hub.conv(convs["pool"]))["status"] != "resolved"
        status, body = await hub.post(path, "not-a-token", {"action": "resolve", "ids": ["a"]})
        assert status == 401
