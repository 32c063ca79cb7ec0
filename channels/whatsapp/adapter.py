"""The WhatsApp Cloud API channel (CHANNELS.md §4).

Inbound: Meta posts to ``/webhooks/whatsapp/{instance}``, signed with ``X-Hub-Signature-256``
over the raw body and subscribed with the ``hub.challenge`` GET (both in
``channels.meta.MetaWebhookAdapter``). ``entry[].changes[]`` with ``field == "messages"``
carry ``value.messages[]`` (the buyer's) and ``value.statuses[]`` (receipts for ours) on the
same URL; other fields are acknowledged and ignored. Messages are keyed by their wamid, so
Meta's redeliveries (it retries for up to 7 days) store nothing twice; the buyer's profile name
is the sender name, the phone's country a routing hint, and the provider's ``timestamp`` the
message's ``sent_at``.

Media (image, video, audio, document, sticker) arrives as a media id only. The message is
stored at once (its caption, or a label naming the file), and a ``FetchNotice`` for the media
is queued: the hub's fetch worker calls ``fetch``, which asks ``GET /{media-id}`` for a
short-lived URL and downloads it with the access token; the file is stored as a second message
``<wamid>/media`` in the conversation (refused files as a placeholder with the reason). The
webhook answer does not wait on the download, and a failed download is kept in the fetch
queue for an operator, never lost.

Outbound: ``POST {api_base_url}/{phone_number_id}/messages``. Inside the 24-hour
customer-service window free text (up to 4096 characters), quoting the buyer's message;
outside it only an approved template from ``templates`` (name, language, parameters), which
the refusal names. Meta's re-engagement error 131047 maps to the same refusal; throttling
(429, 130429, 131056...) and Meta's 5xx are retried by the hub with backoff; other 4xx are
permanent with Meta's words.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import urllib.parse
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Final

import aiohttp
import msgspec
import phonenumbers
from aiohttp import web

from channels.attachments import AttachmentRefused
from channels.base import Capabilities, IngestCallback, Parsed, StoredRequest
from channels.errors import MalformedPayload, PermanentError, ReplyRejected, RetryableError
from channels.http import read_capped
from channels.meta import MetaWebhookAdapter
from channels.models import (
    Attachment,
    ChannelHints,
    DeliveryState,
    DeliveryUpdate,
    FetchNotice,
    InboundMessage,
    OutboundReply,
)
from channels.secrets import Secret
from channels.services.fetches import MAX_RESOURCE_LENGTH
from channels.services.limits import RateLimit
from channels.whatsapp import payloads as p
from channels.whatsapp.errors import graph_failure
from channels.windows import TemplateSpec, WindowClosed, templates_for

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL: Final = "https://graph.facebook.com/v21.0"
MAX_TEXT_LENGTH: Final = 4096
WINDOW_SECONDS: Final = 24 * 3600.0
# Meta's own caps: documents 100 MB, video 16 MB, images 5 MB; the hub's cap narrows this.
MAX_MEDIA_BYTES: Final = 100 * 1024 * 1024
MEDIA_SUFFIX: Final = "/media"
_MEDIA_INFO_BYTES: Final = 16 * 1024
_STATES: Final[dict[str, DeliveryState]] = {
    "sent": "sent", "delivered": "delivered", "read": "read", "played": "read",
    "failed": "failed",
}
_MEDIA_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789_-.")
_LABELS: Final = {"image": "image", "video": "video", "audio": "audio", "document": "document",
                  "sticker": "sticker"}

PhoneNumberId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")]


class WhatsAppSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[[channels]] type = "whatsapp"``; secrets as ``env:NAME`` or ``file:PATH``.

    ``templates``: the approved templates (``[[channels.settings.templates]]`` with ``name``,
    ``language`` as Meta spells it, e.g. ``es`` or ``pt_BR``, ``parameters``: a label per
    ``{{n}}`` of the body, optional ``body`` to show the sent text); the only way a reply goes
    out once the 24-hour window has closed.
    """

    access_token: Secret
    app_secret: Secret
    verify_token: Secret
    phone_number_id: PhoneNumberId
    api_base_url: str = DEFAULT_API_BASE_URL
    templates: tuple[TemplateSpec, ...] = ()
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    preview_url: bool = False
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=1)] = MAX_MEDIA_BYTES
    attachment_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.api_base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"api_base_url must be an http(s) URL, got {self.api_base_url!r}")
        seen = [(t.name, t.language) for t in self.templates]
        if len(seen) != len(set(seen)):
            raise ValueError("templates: a name and language appear twice")
        for t in self.templates:
            if t.language is None:
                raise ValueError(f"template {t.name!r} needs a language (WhatsApp templates "
                                 "are approved per language)")


@functools.lru_cache(maxsize=8192)
def phone_country(wa_id: str) -> str | None:
    """The ISO country of a WhatsApp id (E.164 digits without the plus), for routing;
    cached, since one buyer writes many messages and parsing a number is the adapter's
    costliest step (bench/webhooks)."""
    digits = wa_id.strip()
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        return None
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    if region in (None, "ZZ", "001") and number.country_code:
        region = phonenumbers.region_code_for_country_code(number.country_code)
    return region if region and region not in ("ZZ", "001") else None


def _timestamp(value: str | None) -> float | None:
    if value is None or not value.isdigit() or len(value) > 11:
        return None
    return float(value)


def _error_text(errors: Sequence[p.ProviderError]) -> str | None:
    """``code title: details`` for each provider error, as the agent should read them."""
    words = []
    for e in errors:
        text = " ".join(x for x in (str(e.code) if e.code is not None else None,
                                    e.title or e.message) if x)
        details = e.error_data.details if e.error_data is not None else None
        if details and details not in text:
            text = f"{text}: {details}" if text else details
        if text:
            words.append(text)
    return "; ".join(words)[:1000] or None


def wamid_of(provider_message_id: str) -> str:
    """The WhatsApp message id behind one of our stored ids (``<wamid>/media`` is the file of
    message ``<wamid>``): what a reply quotes."""
    return provider_message_id.removesuffix(MEDIA_SUFFIX)


class WhatsAppChannel(MetaWebhookAdapter):
    type_name: ClassVar[str] = "whatsapp"
    referable_settings: ClassVar[tuple[str, ...]] = ("phone_number_id",)
    unique_settings: ClassVar[tuple[str, ...]] = ("phone_number_id",)
    settings_type: ClassVar[type[WhatsAppSettings]] = WhatsAppSettings
    settings: WhatsAppSettings
    # The running instances of this process by phone number id: one Meta app posts every
    # number's changes to the one callback URL it has, so the instance that URL names hands
    # another number's changes to the instance configured for it (``_peer``).
    _by_number: ClassVar[dict[str, WhatsAppChannel]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = Capabilities(
            max_text_length=MAX_TEXT_LENGTH,
            reply_window_seconds=WINDOW_SECONDS,
            # Writing first (or after the window) takes an approved template.
            can_initiate=False,
            templates=True,
            approved_templates=self.settings.templates,
            # Inbound media; replies are text or templates only (checked in check_reply).
            attachments=True,
            max_attachment_bytes=MAX_MEDIA_BYTES,
            max_attachments=1,
            threading=True,
            delivery_receipts=True,
            fetch_after_notify=True,
            rate_limits=(
                RateLimit("account", 80.0, burst=80),          # per number, default tier
                RateLimit("recipient", 1 / 6, burst=45),       # pair limit to one user
            ),
        )
        self._base = self.settings.api_base_url.rstrip("/")

    async def start(self, ingest: IngestCallback) -> None:
        await super().start(ingest)
        WhatsAppChannel._by_number[self.settings.phone_number_id] = self

    async def stop(self) -> None:
        if WhatsAppChannel._by_number.get(self.settings.phone_number_id) is self:
            del WhatsAppChannel._by_number[self.settings.phone_number_id]
        await super().stop()

    def _peer(self, number: str) -> WhatsAppChannel | None:
        """The running instance for another number of the same Meta app (same app secret:
        the webhook was verified with it), else None."""
        peer = WhatsAppChannel._by_number.get(number)
        if peer is None or peer is self or not hmac.compare_digest(
                peer.settings.app_secret.reveal_bytes(), self.settings.app_secret.reveal_bytes()):
            return None
        return peer

    # -- helpers ---------------------------------------------------------------------------

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.access_token.reveal()}"}

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.settings.timeout_seconds)

    def template_hint(self, language: str | None = None) -> str:
        """The approved templates an agent can send instead of free text (those in
        ``language`` first, or only those, when any exist in it)."""
        specs = list(templates_for(self.capabilities, language))
        if not specs:
            return (" (none is configured for this channel: add one under "
                    "[[channels.settings.templates]])")
        names = ", ".join(f"{t.name} ({t.language}, {len(t.parameters)} parameter"
                          f"{'' if len(t.parameters) == 1 else 's'})" for t in specs[:10])
        return f": the reply's template (name, language, parameters), one of {names}"

    def templates_for(self, language: str | None) -> tuple[TemplateSpec, ...]:
        """The configured templates for a conversation's language (``es`` matches ``es`` and
        ``es_MX``); all of them when none is in that language (``channels.windows``)."""
        return templates_for(self.capabilities, language)

    # -- inbound ---------------------------------------------------------------------------

    async def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            envelope = p.envelope_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise MalformedPayload(f"not a WhatsApp webhook: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"body is not valid UTF-8 JSON: {exc}") from None
        if envelope.object != "whatsapp_business_account":
            raise MalformedPayload(f"object is {envelope.object[:60]!r}, not "
                                   "'whatsapp_business_account'")
        items: list[Parsed] = []
        for entry in envelope.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue  # template reviews, account updates...: not for the inbox
                try:
                    value = p.value_decoder.decode(change.value)
                except msgspec.ValidationError as exc:
                    raise MalformedPayload(f"messages change: {exc}") from None
                number = value.metadata.phone_number_id if value.metadata is not None else None
                if number is None or number == self.settings.phone_number_id:
                    items.extend(self._value(value))
                elif (peer := self._peer(number)) is not None:
                    items.extend(peer._value(value))
                elif value.messages:
                    await self._keep_unclaimed(request, envelope.object, entry.id, change,
                                               number)
                else:
                    # receipts of a number another system sends from: nothing of ours
                    log.info("channel %s: %d statuses for an unconfigured phone number id "
                             "ignored", self.instance, len(value.statuses))
        return items

    async def _keep_unclaimed(self, request: web.Request, kind: str, entry_id: str | None,
                              change: p.Change, number: str) -> None:
        """A change for a number no configured instance serves: kept in the quarantine (as
        an envelope of its own, so ``inboxhub quarantine retry`` parses it once the number
        is configured), never dropped: Meta does not send it again after our 200."""
        reason = (f"a change for WhatsApp phone number id {number[:32]}, which no configured "
                  "whatsapp instance of this Meta app serves; add one with that "
                  "phone_number_id, then retry this entry")
        if isinstance(request, StoredRequest):  # an operator's retry: still unclaimed
            raise MalformedPayload(reason)
        alone = msgspec.json.encode({"object": kind, "entry": [
            {"id": entry_id, "changes": [{"field": change.field, "value": change.value}]}]})
        await self.context.quarantine(self.instance, alone, reason)
        log.warning("channel %s: kept a change for an unconfigured phone number id in the "
                    "quarantine", self.instance)

    def _value(self, value: p.Value) -> list[Parsed]:
        names = {c.wa_id: c.profile.name for c in value.contacts
                 if c.wa_id and c.profile is not None and c.profile.name}
        items: list[Parsed] = []
        for message in value.messages:
            items.extend(self._message(message, names.get(message.sender)))
        for status in value.statuses:
            update = self._status(status)
            if update is not None:
                items.append(update)
        return items

    def _status(self, status: p.Status) -> DeliveryUpdate | None:
        state = _STATES.get(status.status)
        if state is None:
            return None  # "deleted", "warning" and future states: nothing to show
        error = _error_text(status.errors) if state == "failed" else None
        if state == "failed" and error is None:
            error = "WhatsApp reported the message as failed without a reason"
        return DeliveryUpdate(channel_instance=self.instance, provider_message_id=status.id,
                              state=state, at=_timestamp(status.timestamp), error=error)

    def _hints(self, wa_id: str) -> ChannelHints:
        return ChannelHints(phone_country=phone_country(wa_id))

    def _message(self, message: p.Message, name: str | None) -> list[Parsed]:
        if not message.sender.isdigit():
            raise MalformedPayload("a message's 'from' is not a WhatsApp id (digits)")
        text, notice = self._content(message)
        stored = InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=message.id, thread_id=message.sender,
            sender_handle=message.sender, sender_name=name, text=text,
            sent_at=_timestamp(message.timestamp), hints=self._hints(message.sender))
        return [stored] if notice is None else [stored, notice]

    def _content(self, m: p.Message) -> tuple[str, FetchNotice | None]:
        """The text the agent reads for a message, and the media to fetch, if any."""
        media = m.media()
        if media is not None:
            return self._media_text(m.type, media), self._media_notice(m, media)
        if m.type == "text" and m.text is not None:
            return m.text.body, None
        if m.type == "location" and m.location is not None:
            return self._location_text(m.location), None
        if m.type == "interactive" and m.interactive is not None:
            choice = m.interactive.button_reply or m.interactive.list_reply
            if choice is not None:
                text = choice.title
                if choice.description:
                    text = f"{text} ({choice.description})"
                return text, None
            return f"[interactive reply: {m.interactive.type or 'unknown'}]", None
        if m.type == "button" and m.button is not None:
            return m.button.text or m.button.payload or "[button]", None
        if m.type == "reaction" and m.reaction is not None:
            target = m.reaction.message_id or "a message"
            if m.reaction.emoji:
                return f"[reaction {m.reaction.emoji} to {target}]", None
            return f"[removed a reaction to {target}]", None
        if m.type == "contacts" and m.contacts:
            cards = []
            for c in m.contacts:
                phones = ", ".join(ph.phone for ph in c.phones if ph.phone)
                label = (c.name.formatted_name if c.name and c.name.formatted_name else
                         "unnamed")
                cards.append(f"{label}" + (f" {phones}" if phones else ""))
            return "[contact] " + "; ".join(cards), None
        if m.type == "system" and m.system is not None:
            return f"[system] {m.system.body or m.system.type or ''}".rstrip(), None
        # "unsupported", "order", future types: the agent sees that something came.
        reason = _error_text(m.errors)
        return f"[{m.type[:40]} message" + (f": {reason}" if reason else "") + "]", None

    @staticmethod
    def _location_text(loc: p.Location) -> str:
        where = ", ".join(x for x in (loc.name, loc.address) if x)
        text = "[location]" + (f" {where}" if where else "")
        if loc.latitude is not None and loc.longitude is not None:
            text += f" ({loc.latitude:.6f}, {loc.longitude:.6f})"
        if loc.url:
            text += f" {loc.url}"
        return text

    @staticmethod
    def _media_text(kind: str, media: p.Media) -> str:
        if media.caption:
            return media.caption
        label = "voice message" if media.voice else _LABELS.get(kind, kind)
        if media.filename:
            return f"[{label}: {media.filename[:200]}]"
        return f"[{label}]"

    def _media_notice(self, m: p.Message, media: p.Media) -> FetchNotice:
        if not set(media.id) <= _MEDIA_ID_CHARS or len(media.id) > 128:
            raise MalformedPayload("a media id has characters Meta does not use")
        query = {"wamid": m.id, "from": m.sender, "type": m.type,
                 "number": self.settings.phone_number_id}
        if m.timestamp:
            query["ts"] = m.timestamp
        if media.mime_type:
            query["mime"] = media.mime_type[:100]
        if media.sha256:
            query["sha256"] = media.sha256[:100]
        resource = f"media/{media.id}?{urllib.parse.urlencode(query)}"
        if media.filename:
            # The name is a nicety: it is shortened until the resource fits the queue's field.
            name = media.filename[:150]
            while name:
                named = f"{resource}&{urllib.parse.urlencode({'name': name})}"
                if len(named) <= MAX_RESOURCE_LENGTH:
                    resource = named
                    break
                name = name[:len(name) // 2]
        return FetchNotice(resource=resource, dedupe_key=f"media/{m.id}/{media.id}"[:512])

    # -- fetch: the media of a message -----------------------------------------------------

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        path, _, query_text = resource.partition("?")
        kind, _, media_id = path.partition("/")
        query = dict(urllib.parse.parse_qsl(query_text))
        if (kind != "media" or not media_id or not set(media_id) <= _MEDIA_ID_CHARS
                or not query.get("wamid") or not query.get("from", "").isdigit()):
            raise PermanentError(f"not a WhatsApp media resource: {resource[:100]!r}")
        number = query.get("number", self.settings.phone_number_id)
        if number != self.settings.phone_number_id:
            # another number of this app whose webhook came to this instance's URL
            peer = self._peer(number)
            if peer is None:
                raise PermanentError(f"media of phone number id {number[:32]}, which no "
                                     "running whatsapp instance of this app serves")
            return await peer.fetch(resource)
        attachment = await self._download(media_id, query)
        wa_id = query["from"]
        return [InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=query["wamid"] + MEDIA_SUFFIX, thread_id=wa_id,
            sender_handle=wa_id, text="", attachments=(attachment,),
            sent_at=_timestamp(query.get("ts")), hints=self._hints(wa_id))]

    def _file_name(self, media_id: str, query: dict[str, str], mime: str) -> str:
        if query.get("name"):
            return query["name"]
        subtype = mime.split("/", 1)[-1].split(";")[0].strip() or "bin"
        return f"{query.get('type', 'media')}-{media_id}.{subtype[:10]}"

    async def _download(self, media_id: str, query: dict[str, str]) -> Attachment:
        info_url = f"{self._base}/{media_id}"
        async with self.context.http.get(
                info_url, headers=self._auth, allow_redirects=False, timeout=self._timeout(),
                params={"phone_number_id": self.settings.phone_number_id}) as resp:
            body, _ = await read_capped(resp, _MEDIA_INFO_BYTES)
            if resp.status >= 300:
                raise graph_failure(resp.status, body, resp.headers)
        try:
            info = p.media_info_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RetryableError(f"GET /{media_id} answered no usable media URL: {exc}"
                                 ) from None
        mime = info.mime_type or query.get("mime") or "application/octet-stream"
        name = self._file_name(media_id, query, mime)
        policy = self.attachment_policy
        if info.file_size is not None and info.file_size > policy.max_bytes:
            return self.refused_attachment(name, mime, info.file_size, AttachmentRefused(
                f"the file is {info.file_size} bytes; this channel keeps at most "
                f"{policy.max_bytes}", 413))
        self._check_media_url(info.url)
        # A 100 MB video takes longer than one API call: the download may run as long as it
        # keeps moving (the fetch worker bounds the whole fetch), never stall.
        stall = self.settings.timeout_seconds
        download_timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
        async with self.context.http.get(info.url, headers=self._auth, allow_redirects=False,
                                         timeout=download_timeout) as resp:
            if resp.status >= 300:
                data, _ = await read_capped(resp, _MEDIA_INFO_BYTES)
                raise graph_failure(resp.status, data, resp.headers)
            data, truncated = await read_capped(resp, policy.max_bytes)
        if truncated:
            return self.refused_attachment(name, mime, policy.max_bytes + 1, AttachmentRefused(
                f"the file is larger than the {policy.max_bytes} bytes this channel keeps",
                413))
        expected = (info.sha256 or query.get("sha256") or "").lower()
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise RetryableError(f"media {media_id}: the download does not match its sha256")
        try:
            return await self.store_attachment(data, name=name)
        except AttachmentRefused as exc:
            return self.refused_attachment(name, mime, len(data), exc)

    def _check_media_url(self, url: str) -> None:
        """The download carries our access token: only over https, or to the configured
        Graph host itself (a local test server)."""
        parts = urllib.parse.urlsplit(url)
        base = urllib.parse.urlsplit(self._base)
        if parts.scheme == "https" and parts.netloc:
            return
        if (parts.scheme, parts.netloc) == (base.scheme, base.netloc):
            return
        raise PermanentError(f"media URL is not https ({parts.scheme or 'no scheme'}); "
                             "not sending the access token there")

    # -- outbound --------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        if reply.attachments:
            raise ReplyRejected("this WhatsApp channel sends text and templates only, not "
                                "files")
        try:
            super().check_reply(reply, now=now)
        except WindowClosed as exc:
            raise WindowClosed(f"{exc}{self.template_hint()}") from None

    def _payload(self, reply: OutboundReply) -> dict[str, Any]:
        base: dict[str, Any] = {"messaging_product": "whatsapp",
                                "recipient_type": "individual", "to": reply.recipient_handle}
        if reply.template is not None:
            ref = reply.template
            spec = next((t for t in self.settings.templates
                         if t.name == ref.name and t.language == ref.language), None)
            language = ref.language or (spec.language if spec is not None else None)
            template: dict[str, Any] = {"name": ref.name, "language": {"code": language}}
            if ref.parameters:
                template["components"] = [{"type": "body", "parameters": [
                    {"type": "text", "text": value} for value in ref.parameters]}]
            return {**base, "type": "template", "template": template}
        payload = {**base, "type": "text",
                   "text": {"body": reply.text, "preview_url": self.settings.preview_url}}
        if reply.in_reply_to:
            payload["context"] = {"message_id": wamid_of(reply.in_reply_to)}
        return payload

    async def deliver(self, reply: OutboundReply) -> str:
        url = f"{self._base}/{self.settings.phone_number_id}/messages"
        data = msgspec.json.encode(self._payload(reply))
        async with self.context.http.post(
                url, data=data, allow_redirects=False, timeout=self._timeout(),
                headers={**self._auth, "Content-Type": "application/json"}) as resp:
            if 300 <= resp.status < 400:
                raise PermanentError(f"HTTP {resp.status} redirect not followed: replies go "
                                     "only to the configured api_base_url")
            body, _ = await read_capped(resp, 64 * 1024)
            if resp.status >= 400:
                raise graph_failure(resp.status, body, resp.headers,
                                    template_hint=self.template_hint())
        try:
            answer = p.send_answer_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            answer = p.SendAnswer()
        if not answer.messages:
            # Accepted (2xx) but unnamed: retrying would send it twice; receipts cannot be
            # matched to it.
            log.warning("channel %s: send accepted without a message id", self.instance)
            return reply.reply_id
        return answer.messages[0].id
