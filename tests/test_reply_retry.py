"""Retrying a failed send from the conversation (``POST .../replies/{reply_id}/retry``).

The operator's endpoint refuses a reply for good (400: dead-lettered at once) and then takes
it; a receipt that reports "failed" after the send makes a reply retryable too. Two retries at
once queue it once (one 202, one 409) and the operator sees one send; the routes follow the
agent's scope (403 outside it, nothing changed) and 404 for a reply not in the conversation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, eventually, running_hub, sign
from tests.workflow_hub import BRUNO_TOKEN, SUPERVISOR_TOKEN, WorkflowHub, config


async def _message(hub: WorkflowHub, cid: str, mid: str) -> dict[str, Any]:
    status, body = await hub.call("GET", f"/api/v1/conversations/{cid}/messages",
                                  ADMIN_TOKEN)
    assert status == 200, body
    [found] = [m for m in body["messages"] if m["id"] == mid]
    return dict(found)


async def _reply(hub: WorkflowHub, cid: str, text: str) -> str:
    status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                  ADMIN_TOKEN, json={"text": text})
    assert status == 202, body
    return str(body["message"]["id"])


async def _in_state(hub: WorkflowHub, cid: str, mid: str, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        message = await _message(hub, cid, mid)
        return message if message["status"] == state else None

    return dict(await eventually(reached))


def _retry_path(cid: str, mid: str) -> str:
    return f"/api/v1/conversations/{cid}/replies/{mid}/retry"


async def test_retry_by_scope_once_and_only_when_failed(make_config: Any, redis: Any) -> None:
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url, extra=config("pools"))) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        operator.fail_with = [(400, {}), (400, {})]
        mine = await _reply(hub, convs["mine"], "Su pedido salió ayer")
        failed = await _in_state(hub, convs["mine"], mine, "failed")
        assert failed["attempts"] == 1 and "PermanentError" in failed["error"]
        theirs = await _reply(hub, convs["theirs"], "O pedido saiu ontem")
        await _in_state(hub, convs["theirs"], theirs, "failed")
        assert operator.received == []

        # Out of scope: 403 and nothing changes; a reply of another conversation, an
        # inbound message and unknown ids are 404.
        for token, cid, mid in ((AGENT_TOKEN, convs["theirs"], theirs),
                                (AGENT_TOKEN, convs["elsewhere"], theirs),
                                (BRUNO_TOKEN, convs["mine"], mine)):
            status, body = await hub.post(_retry_path(cid, mid), token)
            assert status == 403 and body["error"]["code"] == "out_of_scope", body
        assert (await _message(hub, convs["theirs"], theirs))["status"] == "failed"
        status, body = await hub.call("GET", f"/api/v1/conversations/{convs['mine']}/messages",
                                      ADMIN_TOKEN)
        inbound = next(m["id"] for m in body["messages"] if m["direction"] == "in")
        for cid, mid in ((convs["mine"], theirs), (convs["mine"], inbound),
                         (convs["mine"], "0.ffffffff"), (convs["mine"], "not-an-id"),
                         ("0.ffffffff", mine)):
            status, body = await hub.post(_retry_path(cid, mid), AGENT_TOKEN)
            assert status == 404, (cid, mid, body)
        r = await client.post(_retry_path(convs["mine"], mine))
        assert r.status == 401

        # Two retries at once: one queues it, the other is told it is no longer failed.
        answers = await asyncio.gather(hub.post(_retry_path(convs["mine"], mine), AGENT_TOKEN),
                                       hub.post(_retry_path(convs["mine"], mine), AGENT_TOKEN))
        assert sorted(s for s, _ in answers) == [202, 409], answers
        queued = next(b for s, b in answers if s == 202)
        assert queued["message"]["id"] == mine and "error" not in queued["message"]
        refused = next(b for s, b in answers if s == 409)
        assert refused["error"]["code"] == "not_retryable"
        sent = await _in_state(hub, convs["mine"], mine, "sent")
        assert "error" not in sent and sent["provider_message_id"] == "op-1"
        await asyncio.sleep(0.3)
        assert [m["reply_id"] for m in operator.received] == [mine]
        status, body = await hub.post(_retry_path(convs["mine"], mine), AGENT_TOKEN)
        assert status == 409 and "sent" in body["error"]["message"]

        # Supervisors retry anywhere; the dead-letter entry goes with it.
        status, body = await hub.post(_retry_path(convs["theirs"], theirs), SUPERVISOR_TOKEN)
        assert status == 202, body
        await _in_state(hub, convs["theirs"], theirs, "sent")
        assert (await hub.admin_get("/api/v1/dlq"))["entries"] == []


async def test_a_receipt_that_says_failed_can_be_retried(make_config: Any, redis: Any) -> None:
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url, extra=config("pools"))) as client:
        hub = WorkflowHub(client, redis)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        mid = await _reply(hub, cid, "Ya va en camino")
        await _in_state(hub, cid, mid, "sent")
        # Not failed yet: 409 while sent.
        status, _ = await hub.post(_retry_path(cid, mid), AGENT_TOKEN)
        assert status == 409
        body = json.dumps({"id": "op-1", "status": "failed", "error": "handset off"}).encode()
        r = await client.post("/webhooks/api/shop/status", data=body, headers={
            "X-Inboxhub-Signature": sign(body), "Content-Type": "application/json"})
        assert r.status == 200, await r.text()
        await _in_state(hub, cid, mid, "failed")
        status, answer = await hub.post(_retry_path(cid, mid), AGENT_TOKEN)
        assert status == 202, answer
        sent = await _in_state(hub, cid, mid, "sent")
        assert sent["provider_message_id"] == "op-2"
        assert [m["reply_id"] for m in operator.received] == [mid, mid]
