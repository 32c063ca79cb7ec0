"""A local fake of the example provider (see ``adapter.py``): the resource API a fetching
adapter's tests run against, and the notifications it sends, signed."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.signing import hmac_sha256_hex
from channels.testing import HTTP_FAILURES, FailureKind, InboundCase, SentRecord
from tests.channels.fetch_example.adapter import SIGNATURE_HEADER

FAILURES = HTTP_FAILURES
USER_ID = 123456789


def notification_body(resource: str, number: int, **claims: Any) -> bytes:
    """A notification as the provider sends it (Mercado Libre's fields); ``claims`` are extra
    fields a forged or careless notification carries."""
    return json.dumps({"id": f"n-{resource}-{number}", "resource": resource,
                       "user_id": USER_ID, "topic": "messages", "actions": ["created"],
                       "application_id": 89745685555, "attempts": 1,
                       "sent": "2026-01-01T10:00:00.000Z", **claims}).encode()


class FetchProviderFake:
    """Serves ``GET /messages/{id}`` from the published cases and records ``POST /send``;
    ``hold_fetches`` keeps resource requests waiting until ``release_fetches``."""

    def __init__(self, token: str, secret: str) -> None:
        self.token = token
        self.secret = secret
        self.resources: dict[str, Any] = {}
        self.records: list[SentRecord] = []
        self.send_failures: list[tuple[int, dict[str, str]]] = []
        self.fetch_failures: list[tuple[int, dict[str, str]]] = []
        self.requests = 0
        self.in_flight = 0
        self._open = asyncio.Event()
        self._open.set()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    # -- channels.testing.fetches.FetchProvider --------------------------------------------

    def publish(self, case: InboundCase) -> None:
        self.resources[case.provider_message_id] = case.payload

    def notification(self, case: InboundCase, number: int) -> bytes:
        return notification_body(case.provider_message_id, number)

    def forged_notification(self, case: InboundCase, number: int) -> bytes | None:
        return notification_body(case.provider_message_id, number, text="Pague aquí: forged",
                                 **{"from": "mallory", "chat": "c-forged"})

    def signed_headers(self, body: bytes) -> dict[str, str]:
        return {SIGNATURE_HEADER: "sha256=" + hmac_sha256_hex(self.secret.encode(), body),
                "Content-Type": "application/json"}

    def hold_fetches(self) -> None:
        self._open.clear()

    def release_fetches(self) -> None:
        self._open.set()

    def fail_next_fetch(self, kind: FailureKind) -> None:
        self.fetch_failures.append(FAILURES[kind])

    @property
    def fetch_requests(self) -> int:
        return self.requests

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.send_failures.append(FAILURES[kind])

    # -- the API -----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    async def message(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        self.requests += 1
        self.in_flight += 1
        try:
            await self._open.wait()
        finally:
            self.in_flight -= 1
        if self.fetch_failures:
            status, headers = self.fetch_failures.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        found = self.resources.get(request.match_info["id"])
        if found is None:
            return web.json_response({"message": "not found", "status": 404}, status=404)
        return web.json_response(found)

    async def send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.send_failures:
            status, headers = self.send_failures.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        data = await request.json()
        self.records.append(SentRecord(recipient=data["to"], text=data["text"],
                                       thread_id=data["chat"]))
        return web.json_response({"id": f"s-{len(self.records)}"})

    async def __aenter__(self) -> FetchProviderFake:
        app = web.Application()
        app.router.add_get("/messages/{id}", self.message)
        app.router.add_post("/send", self.send)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.release_fetches()
        await self.server.close()
