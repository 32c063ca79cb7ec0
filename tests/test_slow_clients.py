"""Slow and greedy clients against the real server (``hub.serve``) over real sockets: a head
sent one byte at a time is cut, a body that stalls half way is cut and not stored, and past
``hub.max_connections`` a new connection is refused while the open ones keep working."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from hub.serve import serve
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, sign


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(make_config: Any, **hub: Any) -> AsyncIterator[int]:
    port = _free_port()
    lines = "\n".join(f"{k} = {v}" for k, v in hub.items())
    loaded = make_config(port=port)
    path = loaded.path
    text = path.read_text().replace("shutdown_timeout_seconds = 5",
                                    f"shutdown_timeout_seconds = 5\n{lines}")
    path.write_text(text)
    from hub.config import load_config

    ready = asyncio.Event()
    task = asyncio.create_task(serve(load_config(path), ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_head_sent_one_byte_at_a_time_is_cut_off(make_config: Any) -> None:
    async with serving(make_config, header_timeout_seconds=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
        answer = asyncio.create_task(_read_all(reader, 8))
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < len(head) and not answer.done():
                writer.write(head[sent:sent + 1])
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.1)
        got = await answer
        writer.close()
        assert got.startswith(b"HTTP/1.1 408"), got[:80]
        # 84 bytes at 10 per second would take 8.4 s: cut at the 1 s deadline instead.
        assert sent < len(head) // 2, "the head got through one byte at a time"


async def test_idle_connection_that_never_speaks_is_closed(make_config: Any) -> None:
    async with serving(make_config, header_timeout_seconds=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(reader, 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")


async def test_kept_alive_connection_is_closed_when_idle(make_config: Any) -> None:
    async with serving(make_config, header_timeout_seconds=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await _read_all(reader, 5)  # the 200, then the close when idle
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert b'"ok"' in answer


async def test_body_that_stalls_half_way_is_cut_and_not_stored(make_config: Any) -> None:
    async with serving(make_config, body_timeout_seconds=1.0, header_timeout_seconds=5) as port:
        body = json.dumps({"id": "slow-1", "sender": "ana@example.mx",
                           "text": "hola, ¿dónde está mi pedido?"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhooks/api/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nX-Inboxhub-Signature: {sign(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        await writer.drain()
        answer = await _read_all(reader, 6)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b"request body not received in time" in answer
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            r = await http.get(f"{base}/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            assert (await r.json())["conversations"] == []
            r = await http.get(f"{base}/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
            assert (await r.json())["entries"] == []
            # A whole body sent at once is still fine.
            r = await http.post(f"{base}/webhooks/api/shop", data=body,
                                headers={"X-Inboxhub-Signature": sign(body)})
            assert r.status == 200, await r.text()


async def test_slow_work_after_the_body_arrived_is_not_cut(make_config: Any,
                                                           redis_server: Any) -> None:
    """The body deadline ends when the body is in: storing it may take longer (Redis paused
    for 0.8 s against a 0.3 s body deadline) and the webhook still gets its 200."""
    async with serving(make_config, body_timeout_seconds=0.3) as port:
        body = json.dumps({"id": "pause-1", "sender": "b", "text": "hola"}).encode()
        admin = Redis.from_url(redis_server.url)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /webhooks/api/shop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\nX-Inboxhub-Signature: {sign(body)}\r\n\r\n"
                .encode())
            await writer.drain()
            await asyncio.sleep(0.1)  # the handler is now waiting for the body
            await admin.execute_command("CLIENT", "PAUSE", "800", "ALL")
            writer.write(body)
            await writer.drain()
            answer = await _read_all(reader, 6)
        finally:
            writer.close()
            await admin.aclose()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.parametrize("cap", [3])
async def test_connections_past_the_cap_are_refused_and_served_again_later(
        make_config: Any, cap: int) -> None:
    async with serving(make_config, max_connections=cap, header_timeout_seconds=30) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(reader, 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"too many open connections" in answer
        # The open ones still work: one of them asks for /healthz and gets it.
        r0, w0 = idle[0]
        w0.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w0.drain()
        assert (await _read_all(r0, 5)).startswith(b"HTTP/1.1 200")
        w0.close()
        await asyncio.sleep(0.1)
        # One slot freed: a new connection is served.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await _read_all(reader, 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        for _, w in idle[1:]:
            w.close()
