"""Twilio Programmable Messaging (SMS/MMS): inbound webhooks, REST sends, status callbacks.

Twilio posts each inbound SMS as an ``application/x-www-form-urlencoded`` form to
``/webhooks/twilio/{instance}`` and expects TwiML back; the status of each message we sent
arrives at ``/webhooks/twilio/{instance}/status``, the ``StatusCallback`` every send names
(CHANNELS.md §3)::

    POST /webhooks/twilio/sms           X-Twilio-Signature: <base64 HMAC-SHA1>
         MessageSid=SM...&AccountSid=AC...&From=%2B34600111222&To=...&Body=Hola&NumMedia=0
         &FromCountry=ES...
    200  <?xml version="1.0" encoding="UTF-8"?><Response/>          (text/xml: no auto-reply)

    POST {api_base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json     (Basic auth)
         To=...&From=... (or MessagingServiceSid=MG...)&Body=...&StatusCallback=<public URL>
    201  {"sid": "SM...", "status": "queued", ...}
    4xx  {"code": 21211, "message": "...", "more_info": "...", "status": 400}

    POST /webhooks/twilio/sms/status    MessageSid=SM...&MessageStatus=delivered&ErrorCode=...

Every request is verified before anything is read from it: the signature covers the public
URL (``hub.public_url`` behind a proxy; with and without the default port) and every form
parameter, so parameters Twilio adds later are covered too. MessageSid is the idempotency key:
Twilio's retries (and a 50-fold redelivery storm) store one message.

An MMS (``NumMedia`` > 0) is not stored from the webhook: it becomes a ``FetchNotice`` for
its MessageSid, acknowledged at once, and the hub's fetch worker calls ``fetch``, which reads
the message and its media list from the REST API and downloads each file with the account's
Basic auth (Twilio media URLs may require it), so a slow download never makes Twilio's 15 s
webhook time out and retry. Only what was fetched is stored.

Segments (GSM-7 vs UCS-2, as Twilio bills them) are ``segments(text)``, re-exported here for
the reply box.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import mimetypes
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Final

import aiohttp
import msgspec
import phonenumbers
from aiohttp import web
from multidict import MultiDict

from channels.attachments import AttachmentRefused
from channels.base import (
    Capabilities,
    IngestCallback,
    IngestOutcome,
    Parsed,
    WebhookAdapter,
)
from channels.errors import (
    AuthError,
    ChannelError,
    InvalidSignature,
    MalformedPayload,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
)
from channels.http import read_capped, retry_after_seconds
from channels.models import (
    Attachment,
    ChannelHints,
    DeliveryState,
    DeliveryUpdate,
    DraftCheck,
    FetchNotice,
    InboundMessage,
    OutboundReply,
)
from channels.secrets import Secret
from channels.twilio.segments import SegmentInfo, segments, utf16_length
from channels.twilio.signature import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    signature_algorithm,
    signature_matches,
)

__all__ = ["EMPTY_TWIML", "SegmentInfo", "TwilioSettings", "TwilioSmsChannel", "segments"]

log = logging.getLogger(__name__)

EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
API_VERSION: Final = "2010-04-01"
STATUS_PATH: Final = "status"
MAX_BODY_CHARS: Final = 1600
MAX_MEDIA: Final = 10                   # Twilio accepts at most 10 media per message
MAX_MEDIA_BYTES: Final = 5 * 1024 * 1024  # and 5 MB in all for an MMS
MAX_INBOUND_TEXT: Final = 20_000        # far over any concatenated SMS; a guard, not a rule
MAX_API_ANSWER: Final = 256 * 1024

# SIDs are two letters and 32 hex digits (SM/MM messages, AC accounts, MG services, ME media).
_SID = r"[0-9a-fA-F]{32}"
_MESSAGE_SID: Final = re.compile(rf"(?:SM|MM){_SID}")
_MEDIA_SID: Final = re.compile(rf"ME{_SID}")
_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")

AccountSid = Annotated[str, msgspec.Meta(pattern=rf"^AC{_SID}$")]
ServiceSid = Annotated[str, msgspec.Meta(pattern=rf"^MG{_SID}$")]
# E.164, a short code, or an alphanumeric sender ID: Twilio decides which it takes.
Sender = Annotated[str, msgspec.Meta(
    pattern=r"^(?:\+[1-9][0-9]{1,14}|[0-9]{3,8}|[A-Za-z0-9 ]{1,11})$")]

# MessageStatus -> our delivery state. The states before "sent" (queued, accepted, scheduled,
# sending) and the inbound ones (receiving, received) change nothing: the hub's record of a
# send already says it is on its way.
STATUS_STATES: Final[dict[str, DeliveryState]] = {
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}

# The error codes an agent meets most often, in Twilio's words
# (https://www.twilio.com/docs/api/errors/{code}); any other code is shown by number.
ERROR_TITLES: Final[dict[str, str]] = {
    "21211": "Invalid 'To' Phone Number",
    "21408": "Permission to send an SMS has not been enabled for the region",
    "21610": "Attempt to send to unsubscribed recipient",
    "21611": "This 'From' number has exceeded the maximum number of queued messages",
    "21612": "The 'To' phone number is not currently reachable via SMS",
    "21614": "'To' number is not a valid mobile number",
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered",
    "30008": "Unknown error",
    "30034": "Message from an unregistered number",
}


def error_text(code: str | int | None, message: str | None = None) -> str:
    """``Twilio error 30003: Unreachable destination handset`` (the provider's own words)."""
    code_s = str(code) if code not in (None, "") else ""
    title = message or ERROR_TITLES.get(code_s)
    if not code_s:
        return f"Twilio: {title}" if title else "Twilio reported an error"
    return f"Twilio error {code_s}: {title}" if title else f"Twilio error {code_s}"


class TwilioSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``account_sid`` (``AC...``), ``auth_token`` (``env:``/``file:``), and exactly one of
    ``from_number`` (an E.164 number, short code or alphanumeric sender ID) and
    ``messaging_service_sid`` (``MG...``). ``api_base_url`` is Twilio's REST API; tests point
    it at a local server that speaks it."""

    account_sid: AccountSid
    auth_token: Secret
    from_number: Sender | None = None
    messaging_service_sid: ServiceSid | None = None
    api_base_url: str = "https://api.twilio.com"
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=120)] = 15.0
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    max_attachments: Annotated[int, msgspec.Meta(ge=0)] | None = None
    attachment_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one of from_number and messaging_service_sid")


class _ApiMessage(msgspec.Struct, frozen=True):
    """What ``fetch`` reads of a Message resource; everything else is ignored."""

    sid: str
    direction: str
    body: str | None = None
    sender: str | None = msgspec.field(default=None, name="from")
    num_media: str | int | None = None
    date_sent: str | None = None
    date_created: str | None = None


class _ApiMedia(msgspec.Struct, frozen=True):
    sid: str
    content_type: str = "application/octet-stream"


class _ApiMediaList(msgspec.Struct, frozen=True):
    media_list: list[_ApiMedia] = []


class _ApiError(msgspec.Struct, frozen=True):
    """Twilio's error shape (``{"code", "message", "more_info", "status"}``)."""

    code: int | str | None = None
    message: str | None = None
    more_info: str | None = None


_api_message = msgspec.json.Decoder(_ApiMessage)
_api_media = msgspec.json.Decoder(_ApiMediaList)
_api_error = msgspec.json.Decoder(_ApiError)


def _rfc2822(value: str | None) -> float | None:
    """Twilio's ``date_sent`` (``Wed, 02 Dec 2026 16:00:00 +0000``) as UNIX seconds."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def phone_country(number: str, from_country: str | None) -> str | None:
    """The buyer's country for the market hint: Twilio's ``FromCountry`` geo lookup when it
    names a real region, else the region the number's calling code and prefix belong to."""
    if from_country:
        code = from_country.strip().upper()
        if code in phonenumbers.SUPPORTED_REGIONS:
            return str(code)
    number = number.strip().removeprefix("whatsapp:")  # Twilio's WhatsApp senders
    if not _E164.fullmatch(number):
        return None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(parsed)
    if (not region or region == "ZZ") and parsed.country_code is not None:
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
    return str(region) if region and region != "ZZ" else None


def _one(form: MultiDict[str], *names: str, max_chars: int = 256) -> str | None:
    """The value of the first of ``names`` present (Twilio still sends the deprecated
    ``SmsSid``/``SmsStatus`` twins); a repeated or over-long value is malformed."""
    for name in names:
        values = form.getall(name, [])
        if len(values) > 1:
            raise MalformedPayload(f"{name} is given {len(values)} times")
        if values:
            if len(values[0]) > max_chars:
                raise MalformedPayload(f"{name} is longer than {max_chars} characters")
            return values[0]
    return None


def _required(form: MultiDict[str], *names: str, max_chars: int = 256) -> str:
    value = _one(form, *names, max_chars=max_chars)
    if value is None:
        raise MalformedPayload(f"missing {names[0]}")
    return value


class TwilioSmsChannel(WebhookAdapter):
    type_name: ClassVar[str] = "twilio"
    unique_settings: ClassVar[tuple[str, ...]] = ("from_number",)
    referable_settings: ClassVar[tuple[str, ...]] = ("account_sid", "from_number",
                                                     "messaging_service_sid")
    settings_type: ClassVar[type[TwilioSettings]] = TwilioSettings
    settings: TwilioSettings
    subpaths: ClassVar[frozenset[str]] = frozenset({STATUS_PATH})
    # ``parse`` reads the form, which needs its Content-Type, and the sub-path (kept by the
    # base class): a quarantined body parses again as what it was.
    replay_headers: ClassVar[tuple[str, ...]] = ("Content-Type",)
    capabilities = Capabilities(
        max_text_length=MAX_BODY_CHARS,
        can_initiate=True,
        # Inbound MMS media are fetched and stored; outbound media would need a public URL
        # for Twilio to download them from, which the hub does not serve (check_reply).
        attachments=True,
        max_attachment_bytes=MAX_MEDIA_BYTES,
        max_attachments=MAX_MEDIA,
        delivery_receipts=True,
        fetch_after_notify=True,
    )
    # The last form ``verify`` parsed, with the body it came from (``parse`` reuses it).
    _verified: tuple[bytes, MultiDict[str]] | None = None

    async def start(self, ingest: IngestCallback) -> None:
        await super().start(ingest)
        if not self.context.public_url:
            # Not fatal (a hub Twilio reaches directly verifies on request.url), but sends
            # then name no StatusCallback, so no delivery receipts arrive.
            log.warning("channel %s: hub.public_url is not set; Twilio's signatures are "
                        "checked against the request's own URL and sends ask for no status "
                        "callbacks", self.instance)

    # -- inbound ---------------------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER}")
        shared_key = SIGNATURE_SETTINGS_HEADER in request.headers
        if signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER)) != "HMAC_SHA1":
            raise InvalidSignature(f"signed with a shared key ({SIGNATURE_SETTINGS_HEADER}) "
                                   "and another algorithm; this channel verifies auth-token "
                                   "signatures only")
        form = self.form(request, body)  # a malformed form is a 400, never verified
        self._verified = (body, form)  # parse reads it again: once per request is enough
        token = self.settings.auth_token.reveal_bytes()
        if not signature_matches(token, self.signed_urls(request), form, given):
            raise InvalidSignature(
                f"{SIGNATURE_HEADER} does not match"
                + ("; it names a shared key, and this channel verifies with the auth token"
                   if shared_key else "; behind a proxy, set hub.public_url to the address "
                   "Twilio is configured with"))

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        verified = self._verified
        # the very bytes verify just parsed (identity, not equality: never another request's)
        form = verified[1] if verified is not None and verified[0] is body \
            else self.form(request, body)
        if request.match_info.get("path", "") == STATUS_PATH:
            return self._parse_status(form)
        return self._parse_message(form)

    def _parse_message(self, form: MultiDict[str]) -> Sequence[Parsed]:
        sid = _required(form, "MessageSid", "SmsSid")
        if not _MESSAGE_SID.fullmatch(sid):
            raise MalformedPayload("MessageSid is not a Twilio message SID")
        sender = _required(form, "From", max_chars=64)
        if not sender.strip():
            raise MalformedPayload("From is empty")
        num_media = _one(form, "NumMedia") or "0"
        if not (num_media.isascii() and num_media.isdigit()) or int(num_media) > MAX_MEDIA:
            raise MalformedPayload(f"NumMedia is not a count of 0-{MAX_MEDIA}")
        if int(num_media):
            # The files are fetched with the account's credentials after Twilio has its
            # answer; the message is stored from what the REST API returns.
            return [FetchNotice(resource=sid, dedupe_key=sid)]
        text = _one(form, "Body", max_chars=MAX_INBOUND_TEXT) or ""
        return [InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=sid, thread_id=sender, sender_handle=sender, text=text,
            hints=self._hints(sender, _one(form, "FromCountry", max_chars=8)),
        )]

    def _hints(self, sender: str, from_country: str | None) -> ChannelHints:
        return ChannelHints(phone_country=phone_country(sender, from_country))

    def _parse_status(self, form: MultiDict[str]) -> Sequence[Parsed]:
        sid = _required(form, "MessageSid", "SmsSid")
        status = _required(form, "MessageStatus", "SmsStatus", max_chars=64)
        state = STATUS_STATES.get(status.strip().lower())
        if state is None:
            return []  # queued, sending, accepted...: acknowledged, nothing to record
        error = None
        if state == "failed":
            code = _one(form, "ErrorCode", max_chars=16)
            error = error_text(code) if code else f"Twilio reported the message {status}"
        return [DeliveryUpdate(channel_instance=self.instance, provider_message_id=sid,
                               state=state, error=error)]

    def accepted(self, outcomes: Sequence[IngestOutcome]) -> web.StreamResponse:
        """Empty TwiML: stored, and no automatic reply (an agent answers)."""
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    # -- fetch after notify (MMS) ----------------------------------------------------------

    @property
    def _api(self) -> str:
        return (f"{self.settings.api_base_url.rstrip('/')}/{API_VERSION}/Accounts/"
                f"{self.settings.account_sid}")

    @property
    def _auth(self) -> dict[str, str]:
        pair = f"{self.settings.account_sid}:{self.settings.auth_token.reveal()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}

    async def _get(self, url: str, *, max_bytes: int = MAX_API_ANSWER,
                   auth: bool = True) -> tuple[aiohttp.ClientResponse, bytes, bool]:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        async with self.context.http.get(url, headers=self._auth if auth else {},
                                         timeout=timeout, allow_redirects=False) as resp:
            body, truncated = await read_capped(resp, max_bytes)
        return resp, body, truncated

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        if not _MESSAGE_SID.fullmatch(resource):
            raise PermanentError("the fetch resource is not a Twilio message SID")
        resp, body, _ = await self._get(f"{self._api}/Messages/{resource}.json")
        self._raise_for(resp, body)
        message = _api_message.decode(body)
        if message.sid != resource or message.direction != "inbound" or not message.sender:
            return []  # not a buyer's message: nothing to store
        resp, body, _ = await self._get(f"{self._api}/Messages/{resource}/Media.json")
        self._raise_for(resp, body)
        media = _api_media.decode(body).media_list[:MAX_MEDIA]
        attachments = [await self._download(resource, item) for item in media]
        return [InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=resource, thread_id=message.sender,
            sender_handle=message.sender, text=(message.body or "")[:MAX_INBOUND_TEXT],
            attachments=tuple(attachments),
            sent_at=_rfc2822(message.date_sent) or _rfc2822(message.date_created),
            hints=self._hints(message.sender, None),
        )]

    async def _download(self, message_sid: str, media: _ApiMedia) -> Attachment:
        """One file: ``GET .../Media/{sid}`` with Basic auth; Twilio may answer with a
        redirect to its media store, followed once without our credentials."""
        if not _MEDIA_SID.fullmatch(media.sid):
            raise PermanentError("the media list names a media SID Twilio does not mint")
        name = media.sid + (mimetypes.guess_extension(media.content_type.split(";")[0]) or "")
        limit = self.attachment_policy.max_bytes
        url = f"{self._api}/Messages/{message_sid}/Media/{media.sid}"
        resp, data, truncated = await self._get(url, max_bytes=limit)
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location", "")
            target = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(target).scheme not in ("https",
                                                            urllib.parse.urlsplit(url).scheme):
                raise PermanentError("media redirect to a non-HTTPS address refused")
            resp, data, truncated = await self._get(target, max_bytes=limit, auth=False)
        self._raise_for(resp, data)
        if truncated:
            refused = AttachmentRefused(f"file is larger than {limit} bytes", 413)
            return self.refused_attachment(name, media.content_type, limit + 1, refused)
        try:
            return await self.store_attachment(data, name=name)
        except AttachmentRefused as exc:
            return self.refused_attachment(name, media.content_type, len(data), exc)

    # -- outbound --------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        super().check_reply(reply, now=now)
        if reply.attachments:
            raise ReplyRejected("Twilio fetches outbound media from a public URL, which this "
                                "hub does not serve; send the text without attachments")
        if utf16_length(reply.text) > MAX_BODY_CHARS:
            raise ReplyRejected(f"reply is {utf16_length(reply.text)} UTF-16 characters "
                                f"(emoji count twice); Twilio allows {MAX_BODY_CHARS}")

    def check_draft(self, draft: OutboundReply, *, now: float) -> DraftCheck:
        """The reply box under an SMS draft: UTF-16 length against 1600, and the segments
        Twilio will bill (``segments``), with what forced UCS-2."""
        problem = self.draft_problem(draft, now=now)
        length = utf16_length(draft.text)
        if length > MAX_BODY_CHARS:
            # over the limit it cannot go anyway; segmenting 100k characters would hold the
            # event loop for a quarter of a second
            return DraftCheck(length=length, max_length=MAX_BODY_CHARS, fits=False,
                              problem=problem)
        info = segments(draft.text)
        return DraftCheck(length=length, max_length=MAX_BODY_CHARS,
                          fits=problem is None, problem=problem, segments=info.segments,
                          encoding=info.encoding, remaining=info.remaining,
                          unicode_characters=info.unicode_characters)

    def status_callback_url(self) -> str | None:
        """Where Twilio posts this instance's receipts: the hub's public address (Twilio signs
        exactly this URL); None without ``hub.public_url``, when no receipts can come."""
        base = self.context.public_url
        if not base:
            return None
        instance = urllib.parse.quote(self.instance, safe="")
        return f"{base.rstrip('/')}/webhooks/{self.type_name}/{instance}/{STATUS_PATH}"

    async def deliver(self, reply: OutboundReply) -> str:
        fields: list[tuple[str, str]] = [("To", reply.recipient_handle)]
        if self.settings.from_number is not None:
            fields.append(("From", self.settings.from_number))
        else:  # exactly one is set (TwilioSettings.__post_init__)
            fields.append(("MessagingServiceSid", self.settings.messaging_service_sid or ""))
        fields.append(("Body", reply.text))
        callback = self.status_callback_url()
        if callback is not None:
            fields.append(("StatusCallback", callback))
        data = urllib.parse.urlencode(fields).encode("ascii")
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        headers = {**self._auth, "Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        async with self.context.http.post(f"{self._api}/Messages.json", data=data,
                                          headers=headers, timeout=timeout,
                                          allow_redirects=False) as resp:
            body, _ = await read_capped(resp, MAX_API_ANSWER)
        self._raise_for(resp, body)
        try:
            sent = msgspec.json.decode(body)
        except msgspec.DecodeError:
            sent = None
        sid = sent.get("sid") if isinstance(sent, dict) else None
        # Created (2xx) is sent: without a readable sid, never resend what Twilio took.
        return sid if isinstance(sid, str) and sid else reply.reply_id

    # -- errors ----------------------------------------------------------------------------

    def _raise_for(self, resp: aiohttp.ClientResponse, body: bytes) -> None:
        """Twilio's answer to an error class, with Twilio's code and message (not the body of
        what we sent: the message never includes the buyer's text)."""
        status = resp.status
        if status < 300:
            return
        if status < 400:
            location = resp.headers.get("Location", "(no Location header)")[:200]
            raise PermanentError(f"HTTP {status} redirect to {location} not followed; check "
                                 "api_base_url")
        raise twilio_error(status, body, resp.headers)


def twilio_error(status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
    """An HTTP error answer of Twilio's REST API as the hub's error class: 429 rate limited
    (Retry-After honoured), 5xx retryable, 401/403 our credentials, other 4xx permanent; each
    says Twilio's code and message."""
    try:
        err = _api_error.decode(body)
        detail = error_text(err.code, err.message)
        if err.more_info:
            detail = f"{detail} ({err.more_info[:200]})"
    except (msgspec.DecodeError, msgspec.ValidationError):
        detail = f"Twilio answered HTTP {status}"
    detail = f"{detail} [HTTP {status}]"
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if status >= 500 or status in (408, 409, 425):
        return RetryableError(detail, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(detail)
    return PermanentError(detail)
