"""The hostile-webhook battery: what a webhook adapter does with input an attacker or a broken
provider sends.

Mix ``HostileWebhookBattery`` into a webhook channel's conformance class. The harness must
serve the adapter the way the hub does (``mount`` below dispatches through
``channels.base.serve_webhook``, the hub's own code) and offer:

* ``request(method, subpath, body, headers) -> WebhookAnswer`` against that server;
* ``signed_headers(body, subpath)``: the headers the provider would send for ``body``.

The test class lists authentic-but-unusable bodies in ``malformed_bodies()`` and, if its
provider verifies the endpoint with a GET, the handshakes in ``handshake_cases()``. The battery
checks: a missing or wrong signature is 401/403 and nothing is stored or kept; a body over the
limit is 413 and nothing is kept; a malformed authentic body is 400 and quarantined with the
reason; the GET handshake answers as documented (or GET is a 405 where there is none); other
methods are 405 with ``Allow``; an unknown sub-path is 404. Each applies to every sub-path.

The quarantine is the ``kit_quarantine`` fixture: ``MemoryQuarantine`` by default (no Redis);
inboxhub's channels override it with ``storage.kit.StoreQuarantine`` (the hub's quarantine).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Protocol

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.base import AdapterContext, ChannelAdapter, error_json, serve_webhook
from channels.testing.core import FailureKind, InboundCase, IngestGate, SentRecord


class QuarantinedInput(msgspec.Struct, frozen=True):
    channel_instance: str
    raw: bytes
    error: str
    headers: dict[str, str] = {}


class KitQuarantine(Protocol):
    """``AdapterContext.quarantine`` plus a way for the kit to read back what it kept."""

    async def __call__(self, channel_instance: str, raw: bytes, error: str, *,
                       headers: Mapping[str, str] | None = None) -> str: ...

    async def entries(self) -> list[QuarantinedInput]: ...


class MemoryQuarantine:
    def __init__(self) -> None:
        self.kept: list[QuarantinedInput] = []

    async def __call__(self, channel_instance: str, raw: bytes, error: str, *,
                       headers: Mapping[str, str] | None = None) -> str:
        self.kept.append(QuarantinedInput(channel_instance, raw, error, dict(headers or {})))
        return f"q-{len(self.kept)}"

    async def entries(self) -> list[QuarantinedInput]:
        return list(self.kept)


def mount(app: web.Application, adapter: ChannelAdapter) -> None:
    """Serve ``adapter`` at ``/webhooks/{type}/{instance}[/{path}]`` as the hub does."""

    async def webhook(request: web.Request) -> web.StreamResponse:
        if (request.match_info["type"], request.match_info["instance"]) != \
                (adapter.type_name, adapter.instance):
            return error_json(404, "not_found", "no such channel instance")
        return await serve_webhook(adapter, request)

    app.router.add_route("*", "/webhooks/{type}/{instance}", webhook)
    app.router.add_route("*", "/webhooks/{type}/{instance}/{path}", webhook)


class WebhookAnswer(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    headers: dict[str, str] = {}


class WebhookHarness(Protocol):
    adapter: ChannelAdapter

    async def request(self, method: str, subpath: str, body: bytes,
                      headers: Mapping[str, str]) -> WebhookAnswer:
        """``subpath`` "" is the instance's main URL; it may end in ``?query``."""
        ...

    def signed_headers(self, body: bytes, subpath: str = "") -> dict[str, str]: ...


class MalformedCase(msgspec.Struct, frozen=True):
    """An authentic body the adapter cannot use, and words its quarantine reason contains."""

    name: str
    body: bytes
    reason_contains: str = ""
    subpath: str = ""


class HandshakeCase(msgspec.Struct, frozen=True):
    """A provider's verification GET (Meta ``hub.challenge``, eBay ``challenge_code``)."""

    name: str
    query: dict[str, str]
    status: int
    body: bytes | None = None
    subpath: str = ""


class HostileWebhookBattery:
    """Mix into a webhook channel's ``ChannelConformance`` subclass (see the module doc)."""

    def malformed_bodies(self) -> list[MalformedCase]:
        raise NotImplementedError("return the authentic-but-unusable bodies to try")

    def handshake_cases(self) -> list[HandshakeCase]:
        """Override when the provider verifies the endpoint with a GET."""
        return []

    def valid_body(self, subpath: str = "") -> bytes:
        """A body the endpoint accepts (default: the first inbound case as JSON)."""
        payload = self.inbound_cases()[0].payload  # type: ignore[attr-defined]
        return payload if isinstance(payload, bytes) else msgspec.json.encode(payload)

    @pytest.fixture
    def kit_quarantine(self) -> KitQuarantine:
        """Override to run on the hub's quarantine (inboxhub's channels do)."""
        return MemoryQuarantine()

    @pytest.fixture
    def webhook_kit(self, ingest_gate: IngestGate, kit_quarantine: KitQuarantine) -> WebhookKit:
        return WebhookKit(ingest_gate, kit_quarantine)

    @staticmethod
    def _paths(harness: WebhookHarness) -> list[str]:
        return ["", *sorted(getattr(harness.adapter, "subpaths", frozenset()))]

    async def test_a_bad_or_missing_signature_is_refused_and_nothing_kept(
        self, harness: WebhookHarness, ingest_gate: IngestGate, kit_quarantine: KitQuarantine
    ) -> None:
        for path in self._paths(harness):
            body = self.valid_body(path)
            forged = harness.signed_headers(body + b" ", path)  # signed for other bytes
            for name, headers in (("missing", {}), ("wrong", forged)):
                status = (await harness.request("POST", path, body, headers)).status
                assert status in (401, 403), f"{path or '/'}: {name} signature got {status}"
        assert ingest_gate.results == [], "an unauthenticated body was stored"
        assert await kit_quarantine.entries() == [], "an unauthenticated body was kept"

    async def test_an_oversized_body_is_413_and_not_kept(
        self, harness: WebhookHarness, ingest_gate: IngestGate, kit_quarantine: KitQuarantine
    ) -> None:
        limit = harness.adapter.context.max_body_bytes
        for path in self._paths(harness):
            body = b"x" * (limit + 1)
            status = (await harness.request("POST", path, body,
                                            harness.signed_headers(body, path))).status
            assert status == 413, f"{path or '/'}: {limit + 1} bytes got {status}"
        assert ingest_gate.results == [] and await kit_quarantine.entries() == []

    async def test_a_malformed_authentic_body_is_quarantined_with_the_reason(
        self, harness: WebhookHarness, ingest_gate: IngestGate, kit_quarantine: KitQuarantine
    ) -> None:
        cases = self.malformed_bodies()
        assert cases, "list at least one malformed body"
        for i, case in enumerate(cases):
            answer = await harness.request(
                "POST", case.subpath, case.body, harness.signed_headers(case.body, case.subpath))
            assert answer.status == 400, f"{case.name}: got {answer.status}"
            kept = await kit_quarantine.entries()
            assert len(kept) == i + 1, f"{case.name}: not quarantined"
            assert kept[-1].raw == case.body[:len(kept[-1].raw)] and kept[-1].raw
            assert kept[-1].channel_instance == harness.adapter.instance
            assert kept[-1].error, f"{case.name}: quarantined without a reason"
            assert case.reason_contains in kept[-1].error, (case.name, kept[-1].error)
            assert kept[-1].error[:60] in answer.body.decode(errors="replace"), \
                f"{case.name}: the answer does not give the reason"
        assert ingest_gate.results == []

    async def test_the_get_handshake(self, harness: WebhookHarness) -> None:
        cases = self.handshake_cases()
        if not cases:
            assert "GET" not in harness.adapter.webhook_methods, \
                "the adapter serves GET: list its handshake in handshake_cases()"
            assert (await harness.request("GET", "", b"", {})).status == 405
            return
        for case in cases:
            query = "&".join(f"{k}={v}" for k, v in case.query.items())
            answer = await harness.request("GET", f"{case.subpath}?{query}", b"", {})
            assert answer.status == case.status, f"{case.name}: got {answer.status}"
            if case.body is not None:
                assert answer.body == case.body, f"{case.name}: answered {answer.body!r}"

    async def test_other_methods_are_405_with_allow(self, harness: WebhookHarness) -> None:
        body = self.valid_body()
        for method in ("PUT", "DELETE", "PATCH"):
            for path in self._paths(harness):
                answer = await harness.request(method, path, body,
                                               harness.signed_headers(body, path))
                assert answer.status == 405, f"{method} {path or '/'}: got {answer.status}"
                allowed = {m.strip() for m in answer.headers.get("Allow", "").split(",")}
                assert allowed == set(harness.adapter.webhook_methods), answer.headers

    async def test_an_unknown_subpath_is_404(
        self, harness: WebhookHarness, ingest_gate: IngestGate
    ) -> None:
        body = self.valid_body()
        answer = await harness.request("POST", "no-such-path", body,
                                       harness.signed_headers(body, "no-such-path"))
        assert answer.status == 404
        assert ingest_gate.results == []


# -- a ready-made harness for webhook adapters ---------------------------------------------------


class SendingProvider(Protocol):
    """The provider's fake as the kit needs it: it records the adapter's sends and can be
    told to fail the next one. Its URL is the adapter's business (a setting)."""

    def sent(self) -> list[SentRecord]: ...

    def fail_next_send(self, kind: FailureKind) -> None: ...


Signer = Callable[[bytes, str], dict[str, str]]
"""``(body, subpath) -> headers``: what the provider sends to prove a body is its own."""

WebhookAdapterFactory = Callable[[AdapterContext], ChannelAdapter]


class ServedWebhook:
    """The core and hostile batteries' harness for a webhook adapter: the adapter served
    through the hub's own dispatch (``mount``), provider POSTs signed by the test's signer,
    sends going to the provider's fake."""

    def __init__(self, adapter: ChannelAdapter, server: TestServer,
                 session: aiohttp.ClientSession, provider: SendingProvider,
                 signer: Signer, encode: Callable[[Any], bytes]) -> None:
        self.adapter = adapter
        self.server = server
        self.session = session
        self.provider = provider
        self._signer = signer
        self._encode = encode

    async def deliver(self, case: InboundCase) -> bool:
        body = self._encode(case.payload)
        answer = await self.request("POST", "", body, self.signed_headers(body))
        return 200 <= answer.status < 300

    async def request(self, method: str, subpath: str, body: bytes,
                      headers: Mapping[str, str]) -> WebhookAnswer:
        path, _, query = subpath.partition("?")
        url = self.server.make_url(
            f"/webhooks/{self.adapter.type_name}/{self.adapter.instance}"
            + (f"/{path}" if path else "") + (f"?{query}" if query else ""))
        async with self.session.request(method, url, data=body or None,
                                        headers=dict(headers)) as resp:
            return WebhookAnswer(resp.status, await resp.read(), dict(resp.headers))

    def signed_headers(self, body: bytes, subpath: str = "") -> dict[str, str]:
        return self._signer(body, subpath)

    def sent(self) -> list[SentRecord]:
        return self.provider.sent()

    def fail_next_send(self, kind: FailureKind) -> None:
        self.provider.fail_next_send(kind)


def _encode_payload(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else msgspec.json.encode(payload)


class WebhookKit:
    """What ``HostileWebhookBattery`` hands a webhook channel's ``harness`` fixture, so the
    fixture is three lines (start the provider's fake, build the adapter, ``kit.run``)."""

    def __init__(self, gate: IngestGate, quarantine: KitQuarantine) -> None:
        self.gate = gate
        self.quarantine = quarantine

    @contextlib.asynccontextmanager
    async def run(self, provider: SendingProvider, factory: WebhookAdapterFactory, *,
                  sign: Signer, encode: Callable[[Any], bytes] = _encode_payload,
                  max_body_bytes: int = 64 * 1024,
                  **services: Any) -> AsyncIterator[ServedWebhook]:
        """Build the adapter from a context with the kit's quarantine (and any ``services``:
        ``deliveries=``, ``limiter=``, ``attachments=``...), start it with the kit's ingest
        and serve it; everything stops on exit, background tasks included."""
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
            task = asyncio.create_task(coro, name=name)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return task

        session = aiohttp.ClientSession()
        server: TestServer | None = None
        adapter: ChannelAdapter | None = None
        try:
            adapter = factory(AdapterContext(http=session, quarantine=self.quarantine,
                                             spawn=spawn, max_body_bytes=max_body_bytes,
                                             **services))
            await adapter.start(self.gate)
            app = web.Application()
            mount(app, adapter)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            yield ServedWebhook(adapter, server, session, provider, sign, encode)
        finally:
            if adapter is not None:
                await adapter.stop()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The client first, then the server: its keep-alive handlers end with the
            # connections.
            await session.close()
            if server is not None:
                await server.close()
