"""A local fake of the example provider's API (see ``adapter.py``): the server a polling
adapter's tests run against, since the real provider cannot be reached from a test machine."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.testing import HTTP_FAILURES, FailureKind, InboundCase, SentRecord

FAILURES = HTTP_FAILURES


class ExampleProvider:
    """Serves ``GET /messages?after=&limit=`` from the published updates, records ``POST
    /send``; ``poll_delay`` makes each poll take that long (to catch overlapping pollers)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.records: list[SentRecord] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.poll_failures: list[tuple[int, dict[str, str]]] = []
        self.poll_delay = 0.0
        self.polls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def publish(self, case: InboundCase) -> None:
        self.publish_raw(case.payload)

    def publish_raw(self, message: Any) -> None:
        self.updates.append({"seq": len(self.updates) + 1, "message": message})

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    async def messages(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        self.polls += 1
        if self.poll_failures:
            status, headers = self.poll_failures.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "100"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.poll_delay:
                await asyncio.sleep(self.poll_delay)
        finally:
            self.in_flight -= 1
        return web.json_response([u for u in self.updates if u["seq"] > after][:limit])

    async def send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.failures:
            status, headers = self.failures.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        data = await request.json()
        self.records.append(SentRecord(recipient=data["to"], text=data["text"],
                                       thread_id=data["chat"]))
        return web.json_response({"id": f"s-{len(self.records)}"})

    async def __aenter__(self) -> ExampleProvider:
        app = web.Application()
        app.router.add_get("/messages", self.messages)
        app.router.add_post("/send", self.send)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()
