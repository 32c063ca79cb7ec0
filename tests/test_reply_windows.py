"""Reply windows and templates through the API (contract v2 §7).

``GET /api/v1/conversations/{id}`` says what a reply may be (``reply_window``) from the same
computation the send check uses; ``POST .../replies`` refuses free text outside the window with
a 422 naming the template path (and the tag that would open an extended window), accepts a
tagged reply inside the extended window and an approved template at any time, and the template
reaches the operator's endpoint. The buyer's last message is aged by rewriting
``last_inbound_at`` on the stored conversation: the rule under test is the clock, not ingest.
"""

from __future__ import annotations

import time
from typing import Any

from storage.store import Store
from tests.conftest import ADMIN_TOKEN
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args

DAY = 86400.0
TEMPLATES = """
extended_windows = [{ seconds = 604800, tag = "HUMAN_AGENT" }]
[[channels.settings.templates]]
name = "order_update"
language = "es"
parameters = ["nombre", "pedido"]
body = "Hola {{1}}, su pedido {{2}} salió hoy."
"""


async def _conversation(client: Any) -> str:
    r = await client.post("/webhooks/api/shop", **signed_post_args(
        {"id": "m-1", "sender": "ana", "text": "¿Dónde está mi pedido?"}))
    assert r.status == 200, await r.text()

    async def listed() -> str | None:
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        convs = (await r.json())["conversations"]
        return convs[0]["id"] if convs else None

    return str(await eventually(listed))


async def _age(store: Store, conversation_id: str, seconds: float) -> None:
    k = store.keys_for(conversation_id)
    assert k is not None
    await store.redis.hset(k.conversation(conversation_id), "last_inbound_at",
                           repr(time.time() - seconds))


async def _window(client: Any, cid: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
    assert r.status == 200
    body = await r.json()
    assert {"conversation", "messages", "next_cursor"} <= body.keys()  # existing fields kept
    return body["reply_window"]  # type: ignore[no-any-return]


async def _reply(client: Any, cid: str, **body: Any) -> tuple[int, dict[str, Any]]:
    r = await client.post(f"/api/v1/conversations/{cid}/replies", json=body,
                          headers=auth(ADMIN_TOKEN))
    return r.status, await r.json()


async def test_window_template_and_tag_through_the_api(make_config: Any, store: Store) -> None:
    async with OperatorEndpoint() as operator:
        loaded = make_config(outbound_url=operator.url, channel_extra=TEMPLATES,
                             overrides={"channel": {"reply_window_seconds": DAY}})
        async with running_hub(loaded) as client:
            cid = await _conversation(client)
            window = await _window(client, cid)
            assert window["open"] and not window["template_required"]
            assert window["templates"] is True and window["extended"] == []
            assert abs(window["closes_at"] - (time.time() + DAY)) < 60

            await _age(store, cid, 2 * DAY)  # past 24 h, inside the 7-day HUMAN_AGENT window
            window = await _window(client, cid)
            assert not window["open"] and not window["template_required"]
            assert [w["tag"] for w in window["extended"]] == ["HUMAN_AGENT"]
            status, body = await _reply(client, cid, text="Lo reviso ahora")
            assert status == 422 and body["error"]["code"] == "reply_rejected"
            message = body["error"]["message"]
            assert "closed at" in message and "HUMAN_AGENT" in message
            assert f"POST /api/v1/conversations/{cid}/replies" in message
            assert '"template"' in message
            status, _ = await _reply(client, cid, text="Lo reviso ahora", tag="HUMAN_AGENT")
            assert status == 202

            async def tagged() -> list[str]:
                return [m["tag"] for m in operator.received if m.get("tag")]

            assert await eventually(tagged) == ["HUMAN_AGENT"]  # sent before it is aged on

            await _age(store, cid, 8 * DAY)  # every window closed: only a template
            window = await _window(client, cid)
            assert not window["open"] and window["template_required"]
            assert window["extended"] == []
            status, body = await _reply(client, cid, text="Hola", tag="HUMAN_AGENT")
            assert status == 422 and "HUMAN_AGENT window of 7 days" in body["error"]["message"]
            status, body = await _reply(client, cid, template={
                "name": "order_update", "language": "es", "parameters": ["Ana"]})
            assert status == 422 and "takes 2 parameter(s)" in body["error"]["message"]
            status, body = await _reply(client, cid, template={
                "name": "order_update", "language": "pt_BR", "parameters": ["Ana", "ZX-1"]})
            assert status == 422 and "language" in body["error"]["message"]
            status, body = await _reply(client, cid, template={
                "name": "order_update", "language": "es", "parameters": ["Ana", "ZX-1"]})
            assert status == 202, body
            # The conversation shows what went out: the approved body with its parameters.
            assert body["message"]["text"] == "Hola Ana, su pedido ZX-1 salió hoy."

            async def delivered() -> list[dict[str, Any]]:
                return [m for m in operator.received if m.get("template")]

            [sent] = await eventually(delivered)
            assert sent["template"] == {"name": "order_update", "language": "es",
                                        "parameters": ["Ana", "ZX-1"]}


async def test_channel_without_window_or_templates(make_config: Any, store: Store) -> None:
    async with running_hub(make_config()) as client:
        cid = await _conversation(client)
        await _age(store, cid, 365 * DAY)
        assert await _window(client, cid) == {"open": True, "closes_at": None,
                                              "template_required": False, "templates": False,
                                              "extended": []}
        status, body = await _reply(client, cid, template={"name": "x", "parameters": []})
        assert status == 422 and "takes no templates" in body["error"]["message"]
        status, body = await _reply(client, cid, text="   ")
        assert status == 422 and "empty" in body["error"]["message"]
        status, body = await _reply(client, cid, text="Hola", tag="HUMAN_AGENT")
        assert status == 422 and "takes no reply tag" in body["error"]["message"]
        status, _ = await _reply(client, cid, text="Un año después, sigue abierta")
        assert status == 202


async def test_window_closes_between_queueing_and_sending(make_config: Any,
                                                          store: Store) -> None:
    """The send re-checks at send time: a reply queued inside the window that is sent after
    it closed is dead-lettered with the reason, never silently undelivered."""
    async with OperatorEndpoint() as operator:
        operator.down = True
        loaded = make_config(outbound_url=operator.url,
                             overrides={"channel": {"reply_window_seconds": DAY},
                                        "outbox": {"max_attempts": 20}})
        async with running_hub(loaded) as client:
            cid = await _conversation(client)
            await _age(store, cid, DAY - 5)
            status, body = await _reply(client, cid, text="Casi a tiempo")
            assert status == 202

            async def tried() -> bool:  # the first attempt met the endpoint down
                view = await store.get_message(body["message"]["id"])
                return view is not None and view.attempts >= 1 and view.error is not None

            await eventually(tried)
            await _age(store, cid, DAY + 60)
            operator.down = False

            async def failed() -> dict[str, Any] | None:
                view = await store.get_message(body["message"]["id"])
                return view if view is not None and view.status == "failed" else None

            view = await eventually(failed, timeout=20)
            assert view.error is not None and "reply window" in view.error
            assert not operator.received
