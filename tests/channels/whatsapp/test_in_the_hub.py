"""The WhatsApp channel as an operator runs it: configured in ``[[channels]]``, Meta's signed
webhooks stored and routed, the inbox told about the window before the agent types, replies
and templates sent by the hub's sender to the local Graph API, receipts and media applied by
the hub's own workers. (The channel type is registered for the test the way
``channels/registry.py`` will list it.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from channels import registry
from hub.config import LoadedConfig
from tests.channels.whatsapp import fixtures as f
from tests.channels.whatsapp.graph import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    FakeGraph,
    meta_json,
    meta_signature,
)
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

URL = "/webhooks/whatsapp/wa-mx"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4


def channel_toml(base_url: str) -> str:
    return f"""
[[channels]]
name = "wa-mx"
type = "whatsapp"
[channels.settings]
access_token = "env:WA_ACCESS_TOKEN"
app_secret = "env:WA_APP_SECRET"
verify_token = "env:WA_VERIFY_TOKEN"
phone_number_id = "{PHONE_NUMBER_ID}"
api_base_url = "{base_url}"
timeout_seconds = 5

[[channels.settings.templates]]
name = "order_update"
language = "es"
parameters = ["nombre", "pedido"]
body = "Hola {{{{1}}}}, su pedido {{{{2}}}} salió hoy."

[[channels.settings.templates]]
name = "order_update"
language = "pt_BR"
parameters = ["nome", "pedido"]
body = "Olá {{{{1}}}}, seu pedido {{{{2}}}} saiu hoje."
"""


@pytest.fixture
async def graph(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeGraph]:
    monkeypatch.setitem(registry.BUILTIN, "whatsapp", "channels.whatsapp.adapter:WhatsAppChannel")
    monkeypatch.setenv("WA_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("WA_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WA_VERIFY_TOKEN", VERIFY_TOKEN)
    fake = FakeGraph()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


async def post(client: TestClient[Any, Any], payload: Any) -> int:
    body = meta_json(payload)
    resp = await client.post(URL, data=body, headers={
        "X-Hub-Signature-256": meta_signature(body), "Content-Type": "application/json"})
    return resp.status


async def conversation_of(client: TestClient[Any, Any], wa_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        for c in (await resp.json())["conversations"]:
            if c["thread_id"] == wa_id:
                return dict(c)
        return None
    found: dict[str, Any] = await eventually(find)
    return found


async def detail(client: TestClient[Any, Any], conversation_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/conversations/{conversation_id}",
                            headers=auth(ADMIN_TOKEN))
    assert resp.status == 200
    return dict(await resp.json())


async def test_the_hub_runs_the_whatsapp_channel_both_ways(
        make_config: Any, graph: FakeGraph) -> None:
    loaded: LoadedConfig = make_config(extra=channel_toml(graph.base_url))
    async with running_hub(loaded) as client:
        challenge = await client.get(URL, params={
            "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"})
        assert (challenge.status, await challenge.text()) == (200, "42")
        unsigned = await client.post(URL, data=meta_json(f.text(f.BUYER_MX, "wamid.x", "x")))
        assert unsigned.status == 401

        assert await post(client, f.text(f.BUYER_MX, "wamid.hub-1", "¿Dónde está mi pedido?",
                                          "Ana Pérez")) == 200
        conversation = await conversation_of(client, f.BUYER_MX)
        window = (await detail(client, conversation["id"]))["reply_window"]
        assert window["open"] and not window["template_required"] and window["templates"]

        reply = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                  json={"text": "Sale hoy 🚚"}, headers=auth(ADMIN_TOKEN))
        assert reply.status == 202, await reply.text()
        await eventually(lambda: _async(graph.sent()))
        assert graph.bodies[0]["text"]["body"] == "Sale hoy 🚚"
        assert graph.bodies[0]["context"] == {"message_id": "wamid.hub-1"}
        outbound = (await reply.json())["message"]["id"]

        async def provider_id() -> str | None:
            for m in (await detail(client, conversation["id"]))["messages"]:
                if m["id"] == outbound and m.get("provider_message_id"):
                    return str(m["provider_message_id"])
            return None
        wamid = await eventually(provider_id)
        assert await post(client, f.statuses(f.status(wamid, "read"),
                                             f.status(wamid, "delivered"))) == 200

        async def state() -> str | None:
            for m in (await detail(client, conversation["id"]))["messages"]:
                if m["id"] == outbound and m["status"] == "read":
                    return "read"
            return None
        assert await eventually(state) == "read"


async def test_the_inbox_shows_the_closed_window_and_a_template_goes(
        make_config: Any, graph: FakeGraph) -> None:
    loaded: LoadedConfig = make_config(extra=channel_toml(graph.base_url))
    async with running_hub(loaded) as client:
        wrote = str(int(time.time()) - 26 * 3600)  # Meta retried this one for two days
        assert await post(client, f.text(f.BUYER_BR, "wamid.old-1", "Oi, ainda tem?",
                                          timestamp=wrote)) == 200
        conversation = await conversation_of(client, f.BUYER_BR)
        window = (await detail(client, conversation["id"]))["reply_window"]
        assert (window["open"], window["template_required"]) == (False, True)

        refused = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                    json={"text": "Sim!"}, headers=auth(ADMIN_TOKEN))
        assert refused.status == 422
        error = (await refused.json())["error"]["message"]
        assert "closed at" in error and "order_update (es, 2 parameters)" in error
        assert graph.sent() == []

        # the inbox lists the templates in the buyer's language (routing found Portuguese)
        async def classified() -> dict[str, Any] | None:
            found = await detail(client, conversation["id"])
            return found if found["conversation"].get("language") == "pt" else None

        shown = await eventually(classified)
        assert [(t["name"], t["language"], t["parameters"]) for t in shown["templates"]] == [
            ("order_update", "pt_BR", ["nome", "pedido"])]
        # ...and a template named without a language goes in that one
        sent = await client.post(
            f"/api/v1/conversations/{conversation['id']}/replies",
            json={"text": "", "template": {"name": "order_update",
                                           "parameters": ["João", "BR-7"]}},
            headers=auth(ADMIN_TOKEN))
        assert sent.status == 202, await sent.text()
        assert (await sent.json())["message"]["text"] == "Olá João, seu pedido BR-7 saiu hoje."
        await eventually(lambda: _async(graph.sent()))
        assert graph.bodies[0]["template"]["language"] == {"code": "pt_BR"}
        assert graph.bodies[0]["template"]["name"] == "order_update"
        assert graph.bodies[0]["template"]["components"][0]["parameters"][1] == {
            "type": "text", "text": "BR-7"}


async def test_media_is_fetched_by_the_hubs_worker(make_config: Any, graph: FakeGraph) -> None:
    loaded: LoadedConfig = make_config(extra=channel_toml(graph.base_url))
    graph.publish_media("3141592", JPEG, "image/jpeg")
    async with running_hub(loaded) as client:
        assert await post(client, f.image(f.BUYER_ES, "wamid.pic-1", "3141592",
                                          caption="Así llegó")) == 200
        conversation = await conversation_of(client, f.BUYER_ES)

        async def files() -> list[dict[str, Any]] | None:
            messages = (await detail(client, conversation["id"]))["messages"]
            found = [a for m in messages for a in m.get("attachments", [])]
            return found or None
        (attachment,) = await eventually(files)
        assert attachment["content_type"] == "image/jpeg"
        assert attachment["size"] == len(JPEG)
        texts = [m["text"] for m in (await detail(client, conversation["id"]))["messages"]]
        assert "Así llegó" in texts


async def _async(value: Any) -> Any:
    return value


BR_NUMBER = "106540352249999"


async def test_one_meta_app_two_numbers_one_callback_url(
        make_config: Any, graph: FakeGraph) -> None:
    """Meta posts every number of an app to the app's one callback URL: a Brazilian number's
    message that arrives at the Mexican instance's URL is stored in the Brazilian instance's
    conversation (its media fetched by it too), and a number no instance serves is kept in the
    quarantine, never dropped after the 200."""
    brazil = channel_toml(graph.base_url).split("[[channels.settings.templates]]")[0] \
        .replace('name = "wa-mx"', 'name = "wa-br"') \
        .replace(f'phone_number_id = "{PHONE_NUMBER_ID}"', f'phone_number_id = "{BR_NUMBER}"')
    loaded: LoadedConfig = make_config(extra=channel_toml(graph.base_url) + brazil)
    graph.publish_media("2718281", JPEG, "image/jpeg")
    async with running_hub(loaded) as client:
        for_brazil = f.text(f.BUYER_BR, "wamid.br-1", "Oi, tem em azul?")
        for_brazil["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = BR_NUMBER
        assert await post(client, for_brazil) == 200
        conversation = await conversation_of(client, f.BUYER_BR)
        assert conversation["channel_instance"] == "wa-br"

        picture = f.image(f.BUYER_BR, "wamid.br-2", "2718281", caption="assim")
        picture["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = BR_NUMBER
        assert await post(client, picture) == 200

        async def with_file() -> list[dict[str, Any]]:
            found = (await detail(client, conversation["id"]))["messages"]
            return [m for m in found if m.get("attachments")]

        [stored] = await eventually(with_file)
        assert stored["channel_instance"] == "wa-br"

        nobody = f.text(f.BUYER_ES, "wamid.es-1", "Hola")
        nobody["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999000111"
        assert await post(client, nobody) == 200
        resp = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
        [kept] = (await resp.json())["entries"]
        assert "999000111" in kept["error"]
