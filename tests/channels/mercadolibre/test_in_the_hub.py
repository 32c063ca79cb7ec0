"""Mercado Libre as an operator runs it: configured in ``[[channels]]``, tokens loaded through
the admin API, a notification POSTed to ``/webhooks/mercadolibre/meli-br`` stored by the hub's
fetch worker with the market hints, and the agent's reply sent to the country agent. (The
channel type is registered for the test the way ``channels/registry.py`` will list it.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels import registry
from hub.config import LoadedConfig
from tests.channels.mercadolibre.provider import APP, BUYER, CLIENT_SECRET, MercadoLibreFake
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

PACK = "2000000089077943"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MercadoLibreFake]:
    monkeypatch.setitem(registry.BUILTIN, "mercadolibre",
                        "channels.mercadolibre.adapter:MercadoLibreChannel")
    monkeypatch.setenv("MELI_CLIENT_SECRET", CLIENT_SECRET)
    async with MercadoLibreFake() as running:
        yield running


def channel_toml(fake: MercadoLibreFake) -> str:
    return f"""
[[channels]]
name = "meli-br"
type = "mercadolibre"
[channels.settings]
api_base_url = "{fake.url}"
seller_id = "{fake.seller}"
client_id = "{APP}"
client_secret = "env:MELI_CLIENT_SECRET"
site_id = "MLB"
timeout_seconds = 5
poll_interval_seconds = 3600
"""


async def test_the_hub_runs_the_mercadolibre_channel_both_ways(
        make_config: Any, fake: MercadoLibreFake) -> None:
    loaded: LoadedConfig = make_config(extra=channel_toml(fake))
    message = fake.buyer_message(PACK, 1, "Olá, cadê meu pedido?")
    async with running_hub(loaded) as client:
        access, refresh = fake.grant()
        resp = await client.put("/api/v1/channels/meli-br/auth", data=json.dumps(
            {"access_token": access, "refresh_token": refresh, "expires_in": 21600}),
            headers=auth(ADMIN_TOKEN))
        assert resp.status == 200, await resp.text()
        answer = await client.post("/webhooks/mercadolibre/meli-br",
                                   data=fake.notification(message["id"]),
                                   headers={"Content-Type": "application/json"})
        assert answer.status == 200, await answer.text()

        async def find() -> dict[str, Any] | None:
            resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            for c in (await resp.json())["conversations"]:
                if c["thread_id"] == PACK and c.get("label"):  # stored and routed
                    return dict(c)
            return None
        conversation = await eventually(find)
        found = await client.get(f"/api/v1/conversations/{conversation['id']}",
                                 headers=auth(ADMIN_TOKEN))
        detail = await found.json()
        [stored] = detail["messages"]
        assert stored["text"] == "Olá, cadê meu pedido?"
        assert stored["sender_handle"] == BUYER
        shown = detail["conversation"]
        assert (shown["market"], shown["language"], shown["label"], shown["contact_name"]) \
            == ("BR", "pt", "mercadolibre", "COMPRADOR_ANA"), shown

        refused = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                    json={"text": "Obrigado 😀"}, headers=auth(ADMIN_TOKEN))
        assert refused.status == 422 and "U+1F600" in await refused.text()
        reply = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                  json={"text": "Já foi enviado!"}, headers=auth(ADMIN_TOKEN))
        assert reply.status == 202, await reply.text()

        async def sent() -> list[dict[str, Any]]:
            return fake.sent
        [out] = await eventually(sent)
        assert out["to"] == {"user_id": "3037675074"} and out["text"] == "Já foi enviado!"
    assert fake.marked_read == []


async def test_an_agent_sees_the_packs_reasons_and_writes_first_with_one(
        make_config: Any, fake: MercadoLibreFake) -> None:
    """The conversation's templates are the pack's open action-guide reasons, read when the
    agent opens it; a reason goes out through the option POST."""
    loaded: LoadedConfig = make_config(extra=channel_toml(fake))
    message = fake.buyer_message(PACK, 1, "Olá")
    fake.open_guide(PACK)
    async with running_hub(loaded) as client:
        access, refresh = fake.grant()
        await client.put("/api/v1/channels/meli-br/auth", data=json.dumps(
            {"access_token": access, "refresh_token": refresh, "expires_in": 21600}),
            headers=auth(ADMIN_TOKEN))
        await client.post("/webhooks/mercadolibre/meli-br",
                          data=fake.notification(message["id"]),
                          headers={"Content-Type": "application/json"})

        async def find() -> str | None:
            resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            return next((c["id"] for c in (await resp.json())["conversations"]
                         if c["thread_id"] == PACK), None)
        cid = await eventually(find)
        detail = await (await client.get(f"/api/v1/conversations/{cid}",
                                         headers=auth(ADMIN_TOKEN))).json()
        assert [(t["name"], t.get("parameters", [])) for t in detail["templates"]] == [
            ("REQUEST_VARIANTS", []), ("REQUEST_BILLING_INFO", []),
            ("SEND_INVOICE_LINK", ["text"]), ("OTHER", ["text"])]
        reply = await client.post(f"/api/v1/conversations/{cid}/replies", json={
            "template": {"name": "SEND_INVOICE_LINK", "parameters": ["Segue a nota fiscal."]}},
            headers=auth(ADMIN_TOKEN))
        assert reply.status == 202, await reply.text()

        async def sent() -> list[dict[str, Any]]:
            return fake.reasons_sent
        [out] = await eventually(sent)
        assert out == {"option_id": "SEND_INVOICE_LINK", "text": "Segue a nota fiscal.",
                       "pack": PACK}
        # The guide went unreachable: the conversation still opens, with no reasons listed.
        fake.latency_seconds = 5
        slow = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
        assert slow.status == 200 and (await slow.json())["templates"] == []
