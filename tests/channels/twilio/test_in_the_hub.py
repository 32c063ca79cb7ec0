"""The Twilio channel as an operator runs it: configured in ``[[channels]]`` behind a proxy
(``hub.public_url``), a signed SMS stored and routed with its market, an agent's reply sent
through the hub's outbox to Twilio's REST API (a 429 first: retried after Retry-After), and
Twilio's status callback to the URL the send named updating the reply's delivery state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.config import LoadedConfig
from tests.channels.plugin_dist import install_entry_point
from tests.channels.twilio.provider import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    TwilioFake,
    form_body,
    sign_form,
)
from tests.channels.twilio.test_conformance import FORM, inbound_form, status_form
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

TOKEN_ENV = "IH_TEST_TWILIO_TOKEN"
PUBLIC = "https://inbox.example.com"


@pytest.fixture
def twilio_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until channels/registry.py lists ``twilio`` as a built-in, load it as a plugin would."""
    monkeypatch.syspath_prepend(str(install_entry_point(
        tmp_path / "site", distribution="inboxhub-twilio-test", type_name="twilio",
        target="channels.twilio.adapter:TwilioSmsChannel")))
    monkeypatch.setenv(TOKEN_ENV, AUTH_TOKEN)


def channel_toml(api_base_url: str) -> str:
    return f"""
[[channels]]
name = "sms"
type = "twilio"
[channels.settings]
account_sid = "{ACCOUNT_SID}"
auth_token = "env:{TOKEN_ENV}"
from_number = "{OUR_NUMBER}"
api_base_url = "{api_base_url}"
timeout_seconds = 5
"""


async def test_the_hub_serves_twilio_both_ways(make_config: Any, twilio_type: None) -> None:
    async with TwilioFake() as provider:
        loaded: LoadedConfig = make_config(extra=channel_toml(provider.url),
                                           overrides={"hub": {"public_url": PUBLIC}})
        async with running_hub(loaded) as client:
            url = "/webhooks/twilio/sms"
            body = form_body(inbound_form(1, "+34600111222", "Hola, ¿dónde está mi pedido?"))
            unsigned = await client.post(url, data=body, headers={"Content-Type": FORM})
            assert unsigned.status == 401
            local = sign_form(str(client.make_url(url)), body)  # what the proxy forwarded to
            assert (await client.post(url, data=body, headers={
                "Content-Type": FORM, "X-Twilio-Signature": local})).status == 401
            stored = await client.post(url, data=body, headers={
                "Content-Type": FORM, "X-Twilio-Signature": sign_form(PUBLIC + url, body)})
            assert stored.status == 200
            assert await stored.text() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'

            async def conversations() -> list[dict[str, Any]]:
                resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
                return list((await resp.json())["conversations"])

            [conversation] = await eventually(conversations)
            assert (conversation["channel_instance"], conversation["contact_handle"]) == \
                ("sms", "+34600111222")

            async def routed() -> list[dict[str, Any]]:
                return [c for c in await conversations() if c["market"] == "ES"]

            await eventually(routed)  # FromCountry=ES -> the phone_country hint -> market

            # The reply box asks before sending: segments and encoding as Twilio bills them
            draft_url = f"/api/v1/conversations/{conversation['id']}/draft"
            plain = await (await client.post(draft_url, json={"text": "Sale hoy." * 20},
                                             headers=auth(ADMIN_TOKEN))).json()
            assert plain["check"] == {"length": 180, "max_length": 1600, "fits": True,
                                      "segments": 2, "encoding": "GSM-7", "remaining": 126}
            emoji = await (await client.post(draft_url, json={"text": "Gracias 🙏"},
                                             headers=auth(ADMIN_TOKEN))).json()
            assert emoji["check"]["encoding"] == "UCS-2"
            assert emoji["check"]["unicode_characters"] == ["🙏"]
            assert emoji["check"]["length"] == 10  # UTF-16 units: the emoji counts twice
            too_long = await (await client.post(draft_url, json={"text": "x" * 1601},
                                                headers=auth(ADMIN_TOKEN))).json()
            assert too_long["check"]["fits"] is False and "1600" in too_long["check"]["problem"]
            assert plain["reply_window"]["open"] is True and plain["refused"] is None
            assert provider.sent() == []  # a draft is never sent

            provider.fail_with(429, {"Retry-After": "0.1"})
            reply = await client.post(
                f"/api/v1/conversations/{conversation['id']}/replies",
                json={"text": "Su pedido sale hoy."}, headers=auth(ADMIN_TOKEN))
            assert reply.status == 202, await reply.text()
            message_id = (await reply.json())["message"]["id"]
            [sent] = await eventually(lambda: _async(provider.sent()))
            assert (sent.recipient, sent.text) == ("+34600111222", "Su pedido sale hoy.")
            assert provider.failures == [], "the 429 was not answered first"
            callback = provider.forms[0]["StatusCallback"]
            assert callback == f"{PUBLIC}/webhooks/twilio/sms/status"

            async def message() -> dict[str, Any]:
                resp = await client.get(f"/api/v1/conversations/{conversation['id']}/messages",
                                        headers=auth(ADMIN_TOKEN))
                found = [m for m in (await resp.json())["messages"] if m["id"] == message_id]
                return found[0] if found else {}

            first = await eventually(message)
            assert (first["status"], first["provider_message_id"], first["attempts"]) == \
                ("sent", provider.created[0], 2)
            for status in ("delivered", "sent"):  # out of order
                receipt = status_form(provider.created[0], status)
                answer = await client.post(url + "/status", data=receipt, headers={
                    "Content-Type": FORM, "X-Twilio-Signature": sign_form(callback, receipt)})
                assert answer.status == 200

            async def delivered() -> dict[str, Any]:
                found = await message()
                return found if found.get("status") == "delivered" else {}

            await eventually(delivered)
            forged = status_form(provider.created[0], "failed", "30003")
            answer = await client.post(url + "/status", data=forged, headers={
                "Content-Type": FORM, "X-Twilio-Signature": sign_form(PUBLIC + url, forged)})
            assert answer.status == 401  # signed for the other URL
            assert (await message())["status"] == "delivered"


async def _async(value: Any) -> Any:
    return value


async def test_an_mms_is_fetched_by_the_hubs_worker_and_downloadable(
        make_config: Any, twilio_type: None) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    async with TwilioFake() as provider:
        loaded: LoadedConfig = make_config(extra=channel_toml(provider.url),
                                           overrides={"hub": {"public_url": PUBLIC}})
        async with running_hub(loaded) as client:
            url = "/webhooks/twilio/sms"
            fields = provider.publish_mms("MM" + "ab" * 16, "+5511987654321", "Olha a caixa",
                                          [("image/png", png)])
            body = form_body(fields)
            answer = await client.post(url, data=body, headers={
                "Content-Type": FORM, "X-Twilio-Signature": sign_form(PUBLIC + url, body)})
            assert answer.status == 200  # acknowledged before the fetch

            async def messages() -> list[dict[str, Any]]:
                resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
                found = (await resp.json())["conversations"]
                if not found:
                    return []
                resp = await client.get(f"/api/v1/conversations/{found[0]['id']}/messages",
                                        headers=auth(ADMIN_TOKEN))
                return list((await resp.json())["messages"])

            [message] = await eventually(messages)
            assert message["text"] == "Olha a caixa"
            download = await client.get(f"/api/v1/messages/{message['id']}/attachments/0",
                                        headers=auth(ADMIN_TOKEN))
            assert download.status == 200 and await download.read() == png
