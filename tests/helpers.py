"""Test helpers: signing, a recording HTTP endpoint, a running hub app, polling."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.base import ChannelAdapter
from channels.supervisor import Backoff, Supervisor, TaskHealth
from channels.testing.fetches import KIT_POLICY
from hub.app import build_app
from hub.config import LoadedConfig
from hub.fetcher import Fetcher
from storage.fetches import RedisFetchQueue
from tests.conftest import TEST_SECRET


def sign(body: bytes, secret: str = TEST_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_post_args(payload: Any, secret: str = TEST_SECRET) -> dict[str, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {"data": body, "headers": {"X-Inboxhub-Signature": sign(body, secret),
                                      "Content-Type": "application/json"}}


class OperatorEndpoint:
    """The operator's system receiving replies: verifies signatures, can fail on demand."""

    def __init__(self, secret: str = TEST_SECRET) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.reply_ids: list[str] = []
        self.bad_signatures = 0
        self.fail_with: list[tuple[int, dict[str, str]]] = []
        self.down = False
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not hmac.compare_digest(request.headers.get("X-Inboxhub-Signature", ""),
                                   sign(body, self.secret)):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.down:
            return web.json_response({"error": "down"}, status=503)
        if self.fail_with:
            status, headers = self.fail_with.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        self.received.append(json.loads(body))
        self.reply_ids.append(request.headers.get("X-Inboxhub-Reply-Id", ""))
        return web.json_response({"id": f"op-{len(self.received)}"})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/replies"))

    async def __aenter__(self) -> OperatorEndpoint:
        app = web.Application()
        app.router.add_post("/replies", self.handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


@contextlib.asynccontextmanager
async def running_hub(loaded: LoadedConfig) -> AsyncIterator[TestClient]:
    """The real app (Redis, channels, workers) behind a test client."""
    client = TestClient(TestServer(build_app(loaded)))
    try:
        await client.start_server()
        yield client
    finally:
        await client.close()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0,
                     interval: float = 0.05) -> Any:
    """Poll until ``check`` returns a truthy value; fail with the last value otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hub_fetch_worker(queue: RedisFetchQueue,
                     ) -> Callable[[ChannelAdapter], contextlib.AbstractAsyncContextManager[None]]:
    """The kit's ``fetch_worker`` fixture on the hub's own fetch worker (consumer group, claim
    renewal, retry release) over ``queue``: what an adapter's on-Redis conformance run uses."""

    @contextlib.asynccontextmanager
    async def run(adapter: ChannelAdapter) -> AsyncIterator[None]:
        supervisor = Supervisor("kit-fetcher", TaskHealth(), backoff=Backoff(base=0.01, cap=0.1))
        fetcher = Fetcher(queue, {adapter.instance: adapter}, KIT_POLICY, consumer="kit",
                          claim_idle_ms=1000, concurrency=4, block_ms=50)
        fetcher.start(supervisor)
        try:
            yield
        finally:
            supervisor.stop.set()
            await supervisor.wait(2.0)
            await supervisor.cancel_all()
            await fetcher.cancel()

    return run
