"""Starting a conversation (``POST /api/v1/conversations``) against the running hub.

Three API-channel instances stand for the three answers the contract gives: ``shop`` has a
24 h reply window and an approved template (it writes first only with the template),
``direct`` has no window (free text may go first) and ``closed`` has a window and no templates
(it cannot start anything). The operator's endpoint shows what was sent; the buyer's answer
must land in the started conversation, which stays with the agent who started it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub.outbound_api import ADDRESSING, BadHandle
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, eventually, running_hub
from tests.workflow_hub import BRUNO_TOKEN, SUPERVISOR_TOKEN, WorkflowHub, config

DAY = 86400.0
TEMPLATES = """
[[channels.settings.templates]]
name = "order_update"
language = "es"
parameters = ["nombre", "pedido"]
body = "Hola {{1}}, su pedido {{2}} salió hoy."
"""


def instances(url: str) -> str:
    return f"""
[[channels]]
name = "direct"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "{url}"
timeout_seconds = 2

[[channels]]
name = "closed"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "{url}"
timeout_seconds = 2
reply_window_seconds = 86400
"""


TEMPLATE = {"name": "order_update", "language": "es", "parameters": ["Ana", "ZX-1"]}


def hub_config(make_config: Any, url: str) -> Any:
    return make_config(outbound_url=url, channel_extra=TEMPLATES,
                       overrides={"channel": {"reply_window_seconds": DAY}},
                       extra=config("pools") + instances(url))


@contextlib.asynccontextmanager
async def outbound_hub(make_config: Any, redis: Any,
                       ) -> AsyncIterator[tuple[WorkflowHub, OperatorEndpoint]]:
    """The running hub with the three instances, and the operator's endpoint behind them."""
    async with OperatorEndpoint() as operator, \
            running_hub(hub_config(make_config, operator.url)) as client:
        yield WorkflowHub(client, redis), operator


async def _start(hub: WorkflowHub, token: str, body: Any,
                 key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    r = await hub.client.post("/api/v1/conversations", json=body, headers=headers)
    return r.status, await r.json()


async def _sent(hub: WorkflowHub, cid: str, mid: str) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        status, body = await hub.call("GET", f"/api/v1/conversations/{cid}/messages",
                                      ADMIN_TOKEN)
        assert status == 200, body
        found = [m for m in body["messages"] if m["id"] == mid]
        return found[0] if found and found[0]["status"] == "sent" else None

    return dict(await eventually(settled))


async def test_template_start_is_sent_assigned_and_continued(make_config: Any,
                                                             redis: Any) -> None:
    async with outbound_hub(make_config, redis) as (hub, operator):
        # Free text cannot open a conversation on a channel with a reply window.
        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "shop", "recipient": "buyer-7", "text": "Hola"})
        assert status == 422 and body["error"]["code"] == "reply_rejected", body
        assert "cannot start a conversation with free text" in body["error"]["message"]
        assert "template" in body["error"]["message"]
        # A wrong template is refused with what is wrong, and nothing is made.
        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "shop", "recipient": "buyer-7",
            "template": {"name": "order_update", "parameters": ["Ana"]}})
        assert status == 422 and "takes 2 parameter(s)" in body["error"]["message"]
        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "shop", "recipient": "buyer-7",
            "template": {"name": "welcome", "parameters": []}})
        assert status == 422 and "not approved" in body["error"]["message"]
        assert (await hub.admin_get("/api/v1/conversations"))["conversations"] == []

        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "shop", "recipient": "buyer-7", "name": "Rosa", "language": "es",
            "market": "MX", "template": {"name": "order_update",
                                         "parameters": ["Rosa", "ZX-1"]}},
            key="start-rosa-1")
        assert status == 202, body
        assert body["duplicate"] is False
        conv, message = body["conversation"], body["message"]
        cid, mid = conv["id"], message["id"]
        assert conv["channel_instance"] == "shop" and conv["thread_id"] == "buyer-7"
        assert conv["contact_handle"] == "buyer-7" and conv["contact_name"] == "Rosa"
        assert conv["status"] == "assigned" and conv["assignee"] == "ana.agent"
        assert conv["language"] == "es" and conv["market"] == "MX"
        assert conv["queue"] == "es"
        assert message["direction"] == "out" and message["author"] == "ana.agent"
        # The approved body, language picked from the conversation's (es).
        assert message["text"] == "Hola Rosa, su pedido ZX-1 salió hoy."

        sent = await _sent(hub, cid, mid)
        assert sent["provider_message_id"] == "op-1"
        [out] = operator.received
        assert out["recipient"] == "buyer-7" and out["thread"] == "buyer-7"
        assert out["template"] == {"name": "order_update", "language": "es",
                                   "parameters": ["Rosa", "ZX-1"]}
        assert out["in_reply_to"] is None

        # The same key again: the first answer, nothing sent twice.
        status, again = await _start(hub, AGENT_TOKEN, {
            "channel": "shop", "recipient": "buyer-7", "template": TEMPLATE,
            "client_key": "start-rosa-1"})
        assert status == 200 and again["duplicate"] is True
        assert again["message"]["id"] == mid and again["conversation"]["id"] == cid
        # Without the key it is a second start to a buyer who has a conversation.
        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "shop", "recipient": "buyer-7", "template": TEMPLATE})
        assert status == 409 and body["error"]["code"] == "conversation_exists"
        assert cid in body["error"]["message"]
        await asyncio.sleep(0.2)
        assert len(operator.received) == 1

        # Scope: Ana owns it, Bruno does not see it, the supervisor does.
        assert (await hub.call("GET", f"/api/v1/conversations/{cid}", AGENT_TOKEN))[0] \
            == 200
        assert (await hub.call("GET", f"/api/v1/conversations/{cid}", BRUNO_TOKEN))[0] \
            == 404
        assert (await hub.call("GET", f"/api/v1/conversations/{cid}",
                               SUPERVISOR_TOKEN))[0] == 200
        state = await hub.state(cid)
        assert state["status"] == "assigned" and state["assignee"] == "ana.agent"
        status, explain = await hub.call("GET", f"/api/v1/conversations/{cid}/routing",
                                         ADMIN_TOKEN)
        assert any("started the conversation" in e["text"] for e in explain["log"]), explain

        # The buyer answers: the same conversation, still Ana's, window now open.
        await hub.write("buyer-7", "Gracias, ¿y el número de guía?")
        await hub.router_idle()
        conv = await hub.conv(cid)
        assert conv["message_count"] == 2 and conv["assignee"] == "ana.agent"
        assert conv["status"] == "assigned"
        listed = (await hub.admin_get("/api/v1/conversations"))["conversations"]
        assert [c["id"] for c in listed] == [cid]
        status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                      AGENT_TOKEN, json={"text": "Es MX-99"})
        assert status == 202, body


async def test_free_text_where_the_channel_initiates(make_config: Any, redis: Any) -> None:
    async with outbound_hub(make_config, redis) as (hub, operator):
        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "direct", "recipient": "  client-42 ", "text": "Su pedido salió"})
        assert status == 202, body
        conv = body["conversation"]
        assert conv["thread_id"] == "client-42" and conv["assignee"] == "ana.agent"
        await _sent(hub, conv["id"], body["message"]["id"])
        assert [m["text"] for m in operator.received] == ["Su pedido salió"]
        assert operator.received[0]["recipient"] == "client-42"


async def test_channel_that_cannot_initiate_and_unknown_channel(make_config: Any,
                                                               redis: Any) -> None:
    async with outbound_hub(make_config, redis) as (hub, operator):
        for body in ({"channel": "closed", "recipient": "b1", "text": "Hola"},
                     {"channel": "closed", "recipient": "b1", "template": TEMPLATE}):
            status, answer = await _start(hub, AGENT_TOKEN, body)
            assert status == 422 and answer["error"]["code"] == "cannot_start", answer
            assert "cannot start a conversation" in answer["error"]["message"]
        status, answer = await _start(hub, AGENT_TOKEN, {
            "channel": "nowhere", "recipient": "b1", "text": "Hola"})
        assert status == 422 and answer["error"]["code"] == "unknown_channel"
        status, answer = await _start(hub, AGENT_TOKEN, {
            "channel": "direct", "recipient": "b\x001", "text": "Hola"})
        assert status == 422 and answer["error"]["code"] == "invalid_recipient"
        status, answer = await _start(hub, AGENT_TOKEN, {
            "channel": "direct", "recipient": "b1", "text": "x" * 10_001})
        assert status == 422 and answer["error"]["code"] == "reply_rejected"
        assert (await hub.admin_get("/api/v1/conversations"))["conversations"] == []
        assert operator.received == []


async def test_roles_and_bad_input(make_config: Any, redis: Any) -> None:
    async with outbound_hub(make_config, redis) as (hub, operator):
        good = {"channel": "direct", "recipient": "b2", "text": "Hola"}
        r = await hub.client.post("/api/v1/conversations", json=good)
        assert r.status == 401
        bad: list[tuple[Any, str]] = [
            (b"{not json", "invalid_body"),
            (b"[]", "invalid_body"),
            ({**good, "recipient": 7}, "invalid_body"),
            ({**good, "surprise": 1}, "invalid_body"),
            ({**good, "text": "x" * 100_001}, "invalid_body"),
            ({"channel": "direct", "recipient": "b2"}, "invalid_body"),
            ({**good, "recipient": ""}, "invalid_body"),
            ({**good, "recipient": "r" * 257}, "invalid_body"),
            ({**good, "language": "xx"}, "invalid_body"),
            ({**good, "market": "ZZ"}, "invalid_body"),
            ({**good, "template": {"name": ""}}, "invalid_body"),
        ]
        for payload, code in bad:
            raw = payload if isinstance(payload, bytes) else None
            status, body = await hub.post("/api/v1/conversations", AGENT_TOKEN,
                                          None if raw else payload, raw=raw)
            assert status == 400 and body["error"]["code"] == code, (payload, body)
        status, body = await _start(hub, AGENT_TOKEN, good, key="bad key")
        assert status == 400 and body["error"]["code"] == "invalid_header"
        assert (await hub.admin_get("/api/v1/conversations"))["conversations"] == []

        # A supervisor or admin who is no routing agent: made and sent, left unassigned,
        # routed by the buyer's answer like any new conversation.
        for token, recipient in ((SUPERVISOR_TOKEN, "b3"), (ADMIN_TOKEN, "b4")):
            status, body = await _start(hub, token, {**good, "recipient": recipient})
            assert status == 202, body
            assert body["conversation"]["assignee"] is None
            assert body["conversation"]["status"] == "new"
            assert body["message"]["author"] in ("sam", "admin")
        await eventually(lambda: _count(operator, 2))


async def _count(operator: OperatorEndpoint, n: int) -> bool:
    return len(operator.received) == n


async def test_concurrent_starts_with_one_key_send_once(make_config: Any, redis: Any) -> None:
    async with outbound_hub(make_config, redis) as (hub, operator):
        body = {"channel": "shop", "recipient": "buyer-9", "template": TEMPLATE,
                "client_key": "same"}
        answers = await asyncio.gather(*(_start(hub, AGENT_TOKEN, body) for _ in range(4)))
        statuses = sorted(s for s, _ in answers)
        assert statuses == [200, 200, 200, 202], answers
        assert len({a["message"]["id"] for _, a in answers}) == 1
        assert len({a["conversation"]["id"] for _, a in answers}) == 1
        await eventually(lambda: _count(operator, 1))
        await asyncio.sleep(0.3)
        assert len(operator.received) == 1
        agent = await hub.admin_get("/api/v1/agents")
        ana = next(a for a in agent["agents"] if a["profile"]["id"] == "ana.agent")
        assert ana["state"]["conversations"] == [answers[0][1]["conversation"]["id"]]


@pytest.mark.parametrize(("channel_type", "raw", "handle"), [
    ("twilio", "+52 55 1234 5678", "+525512345678"),
    ("twilio", "whatsapp:+5511987654321", "whatsapp:+5511987654321"),
    ("whatsapp", "+55 11 98765-4321", "5511987654321"),
    ("whatsapp", "5511987654321", "5511987654321"),
    ("api", " buyer@example.com ", "buyer@example.com"),
])
def test_handles_each_channel_type_takes(channel_type: str, raw: str, handle: str) -> None:
    assert ADDRESSING[channel_type](raw) == handle


@pytest.mark.parametrize(("channel_type", "raw"), [
    ("twilio", "5512345678"), ("twilio", "+1 555"), ("twilio", "whatsapp:hello"),
    ("whatsapp", "+99 123"), ("whatsapp", "not a number"), ("api", "   "), ("api", "a\nb"),
])
def test_handles_each_channel_type_refuses(channel_type: str, raw: str) -> None:
    with pytest.raises(BadHandle):
        ADDRESSING[channel_type](raw)


async def test_agent_going_offline_hands_it_to_its_queue(make_config: Any, redis: Any) -> None:
    """The started conversation's routing state is a queue's (the rules chose es from its
    language): when Ana goes offline it waits there, and an eligible agent coming online gets
    it (only Ana serves es at its level here), as any conversation of hers would."""
    async with outbound_hub(make_config, redis) as (hub, _operator):
        status, body = await _start(hub, AGENT_TOKEN, {
            "channel": "direct", "recipient": "b5", "text": "Hola", "language": "es"})
        assert status == 202, body
        cid = body["conversation"]["id"]
        await hub.online("ana.agent")
        status, body = await hub.call("POST", "/api/v1/agents/ana.agent/status", ADMIN_TOKEN,
                                      json={"status": "offline"})
        assert status == 200, body
        state = await hub.state(cid)
        assert state["status"] == "waiting" and state["pool"].startswith("es")
        await eventually(lambda: _has(hub, cid, "queued"))
        await hub.online("ana.agent")

        async def taken() -> bool:
            conv = await hub.conv(cid)
            return conv["assignee"] == "ana.agent" and conv["status"] == "assigned"

        await eventually(taken)


async def _has(hub: WorkflowHub, cid: str, status: str) -> bool:
    return (await hub.conv(cid))["status"] == status
