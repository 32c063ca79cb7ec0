"""DHgate as an operator runs it: configured in ``[[channels]]`` with ``experimental = true``,
first tokens loaded through the admin API, the hub's own poller (lease, cursor on Redis)
storing a buyer's order message (not the platform announcement), the agent's reply sent to the
topic (an HTML one refused); without ``experimental = true`` the config is refused, saying
why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.config import ConfigError, LoadedConfig
from tests.channels.dhgate.provider import BUYER, CLIENT_ID, CLIENT_SECRET, DHgateFake
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub


def channel_toml(fake: DHgateFake, experimental: bool = True) -> str:
    flag = "experimental = true\n" if experimental else ""
    return f"""
[[channels]]
name = "dh"
type = "dhgate"
[channels.settings]
{flag}api_base_url = "{fake.url}"
token_url = "{fake.token_url}"
client_id = "{CLIENT_ID}"
client_secret = "env:DHGATE_CLIENT_SECRET"
seller_id = "{fake.seller}"
timeout_seconds = 5
poll_interval_seconds = 1
lease_seconds = 3
"""


async def test_the_hub_polls_and_answers_a_dhgate_buyer(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DHGATE_CLIENT_SECRET", CLIENT_SECRET)
    async with DHgateFake() as fake:
        with pytest.raises(ConfigError, match="experimental = true"):
            make_config(extra=channel_toml(fake, experimental=False))
        loaded: LoadedConfig = make_config(extra=channel_toml(fake))
        fake.write("40000001", "Where is my order?", msg_type="002", order="778123456",
                   nickname="Bob B.")
        fake.write("50000001", "Platform announcement", msg_type="010", sender="system")
        async with running_hub(loaded) as client:
            access, refresh = fake.grant()
            resp = await client.put("/api/v1/channels/dh/auth", headers=auth(ADMIN_TOKEN),
                                    data=json.dumps({"access_token": access,
                                                     "refresh_token": refresh,
                                                     "expires_in": 86400}))
            assert resp.status == 200, await resp.text()

            async def conversation() -> dict[str, Any] | None:
                r = await client.get("/api/v1/conversations?channel=dh",
                                     headers=auth(ADMIN_TOKEN))
                found = (await r.json())["conversations"]
                # Routed: the router sets the label (a conversation is listed once stored).
                return dict(found[0]) if found and found[0].get("label") else None

            # The first poll ran before the tokens were loaded: it waits out its backoff.
            conv = await eventually(conversation, timeout=25)
            detail = await (await client.get(f"/api/v1/conversations/{conv['id']}",
                                             headers=auth(ADMIN_TOKEN))).json()
            [stored] = detail["messages"]
            assert stored["text"] == "Where is my order?"
            assert stored["sender_handle"] == BUYER
            shown = detail["conversation"]
            assert (shown["label"], shown["contact_name"]) == ("dhgate", "Bob B."), shown
            refused = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                        json={"text": "<b>Shipped</b>"},
                                        headers=auth(ADMIN_TOKEN))
            assert refused.status == 422 and "HTML" in await refused.text()
            reply = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                      json={"text": "Shipped today."},
                                      headers=auth(ADMIN_TOKEN))
            assert reply.status == 202, await reply.text()

            async def sent() -> list[dict[str, str]]:
                return fake.sent

            await eventually(sent, timeout=15)
            listed = await client.get("/api/v1/conversations?channel=dh",
                                      headers=auth(ADMIN_TOKEN))
            assert len((await listed.json())["conversations"]) == 1  # no announcement
    assert fake.sent == [{"msgId": "40000001", "content": "Shipped today.",
                          "receiverId": BUYER}]
