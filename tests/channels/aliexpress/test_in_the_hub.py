"""AliExpress as an operator runs it: configured in ``[[channels]]`` with
``experimental = true``, first tokens loaded through the admin API, the hub's own poller
(lease, cursor on Redis) storing a buyer's message from a signed relation-list poll, and the
agent's reply sent with ``addmsg`` (an HTML one refused); without ``experimental = true`` the
config is refused, saying why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.config import ConfigError, LoadedConfig
from tests.channels.aliexpress.provider import APP_KEY, APP_SECRET, BUYER, AliExpressFake
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub


def channel_toml(fake: AliExpressFake, experimental: bool = True) -> str:
    flag = "experimental = true\n" if experimental else ""
    return f"""
[[channels]]
name = "ae"
type = "aliexpress"
[channels.settings]
{flag}api_base_url = "{fake.url}"
token_url = "{fake.token_url}"
app_key = "{APP_KEY}"
app_secret = "env:ALIEXPRESS_APP_SECRET"
seller_login_id = "{fake.seller}"
timeout_seconds = 5
poll_interval_seconds = 1
lease_seconds = 3
"""


async def test_the_hub_polls_and_answers_an_aliexpress_buyer(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIEXPRESS_APP_SECRET", APP_SECRET)
    async with AliExpressFake() as fake:
        with pytest.raises(ConfigError, match="experimental = true"):
            make_config(extra=channel_toml(fake, experimental=False))
        loaded: LoadedConfig = make_config(extra=channel_toml(fake))
        fake.write("3000000001", "Olá, meu pedido ainda não chegou", name="Ana B.")
        async with running_hub(loaded) as client:
            access, refresh = fake.grant()
            resp = await client.put("/api/v1/channels/ae/auth", headers=auth(ADMIN_TOKEN),
                                    data=json.dumps({"access_token": access,
                                                     "refresh_token": refresh,
                                                     "expires_in": 86400}))
            assert resp.status == 200, await resp.text()

            async def conversation() -> dict[str, Any] | None:
                r = await client.get("/api/v1/conversations?channel=ae",
                                     headers=auth(ADMIN_TOKEN))
                found = (await r.json())["conversations"]
                # Routed: the router sets the label (a conversation is listed once stored).
                return dict(found[0]) if found and found[0].get("label") else None

            # The first poll ran before the tokens were loaded: it waits out its backoff.
            conv = await eventually(conversation, timeout=25)
            detail = await (await client.get(f"/api/v1/conversations/{conv['id']}",
                                             headers=auth(ADMIN_TOKEN))).json()
            [stored] = detail["messages"]
            assert stored["text"] == "Olá, meu pedido ainda não chegou"
            assert stored["sender_handle"] == BUYER
            shown = detail["conversation"]
            assert (shown["label"], shown["contact_name"]) == ("aliexpress", "Ana B."), shown
            refused = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                        json={"text": "<p>Enviado</p>"},
                                        headers=auth(ADMIN_TOKEN))
            assert refused.status == 422 and "HTML" in await refused.text()
            reply = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                      json={"text": "Já foi enviado."},
                                      headers=auth(ADMIN_TOKEN))
            assert reply.status == 202, await reply.text()

            async def sent() -> list[dict[str, str]]:
                return fake.sent

            await eventually(sent, timeout=15)
    assert fake.sent == [{"buyer_id": BUYER, "channel_id": "3000000001",
                          "content": "Já foi enviado.", "msg_sources": "message_center"}]
    assert fake.bad_signs == 0
