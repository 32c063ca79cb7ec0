"""Hostile input that used to answer 500: a signed body nested 5,000 levels deep, a parser that
trips over an authentic body, ids with Unicode digits or NUL bytes. Each now gets a clear 4xx;
an authentic body is kept in quarantine, so nothing is lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext
from channels.models import InboundMessage
from channels.secrets import Secret
from storage.keys import is_stream_id, partition_from_id
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, TEST_SECRET
from tests.helpers import auth, running_hub, sign

URL = "/webhooks/api/shop"


def _deep(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    """An otherwise valid message with an ignored field nested ``depth`` levels deep."""
    return (b'{"id": "deep-1", "sender": "ana@example.mx", "text": "hola", "extra": '
            + open_ * depth + close * depth + b"}")


@pytest.mark.parametrize(("open_", "close"), [(b"[", b"]"), (b'{"a":', b"}")])
async def test_deeply_nested_signed_body_is_quarantined_with_400(
        make_config: Any, open_: bytes, close: bytes) -> None:
    body = (_deep(5000, open_, close) if open_ == b"[" else
            b'{"id": "deep-1", "sender": "b", "text": "x", "extra": '
            + open_ * 5000 + b"1" + close * 5000 + b"}")
    async with running_hub(make_config()) as client:
        r = await client.post(URL, data=body, headers={"X-Inboxhub-Signature": sign(body)})
        assert r.status == 400, await r.text()
        assert "nested too deeply" in (await r.json())["error"]["message"]
        r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
        entries = (await r.json())["entries"]
        assert len(entries) == 1
        assert entries[0]["raw"].encode() == body and "nested too deeply" in entries[0]["error"]
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        assert (await r.json())["conversations"] == []
        assert (await client.get("/healthz")).status == 200


class _BuggyChannel(ApiChannel):
    """An adapter whose parse has a bug on some authentic input."""

    def parse(self, request: web.Request, body: bytes) -> Sequence[InboundMessage]:
        if b"boom" in body:
            return [{"not": "a message"}[0]]  # type: ignore[index]  # KeyError
        return super().parse(request, body)


@pytest_asyncio.fixture
async def buggy(store: Store) -> AsyncIterator[tuple[TestServer, list[str]]]:
    failures: list[str] = []

    async def quarantine(instance: str, raw: bytes, error: str) -> str:
        if b"redis-down" in raw:
            failures.append(error)
            raise ConnectionError("redis is down")
        return await store.quarantine(instance, raw, error)

    settings = ApiChannelSettings(secret=Secret(TEST_SECRET, "test"), outbound_url="http://x")
    adapter = _BuggyChannel("shop", settings, AdapterContext(
        http=None, quarantine=quarantine, spawn=lambda c, n: None))  # type: ignore[arg-type]
    await adapter.start(store.ingest)
    app = web.Application()
    app.router.add_post(URL, adapter.handle_webhook)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server, failures
    finally:
        await server.close()


async def test_unexpected_parser_error_is_quarantined_not_500(
        buggy: tuple[TestServer, list[str]], store: Store) -> None:
    server, _ = buggy
    body = json.dumps({"id": "1", "sender": "b", "text": "boom"}).encode()
    async with aiohttp.ClientSession() as http:
        r = await http.post(server.make_url(URL), data=body,
                            headers={"X-Inboxhub-Signature": sign(body)})
        assert r.status == 400
        reason = (await r.json())["error"]["message"]
    assert "could not be parsed (KeyError" in reason
    [entry] = await store.list_quarantine()
    assert entry.raw.encode() == body and entry.error == reason


async def test_quarantine_that_cannot_be_stored_is_503_so_the_sender_retries(
        buggy: tuple[TestServer, list[str]], store: Store) -> None:
    server, failures = buggy
    body = json.dumps({"id": "1", "sender": "b", "text": "boom redis-down"}).encode()
    async with aiohttp.ClientSession() as http:
        r = await http.post(server.make_url(URL), data=body,
                            headers={"X-Inboxhub-Signature": sign(body)})
        assert r.status == 503
    assert failures and await store.list_quarantine() == []


HOSTILE_IDS = [
    "\u00b2.ab",  # superscript two: str.isdigit() is True, int() fails
    "\u0663.ab",  # Arabic-Indic three
    "\uff11.ab",  # fullwidth one
    "1.AB",
    "01.ab",
    "0." + "a" * 5000,
    "9" * 300 + ".ab",
    "..",
    "%2e%2e",
    "%00",
    "0.ab%00",
    "0.ab%0a",
    "0.%C3%A9",
    "-1.ab",
    "0.ab.cd",
    "+1.ab",
    " 1.ab",
]


def _routes(hostile: str) -> list[tuple[str, str, Any]]:
    conv = f"/api/v1/conversations/{hostile}"
    return [
        ("GET", conv, None),
        ("POST", f"{conv}/replies", {"text": "hola"}),
        ("POST", f"{conv}/transfer", {"queue": "general"}),
        ("POST", f"{conv}/resolve", None),
        ("POST", f"{conv}/language", {"language": "es"}),
        ("GET", f"{conv}/routing", None),
        ("POST", f"/api/v1/dlq/{hostile}/retry", None),
        ("POST", f"/api/v1/quarantine/{hostile}/retry", None),
        ("DELETE", f"/api/v1/contacts/{hostile}", None),
    ]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
async def test_hostile_ids_get_a_clear_404_on_every_route(make_config: Any,
                                                          hostile: str) -> None:
    async with running_hub(make_config()) as client:
        for method, path, payload in _routes(hostile):
            kwargs: dict[str, Any] = {"headers": auth(ADMIN_TOKEN)}
            if payload is not None:
                kwargs["json"] = payload
            r = await client.request(method, path, **kwargs)
            assert r.status in (404, 414), (method, path, r.status, await r.text())
            if r.status == 404 and r.content_type == "application/json":
                assert "error" in await r.json()


def test_id_parsers_are_ascii_strict() -> None:
    assert partition_from_id("3.0193ab", 4) == 3
    assert partition_from_id("0.ab", 1) == 0
    for bad in ["\u00b2.ab", "\u0663.ab", "01.ab", "1.AB", "1.ab\n", "1.ab\x00", "", ".", "1.",
                ".ab", "1.a.b", "4.ab", "0." + "a" * 100]:
        assert partition_from_id(bad, 4) is None, bad
    assert is_stream_id("1712345678901-0")
    for bad in ["\u00b2-0", "1-", "-0", "1-0-0", "1 -0", "1" * 30 + "-0", "1-0\x00"]:
        assert not is_stream_id(bad), bad
