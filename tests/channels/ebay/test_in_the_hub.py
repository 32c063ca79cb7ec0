"""eBay as an operator runs it: configured in ``[[channels]]`` (CertID from the environment),
tokens loaded through the admin API, a signed ``MyMessagesM2MMessage`` POSTed to
``/webhooks/ebay/ebay-uk`` answered at once and stored by the hub's fetch worker with the
market hints, an HTML reply refused with the reason and a plain one sent into the
conversation."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub.config import LoadedConfig
from tests.channels.ebay.provider import APP_ID, BUYER, CERT_ID, DEV_ID, SELLER, EbayFake
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

ITEM = "110164967546"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EbayFake]:
    monkeypatch.setenv("EBAY_CERT_ID", CERT_ID)
    async with EbayFake() as running:
        yield running


def channel_toml(fake: EbayFake) -> str:
    return f"""
[[channels]]
name = "ebay-uk"
type = "ebay"
[channels.settings]
api_base_url = "{fake.url}"
seller_username = "{SELLER}"
dev_id = "{DEV_ID}"
app_id = "{APP_ID}"
cert_id = "env:EBAY_CERT_ID"
site = "EBAY_GB"
timeout_seconds = 5
poll_interval_seconds = 3600
"""


async def test_the_hub_runs_the_ebay_channel_both_ways(make_config: Any,
                                                       fake: EbayFake) -> None:
    loaded: LoadedConfig = make_config(extra=channel_toml(fake))
    fake.buyer_writes("C-77", "Hello, has my parcel left?", item=ITEM,
                                at=time.time() - 30)
    async with running_hub(loaded) as client:
        granted = fake.grant()
        resp = await client.put("/api/v1/channels/ebay-uk/auth", data=json.dumps(
            {"access_token": granted.access_token, "refresh_token": granted.refresh_token,
             "expires_in": 7200, "token_type": "User Access Token"}),
            headers=auth(ADMIN_TOKEN))
        assert resp.status == 200, await resp.text()
        answer = await client.post("/webhooks/ebay/ebay-uk",
                                   data=fake.soap_notification(BUYER, ITEM, "5882110"),
                                   headers={"Content-Type": "text/xml; charset=utf-8"})
        assert answer.status == 200, await answer.text()
        forged = await client.post("/webhooks/ebay/ebay-uk",
                                   data=fake.soap_notification(signature="AAAAAAAAAAAAAAAA"),
                                   headers={"Content-Type": "text/xml; charset=utf-8"})
        assert forged.status == 401

        async def find() -> dict[str, Any] | None:
            resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            for c in (await resp.json())["conversations"]:
                if c["thread_id"] == "C-77" and c.get("label"):  # stored and routed
                    return dict(c)
            return None
        conversation = await eventually(find)
        found = await client.get(f"/api/v1/conversations/{conversation['id']}",
                                 headers=auth(ADMIN_TOKEN))
        detail = await found.json()
        [stored] = detail["messages"]
        assert stored["text"] == "Hello, has my parcel left?"
        assert stored["sender_handle"] == BUYER
        shown = detail["conversation"]
        assert (shown["market"], shown["language"], shown["label"], shown["contact_name"]) \
            == ("GB", "en", "ebay", BUYER), shown

        refused = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                    json={"text": "It left <b>today</b>"},
                                    headers=auth(ADMIN_TOKEN))
        assert refused.status == 422 and "HTML" in await refused.text()
        reply = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                  json={"text": "Yes, it left today."},
                                  headers=auth(ADMIN_TOKEN))
        assert reply.status == 202, await reply.text()

        async def sent() -> list[dict[str, Any]]:
            return fake.sent
        [out] = await eventually(sent)
        assert out == {"conversationId": "C-77", "messageText": "Yes, it left today.",
                       "to": BUYER}
