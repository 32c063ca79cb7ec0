"""The Shopee channel as an operator runs it: configured in ``[[channels]]``, first tokens
loaded through the API, a signed code-10 push stored by the real hub and fetched by its fetch
worker (market BR / pt), the agent's reply sent signed to the local fake. (The channel type is
registered for the test the way ``channels/registry.py`` will list it.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from channels import registry
from hub.config import LoadedConfig
from tests.channels.shopee.provider import ShopeeFake
from tests.channels.shopee.test_shopee import BUYER, KEY, PARTNER_ID, SHOP_ID
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

URL = "/webhooks/shopee/shopee-br"


def channel_toml(base_url: str) -> str:
    return f"""
[[channels]]
name = "shopee-br"
type = "shopee"
[channels.settings]
api_base_url = "{base_url}"
partner_id = {PARTNER_ID}
partner_key = "env:SHOPEE_PARTNER_KEY"
shop_id = {SHOP_ID}
region = "BR"
timeout_seconds = 5
"""


async def test_the_hub_runs_the_shopee_channel_both_ways(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN, "shopee", "channels.shopee.adapter:ShopeeChannel")
    monkeypatch.setenv("SHOPEE_PARTNER_KEY", KEY)
    async with ShopeeFake(partner_id=PARTNER_ID, partner_key=KEY, shop_id=SHOP_ID) as fake:
        loaded: LoadedConfig = make_config(extra=channel_toml(fake.url))
        async with running_hub(loaded) as client:
            resp = await client.put("/api/v1/channels/shopee-br/auth", headers=auth(ADMIN_TOKEN),
                                    data=json.dumps({"access_token": "at-0",
                                                     "refresh_token": "rt-0",
                                                     "expire_in": 14400}).encode())
            assert resp.status == 200, await resp.text()
            fake.buyer_writes("9001", BUYER, "Olá, cadê meu pedido?", name="Ana")
            body = fake.push_body("9001", "000001")
            unsigned = await client.post(URL, data=body)
            assert unsigned.status == 401
            callback = str(client.make_url(URL))
            pushed = await client.post(URL, data=body, headers=fake.push_headers(callback, body))
            assert (pushed.status, await pushed.read()) == (200, b"")

            async def conversation() -> dict[str, Any] | None:
                r = await client.get("/api/v1/conversations?channel=shopee-br",
                                     headers=auth(ADMIN_TOKEN))
                found = (await r.json())["conversations"]
                # Routed: the router sets the label (a conversation is listed once stored).
                return dict(found[0]) if found and found[0].get("label") else None

            conv = await eventually(conversation, timeout=15)
            detail = await (await client.get(f"/api/v1/conversations/{conv['id']}",
                                             headers=auth(ADMIN_TOKEN))).json()
            text = json.dumps(detail, ensure_ascii=False)
            assert "Olá, cadê meu pedido?" in text
            assert '"market": "BR"' in text and '"language": "pt"' in text
            reply = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                      json={"text": "Sai hoje!"}, headers=auth(ADMIN_TOKEN))
            assert reply.status == 202, await reply.text()

            async def sent() -> list[dict[str, Any]]:
                return fake.sent

            await eventually(sent, timeout=15)
    assert fake.sent == [{"to_id": BUYER, "message_type": "text",
                          "content": {"text": "Sai hoje!"}}]
    assert fake.bad_signs == 0
