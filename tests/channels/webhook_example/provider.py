"""A local fake of the example provider (see ``adapter.py``): it signs the webhooks the tests
post and records the replies the adapter sends, since no real provider is reachable here."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.signing import hmac_sha256_hex
from channels.testing import HTTP_FAILURES, FailureKind, SentRecord
from tests.channels.webhook_example.adapter import SIGNATURE_HEADER

FAILURES = HTTP_FAILURES


class ExampleHookProvider:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.records: list[SentRecord] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.server: TestServer | None = None

    @property
    def send_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/send"))

    def sign(self, body: bytes, subpath: str = "") -> dict[str, str]:
        """The headers the provider sends with ``body`` (the kit's ``Signer``)."""
        return {SIGNATURE_HEADER: hmac_sha256_hex(self.secret.encode(), body),
                "Content-Type": "application/json"}

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    async def send(self, request: web.Request) -> web.Response:
        if self.failures:
            status, headers = self.failures.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        data = await request.json()
        self.records.append(SentRecord(recipient=data["to"], text=data["text"],
                                       thread_id=data["chat"]))
        return web.json_response({"id": f"s-{len(self.records)}"})

    async def __aenter__(self) -> ExampleHookProvider:
        app = web.Application()
        app.router.add_post("/send", self.send)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()
