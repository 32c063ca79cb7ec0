"""Canned replies: supervisors manage them, agents list them, and a conversation offers them in
its language (falling back to the default language per name) with the variables filled."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from storage.canned import CannedReplies, UnknownVariable, check_variables, fill
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.workflow_hub import BRUNO_TOKEN, SUPERVISOR_TOKEN, WorkflowHub, config

BASE = "/api/v1/canned-replies"


async def _send(hub: WorkflowHub, method: str, path: str, token: str,
                payload: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if payload is None else json.dumps(payload))
    r = await hub.client.request(method, path, data=data, headers={
        **auth(token), "Content-Type": "application/json"})
    return r.status, await r.json()


async def test_supervisors_manage_agents_pick(make_config: Any, redis: Redis) -> None:
    async with running_hub(make_config(extra=config())) as client:
        hub = WorkflowHub(client, redis)
        greeting = {"name": "greeting", "language": "es", "shortcut": "hola",
                    "text": "Hola {buyer_name}, soy {agent_name}. Tu pedido {order_id} "
                            "sale hoy; seguimiento: {tracking_number}."}
        status, es = await _send(hub, "POST", BASE, SUPERVISOR_TOKEN, greeting)
        assert status == 201, es
        assert es["updated_by"] == "sam" and es["language"] == "es"
        for payload in ({"name": "greeting", "language": "en", "shortcut": "hi",
                         "text": "Hi {buyer_name}, this is {agent_name}."},
                        {"name": "thanks", "language": "en", "text": "Thanks! 🙏 — {agent_name}"},
                        {"name": "goodbye", "language": "pt", "text": "Tchau, {buyer_name}!"}):
            status, body = await _send(hub, "POST", BASE, ADMIN_TOKEN, payload)
            assert status == 201, body

        # agents may list but not manage
        for token in (AGENT_TOKEN, BRUNO_TOKEN):
            status, body = await _send(hub, "POST", BASE, token, greeting)
            assert status == 403, body
            status, body = await _send(hub, "PUT", f"{BASE}/{es['id']}", token, greeting)
            assert status == 403
            status, body = await _send(hub, "DELETE", f"{BASE}/{es['id']}", token)
            assert status == 403
        status, body = await hub.call("GET", BASE, AGENT_TOKEN)
        assert status == 200
        assert [(c["name"], c["language"]) for c in body["replies"]] == [
            ("goodbye", "pt"), ("greeting", "en"), ("greeting", "es"), ("thanks", "en")]
        assert body["variables"] == ["buyer_name", "order_id", "tracking_number", "agent_name"]
        status, body = await hub.call("GET", BASE + "?language=en", AGENT_TOKEN)
        assert {c["name"] for c in body["replies"]} == {"greeting", "thanks"}
        status, body = await hub.call("GET", BASE + "?language=english", AGENT_TOKEN)
        assert status == 400

        # bad input: nothing stored
        bad: list[Any] = [
            {**greeting, "text": "Hola {nombre}"}, {**greeting, "text": "{order_id} {Order}"},
            {**greeting, "language": "spanish"}, {**greeting, "language": "ES"},
            {**greeting, "text": "x" * 10_001}, {**greeting, "text": "   "},
            {**greeting, "name": ""}, {**greeting, "shortcut": "has space"},
            {**greeting, "extra": 1}, {"name": "x", "language": "es"}, [greeting]]
        for payload in bad:
            status, body = await _send(hub, "POST", BASE, SUPERVISOR_TOKEN, payload)
            assert status == 400, (payload, body)
        status, body = await _send(hub, "POST", BASE, SUPERVISOR_TOKEN,
                                   {**greeting, "text": "Hola {nombre}"})
        assert body["error"]["code"] == "unknown_variable"
        assert "{nombre}" in body["error"]["message"]
        for raw in (b"{", b"", b"\xff"):
            status, body = await _send(hub, "POST", BASE, SUPERVISOR_TOKEN, raw=raw)
            assert status == 400
        status, body = await _send(hub, "POST", BASE, SUPERVISOR_TOKEN,
                                   {**greeting, "name": "other"})
        assert status == 409 and body["error"]["code"] == "shortcut_taken"
        assert len((await hub.admin_get(BASE))["replies"]) == 4

        # replace and delete
        status, body = await _send(hub, "PUT", f"{BASE}/{es['id']}", SUPERVISOR_TOKEN,
                                   {**greeting, "text": "¡Hola {buyer_name}! Soy {agent_name}. "
                                                        "Pedido {order_id}, "
                                                        "guía {tracking_number}."})
        assert status == 200 and body["id"] == es["id"], body
        status, body = await _send(hub, "PUT", f"{BASE}/{es['id']}", SUPERVISOR_TOKEN,
                                   {**greeting, "text": "{bad}"})
        assert status == 400
        for missing in ("0.00ff", "nope", "x" * 100):
            status, body = await _send(hub, "PUT", f"{BASE}/{missing}", SUPERVISOR_TOKEN,
                                       greeting)
            assert status == 404, body
            status, body = await _send(hub, "DELETE", f"{BASE}/{missing}", SUPERVISOR_TOKEN)
            assert status == 404
        goodbye = next(c for c in (await hub.admin_get(BASE))["replies"]
                       if c["name"] == "goodbye")
        status, body = await _send(hub, "DELETE", f"{BASE}/{goodbye['id']}", SUPERVISOR_TOKEN)
        assert status == 200 and body == {"deleted": True}

        # a Spanish conversation: its own text where there is one, English where not
        await hub.online("ana.agent")
        await hub.online("bruno")
        await client.post("/webhooks/api/shop", **_signed({
            "id": "c-1", "sender": "lucia", "name": "Lucía Ñúñez", "order_id": "ML-778899",
            "text": "Hola, ¿dónde está mi pedido? Lo compré hace dos semanas",
            "language": "es"}))
        mine = await _routed(hub, "lucia")
        status, body = await hub.call("GET", f"/api/v1/conversations/{mine}/canned-replies",
                                      AGENT_TOKEN)
        assert status == 200, body
        assert body["language"] == "es" and body["fallback"] == "en"
        got = {r["name"]: r for r in body["replies"]}
        assert set(got) == {"greeting", "thanks"}
        assert got["greeting"]["language"] == "es"
        assert got["greeting"]["text"] == ("¡Hola Lucía Ñúñez! Soy Ana Souza. Pedido ML-778899, "
                                           "guía [[tracking_number]].")
        assert got["greeting"]["missing"] == ["tracking_number"]
        assert got["thanks"]["language"] == "en"
        assert got["thanks"]["text"] == "Thanks! 🙏 — Ana Souza" and got["thanks"]["missing"] == []

        # a supervisor's name is their token's; a buyer with no name leaves a marker
        status, body = await hub.call("GET", f"/api/v1/conversations/{mine}/canned-replies",
                                      SUPERVISOR_TOKEN)
        assert {r["name"]: r["text"] for r in body["replies"]}["thanks"] == "Thanks! 🙏 — sam"
        await client.post("/webhooks/api/shop", **_signed({
            "id": "c-2", "sender": "anon", "text": "Olá, cadê meu pedido? Já faz duas semanas",
            "language": "pt"}))
        theirs = await _routed(hub, "anon")
        status, body = await hub.call("GET", f"/api/v1/conversations/{theirs}/canned-replies",
                                      BRUNO_TOKEN)
        got = {r["name"]: r for r in body["replies"]}
        assert got["greeting"]["language"] == "en"
        assert got["greeting"]["text"] == "Hi [[buyer_name]], this is bruno."
        assert got["greeting"]["missing"] == ["buyer_name"]
        # scope: out of Ana's scope it is 404, like an unknown id
        status, body = await hub.call("GET", f"/api/v1/conversations/{theirs}/canned-replies",
                                      AGENT_TOKEN)
        assert status == 404 and body["error"]["message"] == "no such conversation"
        status, body = await hub.call(
            "GET", "/api/v1/conversations/0.00ff00ff/canned-replies", ADMIN_TOKEN)
        assert status == 404


def _signed(payload: dict[str, Any]) -> dict[str, Any]:
    return signed_post_args(payload)


async def _routed(hub: WorkflowHub, thread: str) -> str:
    async def find() -> str | None:
        for c in (await hub.admin_get("/api/v1/conversations?limit=200"))["conversations"]:
            if c["thread_id"] == thread and c["status"] == "assigned":
                return str(c["id"])
        return None

    return str(await eventually(find))


def test_variables_are_checked_and_filled() -> None:
    check_variables("Hi {buyer_name} {order_id} {tracking_number} {agent_name} {} { x }")
    for text in ("{buyer}", "{Buyer_Name}", "{order_id}{x-y}", "{agent_name:>10}"):
        with pytest.raises(UnknownVariable):
            check_variables(text)
    text, missing = fill("{buyer_name}/{buyer_name}/{order_id}/{agent_name}",
                         {"buyer_name": None, "order_id": "", "agent_name": "Zoë"})
    assert text == "[[buyer_name]]/[[buyer_name]]/[[order_id]]/Zoë"
    assert missing == ["buyer_name", "order_id"]
    # a value is inserted as it is: it is never read as a template itself
    text, missing = fill("{buyer_name} {order_id}", {"buyer_name": "{order_id}",
                                                      "order_id": "42"})
    assert text == "{order_id} 42" and missing == []


async def test_store_keeps_shortcuts_unique_per_language(redis: Redis) -> None:
    replies = CannedReplies(redis)
    first = await replies.save(name="a", language="es", text="uno", shortcut="s", by="sam")
    await replies.save(name="a", language="pt", text="um", shortcut="s", by="sam")
    again = await replies.save(name="b", language="es", text="dos", shortcut="s", by="sam",
                               reply_id=first.id)
    assert again.id == first.id and (await replies.get(first.id)) == again
    assert len(await replies.all()) == 2
    assert await replies.delete(first.id) and not await replies.delete(first.id)
