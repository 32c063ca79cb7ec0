"""A minimal fetch-after-notify channel to copy when you write one (Mercado Libre's shape).

The provider's notification only names a resource; the message itself is fetched with the
account's token. ``provider.py`` is a local fake of this API::

    POST <hub>/webhooks/example-fetch/<instance>        X-Example-Signature: sha256=<hmac>
         {"id": "n-7", "topic": "messages", "resource": "m-1", "user_id": 123, ...}
    GET /messages/m-1                                    Authorization: Bearer <token>
    200 {"id": "m-1", "from": "ana", "name": "Ana", "chat": "c-1", "text": "hola",
         "sent_at": 1767225600}
    POST /send {"chat": "c-1", "to": "ana", "text": "..."}   ->   200 {"id": "s-1"}

``parse`` turns a notification into a ``FetchNotice`` (deduplicated by the notification's id)
and ignores whatever else its body says; the hub stores it, answers at once and its fetch
worker calls ``fetch``, which reads the resource and normalizes it. Retries, backoff, the
failed state and dedupe are the hub's. A provider with OAuth tokens reads them from
``self.context.tokens`` inside ``fetch`` instead of a fixed token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, ClassVar

import msgspec
from aiohttp import web

from channels.base import Capabilities, Parsed, WebhookAdapter
from channels.errors import InvalidSignature, MalformedPayload, RetryableError
from channels.http import post, read_capped
from channels.models import FetchNotice, InboundMessage, OutboundReply
from channels.secrets import Secret
from channels.signing import verify_prefixed_hmac_sha256

SIGNATURE_HEADER = "X-Example-Signature"
MAX_RESOURCE_BYTES = 256 * 1024
# The resource goes into a URL path: only ids the provider mints, never "../" or a host.
_RESOURCE = re.compile(r"[A-Za-z0-9_-]{1,128}")


class ExampleFetchSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    token: Secret
    secret: Secret
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0


class Notification(msgspec.Struct, frozen=True):
    """What the hub reads of a notification; every other field is ignored (not trusted)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    topic: str
    resource: str


class Message(msgspec.Struct, frozen=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    sender: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = msgspec.field(
        name="from")
    text: str
    chat: str | None = None
    name: str | None = None
    sent_at: float | None = None


_notification = msgspec.json.Decoder(Notification)
_message = msgspec.json.Decoder(Message)


class ExampleFetchChannel(WebhookAdapter):
    type_name: ClassVar[str] = "example-fetch"
    settings_type: ClassVar[type[ExampleFetchSettings]] = ExampleFetchSettings
    settings: ExampleFetchSettings
    capabilities = Capabilities(max_text_length=2000, threading=True, fetch_after_notify=True)

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token.reveal()}"}

    def verify(self, request: web.Request, body: bytes) -> None:
        if not verify_prefixed_hmac_sha256(self.settings.secret.reveal_bytes(), body,
                                           request.headers.get(SIGNATURE_HEADER)):
            raise InvalidSignature(f"{SIGNATURE_HEADER} is missing or does not match the body")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            notification = _notification.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"not a notification: {exc}") from None
        if notification.topic != "messages":
            return []  # a topic this channel does not subscribe to: acknowledged, ignored
        if not _RESOURCE.fullmatch(notification.resource):
            raise MalformedPayload("resource is not a message id")
        return [FetchNotice(resource=notification.resource, dedupe_key=notification.id)]

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        async with self.context.http.get(
            f"{self.settings.url}/messages/{resource}", headers=self._headers,
            allow_redirects=False,
        ) as resp:
            resp.raise_for_status()  # 401 -> AuthError, 404 -> PermanentError, 5xx -> retried
            body, truncated = await read_capped(resp, MAX_RESOURCE_BYTES)
        if truncated:
            raise RetryableError(f"resource larger than {MAX_RESOURCE_BYTES} bytes")
        message = _message.decode(body)  # unreadable: a PermanentError, kept as failed
        return [InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=message.id, thread_id=message.chat or message.sender,
            sender_handle=message.sender, sender_name=message.name, text=message.text,
            sent_at=message.sent_at,
        )]

    async def deliver(self, reply: OutboundReply) -> str:
        body = msgspec.json.encode({"chat": reply.thread_id, "to": reply.recipient_handle,
                                    "text": reply.text})
        answer = await post(self.context.http, f"{self.settings.url}/send", data=body,
                            headers={**self._headers, "Content-Type": "application/json"},
                            timeout=self.settings.timeout_seconds)
        sent = msgspec.json.decode(answer.body)
        return str(sent["id"]) if isinstance(sent, dict) and "id" in sent else reply.reply_id
