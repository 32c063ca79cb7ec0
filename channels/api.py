"""The generic API channel: operators' own systems post buyer messages and receive replies.

Inbound: ``POST /webhooks/api/{instance}`` with a JSON body and
``X-Inboxhub-Signature: sha256=<hex HMAC-SHA256 of the raw body with the instance secret>``.
With the optional ``X-Inboxhub-Timestamp: <UNIX seconds>`` header the signature covers
``<timestamp>.<raw body>`` instead (as Stripe and Slack sign), so the header cannot be swapped,
and a request older than ``max_timestamp_age_seconds`` (or as far in the future) is refused: a
captured request cannot be replayed after the dedupe window has forgotten its id.
``require_timestamp = true`` refuses requests without the header.
Attachments: inbound ``attachments: [{name, data (base64), content_type?}]``, judged on the
bytes against the channel's limits (413/415 with the reason, nothing stored); outbound the
same shape under ``attachments``.
Outbound: the reply is POSTed as JSON to the instance's ``outbound_url``, signed over the body,
with ``X-Inboxhub-Reply-Id`` so the operator's endpoint can drop a resend of the same reply;
redirects are not followed and the answer is read up to 64 KiB (``channels.http``).
Delivery status: the operator's system reports what became of a reply with
``POST /webhooks/api/{instance}/status``, signed exactly like inbound messages, JSON body
``{"id", "status", "error"?, "at"?}``: ``id`` is the id its endpoint answered for the reply,
or our reply id; ``status`` is ``sent | delivered | read | failed``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec
from aiohttp import web

from channels import http
from channels.base import Capabilities, ReplyWindow, WebhookAdapter
from channels.errors import InvalidSignature, MalformedPayload, PermanentError
from channels.models import (
    Attachment,
    ChannelHints,
    DeliveryUpdate,
    InboundMessage,
    OutboundReply,
)
from channels.secrets import Secret
from channels.signing import hmac_sha256_hex, verify_prefixed_hmac_sha256
from channels.windows import TemplateSpec

SIGNATURE_HEADER = "X-Inboxhub-Signature"
TIMESTAMP_HEADER = "X-Inboxhub-Timestamp"
REPLY_ID_HEADER = "X-Inboxhub-Reply-Id"
STATUS_PATH = "status"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

DEFAULT_ATTACHMENT_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic",
                            "application/pdf", "text/plain")
Handle = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
Tag = Annotated[str, msgspec.Meta(min_length=2, max_length=35)]


class ApiChannelSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    secret: Secret
    outbound_url: str
    max_text_length: int = 10_000
    reply_window_seconds: float | None = None
    timeout_seconds: float = 10.0
    default_market: str | None = None
    default_language: str | None = None
    # Replay protection (X-Inboxhub-Timestamp): optional unless required; the window applies
    # both ways, as clock skew.
    require_timestamp: bool = False
    max_timestamp_age_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # Templates the operator's system can send when the reply window is closed (forwarded as
    # "template": {name, language, parameters}); none: the channel takes no templates. Longer
    # windows a reply may use by carrying their tag (forwarded as "tag").
    templates: tuple[TemplateSpec, ...] = ()
    extended_windows: tuple[ReplyWindow, ...] = ()
    # Attachments both ways, base64 in the signed JSON body (inbound also bounded by
    # hub.max_body_bytes; the hub's attachments.max_bytes caps them too); judged on the type
    # the bytes show. max_attachments = 0: none.
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=1)] = 10 * 1024 * 1024
    max_attachments: Annotated[int, msgspec.Meta(ge=0, le=100)] = 10
    attachment_types: tuple[str, ...] = DEFAULT_ATTACHMENT_TYPES

    def __post_init__(self) -> None:
        window = self.reply_window_seconds
        if self.extended_windows and window is None:
            raise ValueError("extended_windows need a reply_window_seconds to extend")
        for w in self.extended_windows:
            if window is not None and w.seconds <= window:
                raise ValueError(f"extended window {w.tag!r} must be longer than "
                                 f"reply_window_seconds ({window:g})")
        seen = [(t.name, t.language) for t in self.templates]
        if len(seen) != len(set(seen)):
            raise ValueError("templates: a name and language appear twice")


class ApiAttachment(msgspec.Struct, frozen=True):
    """A file in the inbound body: ``data`` is base64; ``content_type`` is informative only
    (the hub judges the bytes)."""

    name: ShortText
    data: bytes
    content_type: ShortText | None = None


class ApiInbound(msgspec.Struct, frozen=True):
    """The documented inbound body; unknown fields are ignored for forward compatibility."""

    id: Handle
    sender: Handle
    text: Annotated[str, msgspec.Meta(max_length=100_000)]
    name: ShortText | None = None
    thread: Handle | None = None
    language: Tag | None = None
    market: Tag | None = None
    marketplace_site: ShortText | None = None
    order_id: ShortText | None = None
    sent_at: datetime | float | None = None
    attachments: Annotated[list[ApiAttachment], msgspec.Meta(max_length=100)] = []


class ApiStatus(msgspec.Struct, frozen=True):
    """A delivery-status callback from the operator's system; unknown fields are ignored."""

    id: Handle
    status: Literal["sent", "delivered", "read", "failed"]
    error: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    at: datetime | Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None


_inbound_decoder = msgspec.json.Decoder(ApiInbound)
_status_decoder = msgspec.json.Decoder(ApiStatus)
_json_encoder = msgspec.json.Encoder()


class ApiChannel(WebhookAdapter):
    """Signed JSON in, signed JSON out."""

    type_name: ClassVar[str] = "api"
    settings_type: ClassVar[type[ApiChannelSettings]] = ApiChannelSettings
    settings: ApiChannelSettings
    subpaths: ClassVar[frozenset[str]] = frozenset({STATUS_PATH})

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.capabilities = Capabilities(
            max_text_length=self.settings.max_text_length,
            reply_window_seconds=self.settings.reply_window_seconds,
            threading=True,
            extended_windows=self.settings.extended_windows,
            # With a reply window the operator's system sets the rules of a messaging
            # platform: writing first takes a template, as it does there.
            can_initiate=self.settings.reply_window_seconds is None,
            templates=bool(self.settings.templates),
            approved_templates=self.settings.templates,
            attachments=self.settings.max_attachments > 0,
            max_attachment_bytes=self.settings.max_attachment_bytes,
            max_attachments=self.settings.max_attachments,
            attachment_types=self.settings.attachment_types,
            delivery_receipts=True,
        )
        self._key = self.settings.secret.reveal_bytes()

    def verify(self, request: web.Request, body: bytes) -> None:
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
        stamp = request.headers.get(TIMESTAMP_HEADER)
        if stamp is None:
            if self.settings.require_timestamp:
                raise InvalidSignature(f"missing {TIMESTAMP_HEADER} header (this channel "
                                       "requires it)")
            if not verify_prefixed_hmac_sha256(self._key, body, header):
                raise InvalidSignature(f"{SIGNATURE_HEADER} does not match the body")
            return
        if not _TIMESTAMP.fullmatch(stamp):
            raise InvalidSignature(f"{TIMESTAMP_HEADER} must be UNIX seconds (ASCII digits)")
        if not verify_prefixed_hmac_sha256(self._key, stamp.encode() + b"." + body, header):
            raise InvalidSignature(f"{SIGNATURE_HEADER} does not match the timestamp and body "
                                   f"(with {TIMESTAMP_HEADER}, sign '<timestamp>.<body>')")
        age = time.time() - int(stamp)
        limit = self.settings.max_timestamp_age_seconds
        if abs(age) > limit:
            when = "old" if age > 0 else "in the future"
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is {abs(age):.0f} s {when}; this "
                                   f"channel accepts {limit:g} s")

    async def parse(self, request: web.Request,
                    body: bytes) -> Sequence[InboundMessage | DeliveryUpdate]:
        if request.match_info.get("path") == STATUS_PATH:
            return [self.parse_status(body)]
        try:
            data = _inbound_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise MalformedPayload(f"invalid message: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec reports bad UTF-8 inside strings as UnicodeDecodeError, not DecodeError.
            raise MalformedPayload(f"body is not valid UTF-8 JSON: {exc}") from None
        if len(data.text) > self.settings.max_text_length * 10:
            raise MalformedPayload("text is longer than this channel accepts")
        sent_at: float | None
        if isinstance(data.sent_at, datetime):
            if data.sent_at.tzinfo is None:
                raise MalformedPayload("sent_at must carry a time zone offset")
            sent_at = data.sent_at.timestamp()
        else:
            sent_at = data.sent_at
        attachments = await self._store_attachments(data.attachments)
        return [
            InboundMessage(
                channel_type=self.type_name,
                channel_instance=self.instance,
                provider_message_id=data.id,
                thread_id=data.thread or data.sender,
                sender_handle=data.sender,
                sender_name=data.name,
                text=data.text,
                attachments=attachments,
                sent_at=sent_at,
                received_at=time.time(),
                hints=ChannelHints(
                    language=data.language or self.settings.default_language,
                    market=data.market or self.settings.default_market,
                    marketplace_site=data.marketplace_site,
                    order_id=data.order_id,
                ),
            )
        ]

    async def _store_attachments(self, files: list[ApiAttachment]) -> tuple[Attachment, ...]:
        """Every file is judged before any is stored: a refusal (413/415 with the reason) keeps
        nothing, and the operator's system can send the message again without it."""
        if not files:
            return ()
        policy = self.attachment_policy
        policy.check_count(len(files))
        for item in files:
            policy.check(item.data, item.name)
        return tuple([await self.store_attachment(item.data, name=item.name)
                      for item in files])

    async def _outbound_attachments(self, reply: OutboundReply) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for item in reply.attachments:
            data = None
            if self.context.attachments is not None and item.storage_ref is not None:
                data = await self.context.attachments.get(item.storage_ref)
            if data is None:
                raise PermanentError(f"attachment {item.name!r} is no longer stored")
            out.append({"name": item.name, "content_type": item.content_type,
                        "size": item.size, "data": data})
        return out

    def parse_status(self, body: bytes) -> DeliveryUpdate:
        """The operator's delivery-status callback (``/webhooks/api/{instance}/status``)."""
        try:
            data = _status_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise MalformedPayload(f"invalid delivery status: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"body is not valid UTF-8 JSON: {exc}") from None
        at: float | None
        if isinstance(data.at, datetime):
            if data.at.tzinfo is None:
                raise MalformedPayload("at must carry a time zone offset")
            at = data.at.timestamp()
        else:
            at = data.at
        if data.error and data.status != "failed":
            raise MalformedPayload(f"error is only for status 'failed', not {data.status!r}")
        return DeliveryUpdate(channel_instance=self.instance, provider_message_id=data.id,
                              state=data.status, at=at, error=data.error or None)

    async def deliver(self, reply: OutboundReply) -> str:
        payload: dict[str, object] = {
            "reply_id": reply.reply_id,
            "conversation_id": reply.conversation_id,
            "channel_instance": reply.channel_instance,
            "thread": reply.thread_id,
            "recipient": reply.recipient_handle,
            "text": reply.text,
            "author": reply.author,
            "in_reply_to": reply.in_reply_to,
        }
        if reply.template is not None:
            payload["template"] = {"name": reply.template.name,
                                   "language": reply.template.language,
                                   "parameters": list(reply.template.parameters)}
        if reply.tag is not None:
            payload["tag"] = reply.tag
        if reply.attachments:
            payload["attachments"] = await self._outbound_attachments(reply)
        body = _json_encoder.encode(payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: "sha256=" + hmac_sha256_hex(self._key, body),
            REPLY_ID_HEADER: reply.reply_id,
        }
        answer = await http.post(self.context.http, self.settings.outbound_url, data=body,
                                 headers=headers, timeout=self.settings.timeout_seconds)
        return (None if answer.truncated else _provider_id(answer.body)) or reply.reply_id


def _provider_id(payload: bytes) -> str | None:
    """The operator may answer ``{"id": "..."}``; anything else means "use our reply id"."""
    if not payload:
        return None
    try:
        data = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str | int) and str(value):
            return str(value)[:256]
    return None


