"""Hostile and malformed input on the API channel's webhook: clear 4xx, nothing stored,
authentic-but-unusable bodies quarantined, and the server keeps serving."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext, StoredRequest
from channels.errors import MalformedPayload
from channels.secrets import Secret
from tests.conftest import ADMIN_TOKEN, TEST_SECRET
from tests.helpers import auth, running_hub, sign

URL = "/webhooks/api/shop"


async def _post(client: Any, body: bytes, signature: str | None = "auto",
                **headers: str) -> tuple[int, dict[str, Any]]:
    h = dict(headers)
    if signature == "auto":
        h["X-Inboxhub-Signature"] = sign(body)
    elif signature is not None:
        h["X-Inboxhub-Signature"] = signature
    r = await client.post(URL, data=body, headers=h)
    text = await r.text()
    try:
        data = json.loads(text)
    except ValueError:
        data = {"raw": text}
    return r.status, data


async def _nothing_stored(client: Any) -> None:
    r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    assert (await r.json())["conversations"] == []


async def _quarantine(client: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
    return (await r.json())["entries"]


GOOD = json.dumps({"id": "1", "sender": "b", "text": "hola"}).encode()


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("missing", None),
        ("empty", ""),
        ("no prefix", sign(GOOD)[len("sha256="):]),
        ("wrong secret", sign(GOOD, "other-secret")),
        ("other body", sign(GOOD + b" ")),
        ("sha1 prefix", "sha1=" + sign(GOOD)[7:]),
        ("truncated", sign(GOOD)[:-2]),
        ("non-ascii", "sha256=ñ" + sign(GOOD)[8:]),
    ],
)
async def test_bad_signatures_are_401_and_not_stored(make_config: Any, name: str,
                                                     signature: str | None) -> None:
    async with running_hub(make_config()) as client:
        status, data = await _post(client, GOOD, signature)
        assert status == 401, name
        assert data["error"]["code"] == "invalid_signature"
        assert "X-Inboxhub-Signature" in data["error"]["message"]
        await _nothing_stored(client)
        assert await _quarantine(client) == [], "unauthenticated input must not be kept"


@pytest.mark.parametrize(
    ("name", "body", "reason"),
    [
        ("not json", b"{not json", "not valid UTF-8 JSON"),
        ("empty body", b"", "not valid UTF-8 JSON"),
        ("array", b"[]", "Expected `object`"),
        ("missing text", b'{"id": "1", "sender": "b"}', "`text`"),
        ("missing id", b'{"sender": "b", "text": "x"}', "`id`"),
        ("id wrong type", b'{"id": 5, "sender": "b", "text": "x"}', "`$.id`"),
        ("text wrong type", b'{"id": "1", "sender": "b", "text": ["x"]}', "`$.text`"),
        ("empty sender", b'{"id": "1", "sender": "", "text": "x"}', "`$.sender`"),
        ("huge id", json.dumps({"id": "x" * 300, "sender": "b", "text": "x"}).encode(),
         "`$.id`"),
        ("bad sent_at", b'{"id": "1", "sender": "b", "text": "x", "sent_at": "yesterday"}',
         "sent_at"),
        ("naive sent_at", b'{"id": "1", "sender": "b", "text": "x",'
                          b' "sent_at": "2026-01-01T10:00:00"}', "time zone"),
        ("invalid utf-8", b'{"id": "1", "sender": "b", "text": "\xff\xfe"}', "UTF-8"),
        ("nested depth", b"[" * 10000 + b"]" * 10000, ""),
        ("nul in json", b'{"id": "1", "sender": "b", "text": "x"}\x00', "UTF-8 JSON"),
    ],
)
async def test_malformed_bodies_are_400_quarantined_not_stored(
    make_config: Any, name: str, body: bytes, reason: str
) -> None:
    async with running_hub(make_config()) as client:
        status, data = await _post(client, body)
        assert status == 400, (name, data)
        assert data["error"]["code"] == "malformed_payload", (name, data)
        assert reason in data["error"]["message"], (name, data)
        await _nothing_stored(client)
        entries = await _quarantine(client)
        assert len(entries) == 1 and entries[0]["channel_instance"] == "shop"
        assert entries[0]["error"] == data["error"]["message"]
        # the server is still up and accepts good input right after
        status, _ = await _post(client, GOOD)
        assert status == 200


async def test_oversized_body_is_413(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        big = json.dumps({"id": "1", "sender": "b", "text": "x" * (2 * 1024 * 1024)}).encode()
        r = await client.post(URL, data=io.BytesIO(big),
                              headers={"X-Inboxhub-Signature": sign(big),
                                       "Content-Length": str(len(big))})
        assert r.status == 413 and "limit" in (await r.json())["error"]["message"]

        async def chunks() -> Any:  # no Content-Length: the limit still holds while streaming
            for _ in range(40):
                yield b"x" * 65536

        r = await client.post(URL, data=chunks(), headers={"X-Inboxhub-Signature": "sha256=00"})
        assert r.status == 413
        await _nothing_stored(client)
        assert (await _post(client, GOOD))[0] == 200


async def test_huge_and_many_headers_are_rejected_and_server_survives(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        base = str(client.make_url(URL))
        async with aiohttp.ClientSession() as session:
            async with session.post(base, data=GOOD,
                                    headers={"X-Junk": "a" * 100_000,
                                             "X-Inboxhub-Signature": sign(GOOD)}) as r:
                assert 400 <= r.status < 500
            many = {f"X-H{i}": "v" for i in range(200)}
            many["X-Inboxhub-Signature"] = sign(GOOD)
            async with session.post(base, data=GOOD, headers=many) as r:
                assert r.status in (200, 400, 431)
        assert (await client.get("/healthz")).status == 200


async def test_routing_of_webhook_paths(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        r = await client.post("/webhooks/api/nope", data=GOOD,
                              headers={"X-Inboxhub-Signature": sign(GOOD)})
        assert r.status == 404
        r = await client.post("/webhooks/telegram/shop", data=GOOD,
                              headers={"X-Inboxhub-Signature": sign(GOOD)})
        assert r.status == 404
        r = await client.get(URL)
        assert r.status == 405
        r = await client.put(URL, data=GOOD)
        assert r.status == 405


async def test_unicode_and_long_text_round_trip(make_config: Any) -> None:
    text = "Olá! 你好 🙂 <script>alert(1)</script> \u202e" + "é" * 5000
    async with running_hub(make_config()) as client:
        body = json.dumps({"id": "u1", "sender": "b", "text": text}, ensure_ascii=False).encode()
        status, _ = await _post(client, body)
        assert status == 200
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        cid = (await r.json())["conversations"][0]["id"]
        r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
        assert r.content_type == "application/json"
        assert (await r.json())["messages"][0]["text"] == text


async def test_concurrent_bad_traffic_does_not_block_good(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        bad = [_post(client, b"{broken") for _ in range(30)]
        unsigned = [_post(client, GOOD, None) for _ in range(30)]
        good = [_post(client, json.dumps({"id": f"g{i}", "sender": f"s{i}", "text": "ok"})
                      .encode()) for i in range(30)]
        results = await asyncio.gather(*bad, *unsigned, *good)
        statuses = [s for s, _ in results]
        assert statuses == [400] * 30 + [401] * 30 + [200] * 30
        r = await client.get("/api/v1/conversations?limit=200", headers=auth(ADMIN_TOKEN))
        assert len((await r.json())["conversations"]) == 30


def _adapter() -> ApiChannel:
    settings = ApiChannelSettings(secret=Secret(TEST_SECRET, "test"), outbound_url="http://x")

    async def quarantine(instance: str, raw: bytes, error: str) -> str:
        return ""

    return ApiChannel("shop", settings, AdapterContext(
        http=None, quarantine=quarantine, spawn=lambda c, n: None))  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode())
       | st.fixed_dictionaries({"id": json_values, "sender": json_values, "text": json_values})
       .map(lambda v: json.dumps(v).encode()))
def test_parse_never_fails_unexpectedly(body: bytes) -> None:
    """Any authentic body either normalizes or raises MalformedPayload: never anything else."""
    adapter = _adapter()
    try:
        messages = asyncio.run(adapter.parse(StoredRequest({}), body))  # type: ignore[arg-type]
    except MalformedPayload as exc:
        assert exc.reason
    else:
        assert len(messages) == 1 and messages[0].provider_message_id
