"""Replies go only where they are configured to go, and an answer is read up to a cap.

Real local servers: the operator's endpoint answers 307 to a second server that records what
reaches it; an endpoint that answers with an endless body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext
from channels.errors import PermanentError, RetryableError
from channels.http import MAX_RESPONSE_BYTES
from channels.models import OutboundReply
from channels.secrets import Secret
from tests.conftest import TEST_SECRET

BUYER_TEXT = "Olá Ana, seu pedido 4711 sai hoje para Rua das Flores 12"


class Servers:
    def __init__(self) -> None:
        self.elsewhere_hits: list[bytes] = []
        self.chunks_written = 0
        self.redirect_status = 307
        self.endless_status = 200
        self.big_body_status = 200
        self.elsewhere: TestServer | None = None
        self.operator: TestServer | None = None

    async def record(self, request: web.Request) -> web.Response:
        self.elsewhere_hits.append(await request.read())
        return web.json_response({"id": "stolen"})

    async def redirect(self, request: web.Request) -> web.Response:
        assert self.elsewhere is not None
        await request.read()
        return web.Response(status=self.redirect_status,
                            headers={"Location": str(self.elsewhere.make_url("/collect"))})

    async def endless(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=self.endless_status)
        await resp.prepare(request)
        chunk = b'{"id": "' + b"x" * 65_000
        try:
            for _ in range(2000):  # 130 MB if the client read it all
                await resp.write(chunk)
                self.chunks_written += 1
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    async def big_id(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=self.big_body_status,
                            body=b'{"pad": "' + b"p" * MAX_RESPONSE_BYTES + b'", "id": "late"}')

    async def small_id(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": "op-7"})


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    elsewhere = web.Application()
    elsewhere.router.add_post("/collect", s.record)
    s.elsewhere = TestServer(elsewhere)
    operator = web.Application()
    operator.router.add_post("/moved", s.redirect)
    operator.router.add_post("/endless", s.endless)
    operator.router.add_post("/big", s.big_id)
    operator.router.add_post("/ok", s.small_id)
    s.operator = TestServer(operator)
    await s.elsewhere.start_server()
    await s.operator.start_server()
    try:
        yield s
    finally:
        await s.operator.close()
        await s.elsewhere.close()


def _reply() -> OutboundReply:
    return OutboundReply(reply_id="0.abc", conversation_id="0.def", channel_type="api",
                         channel_instance="shop", thread_id="t", recipient_handle="ana@x.br",
                         text=BUYER_TEXT)


async def _send(servers: Servers, path: str) -> str:
    assert servers.operator is not None
    async with aiohttp.ClientSession() as session:
        settings = ApiChannelSettings(secret=Secret(TEST_SECRET, "test"),
                                      outbound_url=str(servers.operator.make_url(path)),
                                      timeout_seconds=10)

        async def quarantine(instance: str, raw: bytes, error: str) -> str:
            return ""

        adapter = ApiChannel("shop", settings, AdapterContext(
            http=session, quarantine=quarantine, spawn=lambda c, n: None))  # type: ignore[arg-type]
        return await adapter.send(_reply())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_refused_and_the_buyers_data_goes_nowhere_else(
        servers: Servers, status: int) -> None:
    servers.redirect_status = status
    with pytest.raises(PermanentError) as caught:
        await _send(servers, "/moved")
    assert f"HTTP {status} redirect to" in str(caught.value)
    assert "/collect" in str(caught.value)
    await asyncio.sleep(0.1)
    assert servers.elsewhere_hits == []


async def test_endless_answer_is_read_up_to_the_cap(servers: Servers) -> None:
    # A 2xx means delivered: the reply id stands in for an id we could not read.
    assert await _send(servers, "/endless") == "0.abc"
    await asyncio.sleep(0.2)
    assert servers.chunks_written < 2000, "the whole endless body was read"


async def test_endless_error_answer_is_capped_and_mapped(servers: Servers) -> None:
    servers.endless_status = 503
    with pytest.raises(RetryableError):
        await _send(servers, "/endless")
    servers.endless_status = 400
    with pytest.raises(PermanentError):
        await _send(servers, "/endless")


async def test_id_past_the_cap_is_not_trusted_id_inside_is(servers: Servers) -> None:
    assert await _send(servers, "/big") == "0.abc"
    assert await _send(servers, "/ok") == "op-7"
