"""The Telegram channel as an operator runs it: loaded by the hub through an entry point (until
it is a built-in), configured in ``[[channels]]``; an update stored and routed, the agent's
reply sent back as ``sendMessage`` answering the buyer's message, in webhook and in polling
mode; a reply to a buyer who blocked the bot is dead-lettered with Telegram's words."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from channels.telegram.adapter import SECRET_HEADER
from hub.config import LoadedConfig
from tests.channels.plugin_dist import install_entry_point
from tests.channels.telegram import updates
from tests.channels.telegram.bot_api import FakeBotApi, error
from tests.channels.telegram.test_conformance import SECRET, TOKEN
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub


@pytest.fixture
def telegram_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = install_entry_point(tmp_path / "site", distribution="inboxhub-telegram-test",
                               type_name="telegram",
                               target="channels.telegram.adapter:TelegramChannel")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("IH_TEST_TG_TOKEN", TOKEN)
    monkeypatch.setenv("IH_TEST_TG_SECRET", SECRET)


def channel_toml(api: FakeBotApi, mode: str) -> str:
    return f"""
[[channels]]
name = "tg"
type = "telegram"
[channels.settings]
bot_token = "env:IH_TEST_TG_TOKEN"
webhook_secret = "env:IH_TEST_TG_SECRET"
api_base_url = "{api.base_url}"
mode = "{mode}"
long_poll_seconds = 1
lease_seconds = 2
timeout_seconds = 2
"""


async def conversations(client: TestClient) -> list[dict[str, Any]]:
    resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    return [c for c in (await resp.json())["conversations"] if c["channel_instance"] == "tg"]


async def reply_and_wait(client: TestClient, api: FakeBotApi,
                         deliver: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    await deliver()
    [conversation] = await eventually(lambda: conversations(client))
    resp = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                             json={"text": "Su pedido sale hoy."}, headers=auth(ADMIN_TOKEN))
    assert resp.status == 202, await resp.text()

    async def sent() -> list[dict[str, Any]]:
        return list(api.sends)

    [message] = await eventually(sent)
    return message


async def test_webhook_mode_in_the_hub(make_config: Any, telegram_plugin: None) -> None:
    async with FakeBotApi(TOKEN) as api:
        loaded: LoadedConfig = make_config(extra=channel_toml(api, "webhook"))
        async with running_hub(loaded) as client:
            body = msgspec.json.encode(updates.text_update(1, 698, "¿Dónde está mi pedido?"))
            url = "/webhooks/telegram/tg"

            async def deliver() -> None:
                forged = await client.post(url, data=body, headers={
                    "Content-Type": "application/json", SECRET_HEADER: "forged"})
                assert forged.status == 403
                stored = await client.post(url, data=body, headers={
                    "Content-Type": "application/json", SECRET_HEADER: SECRET})
                assert stored.status == 200, await stored.text()

            message = await reply_and_wait(client, api, deliver)
            assert message["chat_id"] == str(updates.buyer().id)
            assert message["text"] == "Su pedido sale hoy."
            assert message["reply_parameters"]["message_id"] == 698


async def test_polling_mode_in_the_hub(make_config: Any, telegram_plugin: None) -> None:
    async with FakeBotApi(TOKEN) as api:
        api.webhook = {"url": "https://stale.example.com/hook"}
        loaded: LoadedConfig = make_config(extra=channel_toml(api, "polling"))
        async with running_hub(loaded) as client:
            async def deliver() -> None:
                api.publish_update(updates.text_update(0, 699, "Oi, cadê?",
                                                       user=updates.buyer(language="pt")))

            message = await reply_and_wait(client, api, deliver)
            assert message["reply_parameters"]["message_id"] == 699
            assert api.webhook is None
            assert (await client.post("/webhooks/telegram/tg", data=b"{}")).status == 405
            # channel health shows what this instance is: a poller, not a webhook
            resp = await client.get("/api/v1/channels", headers=auth(ADMIN_TOKEN))
            [health] = [c for c in (await resp.json())["channels"] if c["instance"] == "tg"]
            assert health["poll"] is not None and health["webhook"] is None


async def test_a_reply_to_a_blocked_bot_is_dead_lettered_with_the_reason(
        make_config: Any, telegram_plugin: None) -> None:
    async with FakeBotApi(TOKEN) as api:
        loaded: LoadedConfig = make_config(extra=channel_toml(api, "polling"))
        async with running_hub(loaded) as client:
            api.publish_update(updates.text_update(0, 700, "hola"))
            [conversation] = await eventually(lambda: conversations(client))
            api.fail_next("sendMessage", error(403))
            resp = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                     json={"text": "¿Sigue ahí?"}, headers=auth(ADMIN_TOKEN))
            assert resp.status == 202

            async def dead() -> list[dict[str, Any]]:
                resp = await client.get("/api/v1/dlq", headers=auth(ADMIN_TOKEN))
                return list((await resp.json())["entries"])

            [letter] = await eventually(dead)
            assert "bot was blocked by the user" in letter["error"]
            assert letter["attempts"] == 1, "a permanent failure is not retried"
            assert api.sends == []

            # The conversation is unreachable: the next reply is refused before it is queued
            async def marked() -> dict[str, Any] | None:
                resp = await client.get(f"/api/v1/conversations/{conversation['id']}",
                                        headers=auth(ADMIN_TOKEN))
                body: dict[str, Any] = (await resp.json())["conversation"]
                return body if body.get("unreachable") else None

            view = await eventually(marked)
            assert "blocked" in view["unreachable"]
            draft = await client.post(f"/api/v1/conversations/{conversation['id']}/draft",
                                      json={"text": "x" * 5000}, headers=auth(ADMIN_TOKEN))
            answer = await draft.json()
            assert "until they write again" in answer["refused"]
            assert answer["check"]["parts"] == 2 and answer["check"]["length"] == 5000
            resp = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                     json={"text": "¿Hola?"}, headers=auth(ADMIN_TOKEN))
            assert resp.status == 422
            assert "until they write again" in (await resp.json())["error"]["message"]
            # ...until the buyer writes again
            api.publish_update(updates.text_update(1, 701, "perdón, ya está"))

            async def cleared() -> bool:
                resp = await client.get(f"/api/v1/conversations/{conversation['id']}",
                                        headers=auth(ADMIN_TOKEN))
                body = (await resp.json())["conversation"]
                return not body.get("unreachable")

            await eventually(cleared)
            resp = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                     json={"text": "¡Bienvenido de vuelta!"},
                                     headers=auth(ADMIN_TOKEN))
            assert resp.status == 202, await resp.text()


async def test_an_edit_changes_the_stored_message_and_a_reply_names_its_quote(
    make_config: Any, telegram_plugin: None
) -> None:
    """On the hub's store the edit is applied to the message (newest words shown, the original
    kept, a late older edit ignored), and a buyer's reply names the message it quotes."""
    async with FakeBotApi(TOKEN) as api:
        loaded: LoadedConfig = make_config(extra=channel_toml(api, "webhook"))
        async with running_hub(loaded) as client:
            url = "/webhooks/telegram/tg"
            headers = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}

            async def post(payload: dict[str, Any]) -> None:
                resp = await client.post(url, data=msgspec.json.encode(payload),
                                         headers=headers)
                assert resp.status == 200, await resp.text()

            first = updates.message(30, "quiero 2")
            await post(updates.update(1, message=first))
            await post(updates.edited_update(3, 30, "quiero 4", updates.SENT_AT + 200))
            await post(updates.edited_update(2, 30, "quiero 3", updates.SENT_AT + 100))  # late
            await post(updates.text_update(4, 31, "y en azul", reply_to_message=first))
            [conversation] = await eventually(lambda: conversations(client))
            resp = await client.get(f"/api/v1/conversations/{conversation['id']}/messages",
                                    headers=auth(ADMIN_TOKEN))
            messages = (await resp.json())["messages"]
            assert [m["text"] for m in messages] == ["quiero 4", "y en azul"]
            edited, answer = messages
            assert edited["original_text"] == "quiero 2"
            assert edited["edited_at"] == updates.SENT_AT + 200
            assert answer["reply_to"] == edited["provider_message_id"]
