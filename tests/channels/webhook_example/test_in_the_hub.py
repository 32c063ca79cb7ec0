"""The example webhook channel as an operator runs it: loaded by the hub through its entry
point, configured in ``[[channels]]``, a signed POST stored and routed, an agent's reply sent
back through the provider, and a forged POST refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.config import LoadedConfig
from tests.channels.webhook_example import plugin
from tests.channels.webhook_example.provider import ExampleHookProvider
from tests.channels.webhook_example.test_conformance import SECRET
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(plugin.install(tmp_path / "site")))
    monkeypatch.setenv(plugin.SECRET_ENV, SECRET)


async def test_the_hub_serves_the_plugin_channel_both_ways(
    make_config: Any, example_plugin: None
) -> None:
    async with ExampleHookProvider(SECRET) as provider:
        loaded: LoadedConfig = make_config(extra=plugin.channel_toml("hook", provider.send_url))
        async with running_hub(loaded) as client:
            body = json.dumps({"id": "m-1", "from": "ana", "chat": "c-1",
                               "text": "Hola, ¿dónde está mi pedido?"}).encode()
            url = "/webhooks/example-hook/hook"
            forged = await client.post(url, data=body, headers={
                **provider.sign(body), "X-Example-Signature": "00" * 32})
            assert forged.status == 401
            stored = await client.post(url, data=body, headers=provider.sign(body))
            assert stored.status == 200, await stored.text()

            async def conversations() -> list[dict[str, Any]]:
                resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
                return list((await resp.json())["conversations"])

            [conversation] = await eventually(conversations)
            assert conversation["channel_instance"] == "hook"
            reply = await client.post(
                f"/api/v1/conversations/{conversation['id']}/replies",
                json={"text": "Su pedido sale hoy."}, headers=auth(ADMIN_TOKEN))
            assert reply.status == 202, await reply.text()
            [sent] = await eventually(lambda: _async(provider.sent()))
            assert (sent.recipient, sent.thread_id, sent.text) == \
                ("ana", "c-1", "Su pedido sale hoy.")


async def _async(value: Any) -> Any:
    return value
