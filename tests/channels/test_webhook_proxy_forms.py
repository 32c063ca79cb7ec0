"""Contract v2 §9: signatures behind a reverse proxy, form bodies and custom acknowledgements.

A Twilio-style adapter (form body, ``X-Twilio-Signature`` over the public URL plus the sorted
parameters, empty TwiML back) and a Shopee-style one (``Authorization`` over
``callback_url|body``, empty 2xx back) run behind the base class, served on a local port while
the provider signed ``https://mycompany.com/...``: they verify only with ``hub.public_url``.
The expected signatures are Twilio's published test vectors (CHANNELS.md §3, token 12345).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.base import (
    AdapterContext,
    Capabilities,
    IngestOutcome,
    Parsed,
    WebhookAdapter,
    parse_form,
    url_variants,
)
from channels.errors import InvalidSignature, MalformedPayload
from channels.models import InboundMessage, OutboundReply
from channels.testing import MemoryKitStore
from hub import keys as K
from hub.config import ConfigError
from tests.helpers import running_hub

TOKEN = b"12345"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
          "To": "+18005551212", "Caller": "+14158675309"}
SIGNED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="          # https://mycompany.com/myapp.php?foo=1&bar=2
SIGNED_WITH_443 = "kvajT1Ptam85bY51eRf/AJRuM3w="  # https://mycompany.com:443/...
SIGNED_HTTP_80 = "0ZXoZLH/DfblKGATFgpif+LLRf4="   # http://mycompany.com:80/...
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class Nothing(msgspec.Struct):
    pass


def twilio_signature(url: str, form: Any) -> str:
    data = url + "".join(k + v for k in sorted(form) for v in sorted(form.getall(k)))
    return base64.b64encode(hmac.new(TOKEN, data.encode(), hashlib.sha1).digest()).decode()


class TwilioLike(WebhookAdapter):
    type_name: ClassVar[str] = "twilio-like"
    settings_type: ClassVar[type[Nothing]] = Nothing
    capabilities = Capabilities(max_text_length=1600)

    def verify(self, request: web.Request, body: bytes) -> None:
        form = self.form(request, body)
        given = request.headers.get("X-Twilio-Signature", "").encode()
        if not any(hmac.compare_digest(twilio_signature(url, form).encode(), given)
                   for url in self.signed_urls(request)):
            raise InvalidSignature("X-Twilio-Signature does not match")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        form = self.form(request, body)
        media = form.getall("MediaUrl", [])
        return [InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=form.get("CallSid", ""), thread_id=form.get("From", ""),
            sender_handle=form.get("From", ""), text=" ".join([form.get("Digits", ""), *media]))]

    def accepted(self, outcomes: Sequence[IngestOutcome]) -> web.StreamResponse:
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def deliver(self, reply: OutboundReply) -> str:
        return reply.reply_id


class ShopeeLike(WebhookAdapter):
    type_name: ClassVar[str] = "shopee-like"
    settings_type: ClassVar[type[Nothing]] = Nothing
    capabilities = Capabilities(max_text_length=1000)

    def verify(self, request: web.Request, body: bytes) -> None:
        url = self.signed_urls(request)[0]
        expected = hmac.new(TOKEN, url.encode() + b"|" + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(),
                                   request.headers.get("Authorization", "").encode()):
            raise InvalidSignature("Authorization does not match")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        data = msgspec.json.decode(body)
        return [InboundMessage(channel_type=self.type_name, channel_instance=self.instance,
                               provider_message_id=str(data["message_id"]), thread_id="t",
                               sender_handle="b", text=str(data["text"]))]

    def accepted(self, outcomes: Sequence[IngestOutcome]) -> web.StreamResponse:
        return web.Response(status=200)  # Shopee: 2xx with an empty body

    async def deliver(self, reply: OutboundReply) -> str:
        return reply.reply_id


class Served:
    def __init__(self, http: aiohttp.ClientSession, server: TestServer, store: MemoryKitStore,
                 quarantined: list[str], adapters: dict[str, WebhookAdapter]) -> None:
        self.http, self.server, self.store = http, server, store
        self.quarantined, self.adapters = quarantined, adapters

    def use_public_url(self, value: str | None) -> None:
        for adapter in self.adapters.values():
            adapter.context.public_url = value

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str,
                                                                                  str]:
        async with self.http.post(self.server.make_url(path), data=body,
                                  headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store, quarantined = MemoryKitStore(), []
    async with aiohttp.ClientSession() as http:

        async def quarantine(instance: str, raw: bytes, error: str, **_: Any) -> str:
            quarantined.append(error)
            return "q"

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("no background tasks")

        context = AdapterContext(http=http, quarantine=quarantine, spawn=spawn,
                                 public_url="https://mycompany.com")
        adapters: dict[str, WebhookAdapter] = {
            "/myapp.php": TwilioLike("sms", Nothing(), context),
            "/push": ShopeeLike("shopee", Nothing(), context),
        }
        app = web.Application()
        for path, adapter in adapters.items():
            await adapter.start(store.ingest)
            app.router.add_post(path, adapter.handle_webhook)
        server = TestServer(app)
        await server.start_server()
        try:
            yield Served(http, server, store, quarantined, adapters)
        finally:
            await server.close()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form_body(params: dict[str, str]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode()


@pytest.mark.parametrize("signature", [SIGNED, SIGNED_WITH_443])
async def test_twilio_signature_verifies_on_the_public_url(served: Served,
                                                           signature: str) -> None:
    status, ctype, text = await served.post(
        "/myapp.php?foo=1&bar=2", form_body(PARAMS), {**FORM, "X-Twilio-Signature": signature})
    assert status == 200, text
    assert ctype.startswith("text/xml") and text == EMPTY_TWIML  # no automatic SMS reply
    assert served.store._messages, "the message was stored before the TwiML answer"


async def test_without_public_url_the_proxied_request_does_not_verify(served: Served) -> None:
    served.use_public_url(None)  # request.url is http://127.0.0.1:<port>/..., not what was signed
    status, _, text = await served.post(
        "/myapp.php?foo=1&bar=2", form_body(PARAMS), {**FORM, "X-Twilio-Signature": SIGNED})
    assert status == 401 and "X-Twilio-Signature" in text
    assert not served.store._messages and not served.quarantined


async def test_http_public_url_with_default_port(served: Served) -> None:
    served.use_public_url("http://mycompany.com")
    status, _, text = await served.post(
        "/myapp.php?foo=1&bar=2", form_body(PARAMS),
        {**FORM, "X-Twilio-Signature": SIGNED_HTTP_80})
    assert status == 200, text


async def test_the_query_is_part_of_the_signed_url(served: Served) -> None:
    status, _, _ = await served.post(
        "/myapp.php?foo=1&bar=3", form_body(PARAMS), {**FORM, "X-Twilio-Signature": SIGNED})
    assert status == 401


async def test_repeated_form_keys_are_kept_and_signed(served: Served) -> None:
    body = (b"CallSid=SM1&From=%2B34600111222&MediaUrl=https%3A%2F%2Fm%2F2"
            b"&MediaUrl=https%3A%2F%2Fm%2F1")
    form = parse_form(body)
    assert form.getall("MediaUrl") == ["https://m/2", "https://m/1"]
    assert form["From"] == "+34600111222"
    signature = twilio_signature("https://mycompany.com/myapp.php", form)
    status, _, text = await served.post("/myapp.php", body,
                                        {**FORM, "X-Twilio-Signature": signature})
    assert status == 200, text
    [stored] = served.store._messages.values()
    assert stored.text == " https://m/2 https://m/1"


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    ("From=caf\u00e9".encode(), FORM["Content-Type"], "not ASCII"),
    (b"From=%zz", FORM["Content-Type"], "malformed %-escape"),
    (b"From=%ff%fe", FORM["Content-Type"], "UTF-8"),
    (b"From=a&&To=b", FORM["Content-Type"], "malformed"),
    (b"From=a", "application/json", "expected Content-Type"),
    (b"From=a", FORM["Content-Type"] + "; charset=iso-8859-1", "charset"),
    (b"&".join(b"k%d=v" % i for i in range(1001)), FORM["Content-Type"], "more than 1000"),
])
async def test_malformed_forms_are_refused_with_the_reason(
        served: Served, body: bytes, content_type: str, reason: str) -> None:
    status, _, text = await served.post("/myapp.php", body, {
        "Content-Type": content_type, "X-Twilio-Signature": SIGNED})
    assert status == 400 and reason in text, text
    # Refused in verify: unauthenticated input is answered, never kept.
    assert not served.quarantined and not served.store._messages


def test_form_helper_accepts_the_documented_inbound_shape() -> None:
    body = (b"MessageSid=SMxxxx&AccountSid=ACxxxx&From=%2B34600111222&To=%2B34911000000"
            b"&Body=Hola+%C2%BFqu%C3%A9+tal%3F&NumMedia=0&NumSegments=1&Empty=")
    form = parse_form(body)
    assert form["Body"] == "Hola ¿qué tal?" and form["Empty"] == ""
    assert list(form.keys())[:2] == ["MessageSid", "AccountSid"]
    assert parse_form(b"") == {}


async def test_shopee_empty_acknowledgement_over_the_public_url(served: Served) -> None:
    body = b'{"message_id": 77, "text": "ol\\u00e1"}'
    url = "https://mycompany.com/push"
    auth = hmac.new(TOKEN, url.encode() + b"|" + body, hashlib.sha256).hexdigest()
    async with served.http.post(served.server.make_url("/push"), data=body,
                                headers={"Authorization": auth}) as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    [stored] = served.store._messages.values()
    assert stored.text == "olá"
    bad = hmac.new(TOKEN, b"http://127.0.0.1/push|" + body, hashlib.sha256).hexdigest()
    status, _, _ = await served.post("/push", body, {"Authorization": bad})
    assert status == 401


def test_url_variants_toggle_only_default_ports() -> None:
    assert url_variants("https://h.example/p?q=1") == (
        "https://h.example/p?q=1", "https://h.example:443/p?q=1")
    assert url_variants("https://h.example:443/p") == ("https://h.example:443/p",
                                                       "https://h.example/p")
    assert url_variants("http://h.example/p") == ("http://h.example/p", "http://h.example:80/p")
    assert url_variants("https://h.example:8443/p") == ("https://h.example:8443/p",)


def test_malformed_payload_is_the_form_error() -> None:
    with pytest.raises(MalformedPayload):
        parse_form(b"a=%G0")


@pytest.mark.parametrize(("value", "reason"), [
    ("ftp://hub.example.com", "scheme must be"),
    ("https://user:pw@hub.example.com", "credentials"),
    ("https://hub.example.com/?x=1", "query or fragment"),
    ("https:///nohost", "no host"),
    ("https://hub example.com", "whitespace"),
])
def test_public_url_is_validated(make_config: Any, value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        make_config(overrides={"hub": {"public_url": value}})
    assert "hub.public_url" in str(info.value)


async def test_public_url_reaches_the_adapter_context(make_config: Any, tmp_path: Path) -> None:
    loaded = make_config(overrides={"hub": {"public_url": "https://hub.example.com/inbox"}})
    async with running_hub(loaded) as client:
        adapter = client.app[K.CHANNELS].get("shop")
        assert adapter is not None
        assert adapter.context.public_url == "https://hub.example.com/inbox"
