"""Second chances: ``inboxhub quarantine retry ID`` (and its API route) parses a quarantined
input again after a fix, ``dlq retry --all`` (and its route) sends every dead letter again.

"After a fix" is played by the channel's own setting: with ``max_text_length = 10`` the API
channel refuses a long message (quarantined); with the limit raised the same stored bytes
parse, and the message is stored and routed as if it had just arrived."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub.cli import main
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, sign

URL = "/webhooks/api/shop"
LONG_TEXT = "Hola, el paquete llegó roto y quiero un reembolso. " * 4  # 204 characters


@pytest.fixture(autouse=True)
def _no_implicit_loop() -> None:
    asyncio.set_event_loop(None)


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _body(i: int = 1, text: str = LONG_TEXT) -> bytes:
    return json.dumps({"id": f"q-{i}", "sender": "ana@example.mx", "text": text}).encode()


async def _quarantine_one(make_config: Any, body: bytes) -> str:
    async with running_hub(make_config(channel_extra="max_text_length = 10")) as client:
        r = await client.post(URL, data=body, headers={"X-Inboxhub-Signature": sign(body)})
        assert r.status == 400, await r.text()
        r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
        [entry] = (await r.json())["entries"]
        return str(entry["id"])


async def test_api_retry_fails_again_then_succeeds_after_the_fix(make_config: Any,
                                                                 store: Store) -> None:
    entry_id = await _quarantine_one(make_config, _body())
    # Same configuration: still refused; the input is kept with the new error.
    async with running_hub(make_config(channel_extra="max_text_length = 10")) as client:
        r = await client.post(f"/api/v1/quarantine/{entry_id}/retry", headers=auth(ADMIN_TOKEN))
        assert r.status == 422
        data = await r.json()
        assert "longer than this channel accepts" in data["error"]["message"]
        kept_as = data["result"]["kept_as"]
        [entry] = await store.list_quarantine()
        assert entry.id == kept_as != entry_id and entry.raw.encode() == _body()
        stored = await store.quarantine_log.get(kept_as)
        assert stored is not None and stored.retries == 1
    # The fix: the channel accepts longer messages now.
    async with running_hub(make_config(channel_extra="max_text_length = 1000")) as client:
        r = await client.post(f"/api/v1/quarantine/{kept_as}/retry", headers=auth(AGENT_TOKEN))
        assert r.status == 403
        r = await client.post(f"/api/v1/quarantine/{kept_as}/retry", headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()
        result = (await r.json())["result"]
        assert result["outcome"] == "stored" and len(result["message_ids"]) == 1
        [cid] = result["conversation_ids"]
        r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
        assert [m["text"] for m in (await r.json())["messages"]] == [LONG_TEXT]

        async def routed() -> Any:  # the router saw it like any new message
            r = await client.get(f"/api/v1/conversations/{cid}/routing",
                                 headers=auth(ADMIN_TOKEN))
            return (await r.json())["state"].get("queue")

        assert await eventually(routed)
        assert await store.list_quarantine() == []
        assert await store.quarantine_log.usage() == (0, 0)
        r = await client.post(f"/api/v1/quarantine/{kept_as}/retry", headers=auth(ADMIN_TOKEN))
        assert r.status == 404


async def test_truncated_and_non_webhook_entries_are_not_retried(make_config: Any,
                                                                 store: Store) -> None:
    big = _body(2, "x" * 70_000)  # kept cut at 64 KiB
    entry_id = await _quarantine_one(make_config, big)
    stream_entry = await store.quarantine("stream:ih:{p0}:inbound", b"{'conv': '0.ab'}",
                                          "entry 1-0: KeyError")
    async with running_hub(make_config(channel_extra="max_text_length = 100000")) as client:
        r = await client.post(f"/api/v1/quarantine/{entry_id}/retry", headers=auth(ADMIN_TOKEN))
        assert r.status == 409
        assert "kept cut" in (await r.json())["error"]["message"]
        r = await client.post(f"/api/v1/quarantine/{stream_entry}/retry",
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 409
        assert "no configured channel instance" in (await r.json())["error"]["message"]
    assert len(await store.list_quarantine()) == 2  # nothing lost


async def test_cli_quarantine_retry(make_config: Any, store: Store,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = await _quarantine_one(make_config, _body(3))
    still = make_config(channel_extra="max_text_length = 10")
    code, _out, err = await cli(capsys, "quarantine", "retry", entry_id, "--config",
                                str(still.path))
    assert code == 1 and "still cannot be parsed" in err and "kept in quarantine as" in err
    [entry] = await store.list_quarantine()
    fixed = make_config(channel_extra="max_text_length = 1000")
    code, out, err = await cli(capsys, "quarantine", "retry", entry.id, "--config",
                               str(fixed.path))
    assert code == 0, err
    assert "1 message(s) stored" in out
    assert await store.list_quarantine() == []
    [conversation] = await store.list_conversations()
    assert [m.text for m in await store.get_messages(conversation.id)] == [LONG_TEXT]
    code, _out, err = await cli(capsys, "quarantine", "retry", entry.id, "--config",
                                str(fixed.path))
    assert code == 1 and "no quarantine entry" in err


async def test_dlq_retry_all_via_cli_and_api(make_config: Any, store: Store,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    async with OperatorEndpoint() as operator:
        operator.down = True
        loaded = make_config(outbound_url=operator.url)
        async with running_hub(loaded) as client:
            reply_ids = []
            for i in range(3):
                body = json.dumps({"id": f"d-{i}", "sender": f"buyer-{i}",
                                   "text": "Any news?"}).encode()
                r = await client.post(URL, data=body,
                                      headers={"X-Inboxhub-Signature": sign(body)})
                assert r.status == 200
                message_id = (await r.json())["stored"][0]
                message = await store.get_message(message_id)
                assert message is not None
                r = await client.post(
                    f"/api/v1/conversations/{message.conversation_id}/replies",
                    json={"text": f"Tomorrow {i}."}, headers=auth(ADMIN_TOKEN))
                assert r.status == 202
                reply_ids.append((await r.json())["message"]["id"])

            async def all_failed() -> bool:
                return len(await store.list_dead_letters()) == 3

            await eventually(all_failed, timeout=20)
            operator.down = False
            code, out, err = await cli(capsys, "dlq", "retry", "--all", "--config",
                                       str(loaded.path))
            assert code == 0, err
            assert "3 reply(ies) queued" in out

            async def all_sent() -> bool:
                return sorted(operator.reply_ids) == sorted(reply_ids)

            await eventually(all_sent, timeout=20)
            assert await store.list_dead_letters() == []
            # Nothing left: the API route queues nothing and sends nothing twice.
            r = await client.post("/api/v1/dlq/retry-all", headers=auth(ADMIN_TOKEN))
            assert r.status == 202 and await r.json() == {"queued": 0, "skipped": 0}
            await asyncio.sleep(0.3)
            assert len(operator.reply_ids) == 3
            r = await client.post("/api/v1/dlq/retry-all", headers=auth(AGENT_TOKEN))
            assert r.status == 403


async def test_dlq_retry_needs_an_id_or_all(make_config: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    loaded = make_config()
    code, _out, err = await cli(capsys, "dlq", "retry", "--config", str(loaded.path))
    assert code == 2 and "MESSAGE_ID or --all" in err
