"""The contract every channel adapter implements.

An adapter turns provider traffic into ``InboundMessage`` objects handed to an ingest callback
that returns only once the message is durable, and turns an ``OutboundReply`` into a provider
call. It states its facts (``capabilities``) and implements only provider-specific parts; the
``@final`` methods here do the plumbing every channel shares: body limits, signature-first
handling, quarantine of unusable input, reply-rule checks and mapping of transport failures to
the error family in ``channels.errors``.

Two shapes of inbound exist:

* webhook adapters subclass ``WebhookAdapter`` and implement ``verify`` and ``parse``; the hub
  mounts them at ``/webhooks/{type}/{instance}``. Where the provider's notification only names
  a resource (Mercado Libre, Shopee, eBay), ``parse`` returns a ``FetchNotice``, which is
  stored and acknowledged at once, and the adapter implements ``fetch``, which the hub's fetch
  worker calls afterwards (``channels.fetching``);
* polling adapters (IMAP, Telegram getUpdates, marketplaces) subclass
  ``channels.polling.PollingAdapter`` and implement ``poll``; its supervised loop holds the
  account's lease and advances the cursor only after ``ingest`` returned for every message
  before it.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, ClassVar, Protocol, cast, final

import aiohttp
import msgspec
from aiohttp import web
from multidict import MultiDict

from channels.attachments import AttachmentPolicy, AttachmentRefused, safe_name
from channels.errors import (
    AuthError,
    ChannelError,
    InboundError,
    InvalidSignature,
    MalformedPayload,
    PayloadTooLarge,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
)
from channels.http import retry_after_seconds
from channels.models import (
    Attachment,
    DeliveryUpdate,
    DeliveryWatermark,
    DraftCheck,
    FetchNotice,
    InboundMessage,
    MessageEdit,
    OutboundReply,
)
from channels.services.attachments import AttachmentStore
from channels.services.cursors import CursorStore
from channels.services.edits import MessageEdits
from channels.services.fetches import FetchQueue, check_notice
from channels.services.health import HealthRecorder, PushSubscriptionRule, WebhookOutcome
from channels.services.leases import LeaseManager
from channels.services.limits import RateLimit, RateLimiter
from channels.services.receipts import DeliveryIndex, WatermarkIndex
from channels.services.threads import ThreadMemory
from channels.services.tokens import TokenStore
from channels.supervisor import Supervisor, describe
from channels.windows import (
    TemplateSpec,
    WindowState,
    check_template,
    check_window,
    templates_for,
    window_state,
)

log = logging.getLogger(__name__)

Parsed = InboundMessage | DeliveryUpdate | DeliveryWatermark | FetchNotice | MessageEdit
"""What ``parse`` yields (and ``fetch`` returns): buyer messages, receipts for our own
messages, and notices of resources to fetch."""


class IngestOutcome(Protocol):
    """What an ingest call tells the adapter (``storage.store.IngestResult`` satisfies it)."""

    @property
    def message_id(self) -> str: ...

    @property
    def conversation_id(self) -> str: ...

    @property
    def duplicate(self) -> bool: ...


class IngestCallback(Protocol):
    """Stores a message; returns only after it is durable, raises if it could not be stored.

    The hub's (``hub.ingest.Ingestor``) also has ``ingest_many`` (``BatchIngest``), which
    ``store_items`` uses for a run of messages; any other callback is called per message."""

    def __call__(self, message: InboundMessage) -> Awaitable[IngestOutcome]: ...


class BatchIngest(Protocol):
    """An ingest callback's optional batch form: the messages in order, in one round trip;
    returns only after every one is durable (its outcome per message, duplicates flagged) and
    raises if any could not be stored (those after it may be; a redelivery dedupes them)."""

    def ingest_many(self, messages: Sequence[InboundMessage],
                    ) -> Awaitable[Sequence[IngestOutcome]]: ...


class QuarantineCallback(Protocol):
    """Keeps an authentic but unusable body; ``headers`` are those ``parse`` needs to retry."""

    def __call__(self, channel_instance: str, raw: bytes, error: str, *,
                 headers: Mapping[str, str] | None = None) -> Awaitable[str]: ...


class ReplyWindow(msgspec.Struct, frozen=True):
    """An extended reply window that needs something on the reply: Messenger's ``HUMAN_AGENT``
    tag allows a human's reply for 7 days after the buyer's last message."""

    seconds: float
    tag: str


class Capabilities(msgspec.Struct, frozen=True):
    """Facts about a channel that the hub, the inbox UI and the kit rely on.

    ``reply_window_seconds``: free-form replies are allowed only this long after the buyer's
    last message (WhatsApp/Messenger 24 h, eBay 90 days); ``None`` means no window.
    ``extended_windows``: longer windows a reply may use by carrying their tag.
    ``can_initiate``: the seller may write first, outside any window (email yes; WhatsApp only
    with a template, Mercado Libre only with a reason template). ``templates``: approved
    templates are how a reply goes out when free text is not allowed.
    ``attachment_types``: MIME allow-list for attachments (empty: any the channel takes;
    ``image/*`` a family), judged on the sniffed type (``channels.attachments``); settings
    named ``max_attachment_bytes``, ``max_attachments``, ``attachment_types`` and the hub's
    cap narrow them (``ChannelAdapter.attachment_policy``).
    ``rate_limits``: what the provider allows; the hub's shared limiter enforces them before
    every send. ``delivery_receipts``: the provider reports delivered/read/failed.
    ``fetch_after_notify``: the provider's notifications only name a resource; ``parse``
    returns ``FetchNotice``s and the adapter implements ``fetch`` (the hub's fetch worker
    calls it).
    ``push_subscription``: when the provider stops pushing to us because we answered badly
    (``PushSubscriptionRule.shopee()``, ``.mercadolibre()``); the hub raises an alert before it
    does, since pushes it drops are never sent again.
    """

    max_text_length: int
    reply_window_seconds: float | None = None
    extended_windows: tuple[ReplyWindow, ...] = ()
    can_initiate: bool = True
    templates: bool = False
    attachments: bool = False
    max_attachment_bytes: int = 0
    max_attachments: int = 0
    attachment_types: tuple[str, ...] = ()
    threading: bool = False
    html: bool = False
    rate_limits: tuple[RateLimit, ...] = ()
    delivery_receipts: bool = False
    # Receipts come as watermarks per recipient (``DeliveryWatermark``): the sender records
    # each send's provider id per recipient for them.
    watermark_receipts: bool = False
    approved_templates: tuple[TemplateSpec, ...] = ()
    fetch_after_notify: bool = False
    push_subscription: PushSubscriptionRule | None = None


class AdapterContext:
    """Shared resources the app creates once and injects; an adapter never builds its own.

    ``http`` is the hub's one client session; ``loops`` runs an adapter's background loops
    under the hub's supervisor (``channels.supervisor``); ``public_url`` is the hub's address
    as providers see it (behind a reverse proxy ``request.url`` is not what Twilio and Shopee
    signed). The services (``channels.services``) are None where the hub does not offer them:
    an adapter that needs one says so at start-up. ``max_attachment_bytes`` is the hub's cap
    on any one attachment (``attachments.max_bytes``), over every channel's own limit.
    ``threads`` is what an adapter remembers about its threads across processes (email's
    subject fallback and parent headers, ``channels.services.threads``); ``edits`` applies a
    buyer's edit to the stored message (``MessageEdit``).
    ``health`` is where the plumbing counts webhook answers and polls (``channels.services.
    health``); adapters themselves never call it.
    """

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        quarantine: QuarantineCallback,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
        max_body_bytes: int = 1024 * 1024,
        public_url: str | None = None,
        loops: Supervisor | None = None,
        cursors: CursorStore | None = None,
        leases: LeaseManager | None = None,
        tokens: TokenStore | None = None,
        limiter: RateLimiter | None = None,
        attachments: AttachmentStore | None = None,
        deliveries: DeliveryIndex | None = None,
        fetches: FetchQueue | None = None,
        threads: ThreadMemory | None = None,
        edits: MessageEdits | None = None,
        max_attachment_bytes: int | None = None,
        health: HealthRecorder | None = None,
    ) -> None:
        self.http = http
        self.quarantine = quarantine
        self.spawn = spawn
        self.max_body_bytes = max_body_bytes
        self.public_url = public_url
        self.loops = loops
        self.cursors = cursors
        self.leases = leases
        self.tokens = tokens
        self.limiter = limiter
        self.attachments = attachments
        self.deliveries = deliveries
        self.fetches = fetches
        self.threads = threads
        self.edits = edits
        self.max_attachment_bytes = max_attachment_bytes
        self.health = health


class ChannelAdapter(abc.ABC):
    """Base class of every channel; one instance per configured channel instance."""

    type_name: ClassVar[str]
    settings_type: ClassVar[type[Any]]
    capabilities: Capabilities
    webhook_methods: ClassVar[frozenset[str]] = frozenset()
    # Its provider calls carry OAuth tokens from ``context.tokens`` (``channels.tokens``): the
    # operator loads them with ``inboxhub channels auth INSTANCE``.
    uses_oauth_tokens: ClassVar[bool] = False
    # Settings that are not secrets but may be given as ``env:NAME`` / ``file:PATH`` as well
    # as literally (``channels.secrets.resolve_references``): ids operators script per
    # environment, such as WhatsApp's ``phone_number_id``.
    referable_settings: ClassVar[tuple[str, ...]] = ()
    # Settings no two instances of this type may share (a WhatsApp number, a bot's token):
    # two instances on one provider account would each take the other's traffic.
    unique_settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def oauth_for(cls, settings: Any) -> bool:
        """Whether an instance configured with ``settings`` (its settings Struct, or the raw
        ``[channels.settings]`` table) uses the token store. ``uses_oauth_tokens`` unless a
        setting decides it (email's ``imap_auth = "xoauth2"``)."""
        return cls.uses_oauth_tokens

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        self.instance = instance
        self.settings = settings
        self.context = context
        self._ingest: IngestCallback | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, ingest: IngestCallback) -> None:
        """Begin accepting inbound traffic; pollers override this to spawn their loop."""
        if self.capabilities.fetch_after_notify and self.context.fetches is None:
            raise RuntimeError(f"channel {self.instance} fetches after notify and needs the "
                               "hub's fetch queue in its AdapterContext")
        self._ingest = ingest

    async def stop(self) -> None:
        """Stop inbound traffic; in-flight ingests finish, nothing new is accepted."""
        self._ingest = None

    @property
    def ingest(self) -> IngestCallback:
        if self._ingest is None:
            raise RuntimeError(f"channel {self.instance} is not started")
        return self._ingest

    async def apply_watermark(self, watermark: DeliveryWatermark) -> None:
        """Hand a watermark to the hub's index of sends per recipient (raises if it could not
        be recorded); a hub without one keeps nothing of it."""
        index = self.context.deliveries
        if not isinstance(index, WatermarkIndex):
            log.info("channel %s: a delivery watermark is not recorded (this hub keeps no "
                     "sends per recipient)", self.instance)
            return
        await index.apply_watermark(watermark)

    async def apply_delivery(self, update: DeliveryUpdate) -> None:
        """Hand a receipt to the hub's delivery index (raises if it could not be recorded, so
        the provider delivers it again)."""
        if self.context.deliveries is None:
            raise RuntimeError("this hub records no delivery receipts")
        await self.context.deliveries.apply(update)

    # -- inbound: storing what parse, poll or fetch returned -------------------------------

    async def queue_fetch(self, notice: FetchNotice) -> bool:
        """Store a notification that names a resource to fetch (False: a repeat); raises if it
        could not be stored, so the provider delivers it again."""
        if self.context.fetches is None:
            raise RuntimeError("this hub queues no fetches")
        if not self.capabilities.fetch_after_notify:
            raise TypeError(f"{self.type_name} returned a FetchNotice but does not declare "
                            "Capabilities.fetch_after_notify")
        return await self.context.fetches.notify(self.instance, notice.resource,
                                                 dedupe_key=notice.dedupe_key)

    @final
    async def store_items(self, items: Sequence[Parsed],
                          ingest: IngestCallback | None = None) -> list[IngestOutcome]:
        """Store what ``parse`` or ``fetch`` returned, in order: messages through the ingest
        callback (``ingest``, default the one the adapter was started with), receipts through
        the delivery index, fetch notices into the fetch queue. Raises on the first item that
        could not be stored; the caller does not acknowledge (what was stored before it is
        deduplicated when the provider delivers again). A run of two or more consecutive
        messages goes through the callback's ``ingest_many`` when it has one (``BatchIngest``:
        same order and outcomes, one round trip)."""
        store = self.ingest if ingest is None else ingest
        many = getattr(store, "ingest_many", None)
        outcomes: list[IngestOutcome] = []
        run: list[InboundMessage] = []
        for index, item in enumerate(items):
            if isinstance(item, InboundMessage) and many is not None:
                run.append(item)
                following = items[index + 1] if index + 1 < len(items) else None
                if isinstance(following, InboundMessage):
                    continue
                if len(run) == 1:
                    outcomes.append(await store(run[0]))
                else:
                    stored = await many(run)
                    if len(stored) != len(run):
                        raise RuntimeError(f"ingest_many returned {len(stored)} outcomes for "
                                           f"{len(run)} messages")
                    outcomes.extend(stored)
                run = []
            elif isinstance(item, InboundMessage):
                outcomes.append(await store(item))
            elif isinstance(item, DeliveryUpdate):
                await self.apply_delivery(item)
            elif isinstance(item, FetchNotice):
                await self.queue_fetch(item)
            elif isinstance(item, DeliveryWatermark):
                await self.apply_watermark(item)
            elif isinstance(item, MessageEdit):
                edits = self.context.edits
                if edits is None or not await edits.apply(item):
                    outcomes.append(await store(item.fallback))
            else:
                raise TypeError(f"got a {type(item).__name__}; expected InboundMessage, "
                                "DeliveryUpdate, DeliveryWatermark, FetchNotice or "
                                "MessageEdit")
        return outcomes

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        """Fetch what a ``FetchNotice`` named, for an adapter with
        ``Capabilities.fetch_after_notify``; the hub's fetch worker calls it (through
        ``fetch_resource``) after the notification was acknowledged.

        Call the provider's API with the account's credentials (``context.tokens`` for OAuth
        providers) and return the normalized items exactly as ``parse`` would: messages,
        receipts, even further notices. They are stored like parsed webhook items. Raise a
        ``RetryableError`` (a ``TokenExpired``, a 5xx, a timeout: retried with capped, jittered
        backoff) or a ``PermanentError`` (``AuthError``, a 404: the entry is kept as failed
        for an operator to retry); transport errors are classified by ``map_error``. Return
        an empty sequence when the resource turns out not to concern us.
        """
        raise NotImplementedError(f"{self.type_name} does not fetch resources")

    @final
    async def fetch_resource(self, resource: str) -> Sequence[Parsed]:
        """``fetch``, with every failure a ``ChannelError`` (what the fetch worker decides
        on): transport errors through ``map_error``, anything else a ``PermanentError``."""
        if not self.capabilities.fetch_after_notify:
            raise PermanentError(f"{self.type_name} does not fetch after notify")
        try:
            return await self.fetch(resource)
        except ChannelError:
            raise
        except Exception as exc:
            raise self.map_error(exc) from exc

    # -- inbound (webhooks) ----------------------------------------------------------------

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    # -- outbound --------------------------------------------------------------------------

    @final
    async def send(self, reply: OutboundReply, *, now: float | None = None) -> str:
        """Deliver a reply; returns the provider's message id or raises a ``ChannelError``."""
        self.check_reply(reply, now=time.time() if now is None else now)
        try:
            return await self.deliver(reply)
        except ChannelError:
            raise
        except Exception as exc:  # every other failure becomes a classified one
            raise self.map_error(exc) from exc

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        """Reject what the provider would refuse, before spending a request on it.

        Free text goes inside the reply window; outside it only within an extended window
        whose tag the reply carries; otherwise only an approved template (checked against
        ``approved_templates``), and a refusal says which of these the agent can use.
        """
        caps = self.capabilities
        if reply.template is not None:
            check_template(caps, reply.template, self.type_name)
        elif not reply.text.strip() and not reply.attachments:
            raise ReplyRejected("reply is empty")
        elif len(reply.text) > caps.max_text_length:
            raise ReplyRejected(
                f"reply is {len(reply.text)} characters; {self.type_name} allows "
                f"{caps.max_text_length}"
            )
        if reply.attachments:
            self._check_outbound_attachments(reply.attachments)
        check_window(caps, reply, now, self.type_name)

    def check_draft(self, draft: OutboundReply, *, now: float) -> DraftCheck:
        """The reply box's view of a draft (``DraftCheck``): its length and limit, and the
        refusal ``check_reply`` would give for its text, recipient and files. The reply
        window is not judged here (the conversation's ``reply_window`` says it). A channel
        that counts otherwise (UTF-16 units, SMS segments, split parts) overrides this,
        calling ``draft_problem`` for the refusal."""
        return DraftCheck(length=len(draft.text), max_length=self.capabilities.max_text_length,
                          fits=(problem := self.draft_problem(draft, now=now)) is None,
                          problem=problem)

    def draft_problem(self, draft: OutboundReply, *, now: float) -> str | None:
        """Why ``check_reply`` would refuse ``draft`` if the window were open, else None."""
        probe = msgspec.structs.replace(draft, last_inbound_at=now)
        try:
            self.check_reply(probe, now=now)
        except ReplyRejected as exc:
            return str(exc)
        return None

    @property
    def attachment_policy(self) -> AttachmentPolicy:
        """The capabilities' attachment limits, narrowed by the channel's settings (fields
        ``max_attachment_bytes``, ``max_attachments``, ``attachment_types``, where its settings
        have them) and by the hub's cap; never widened."""
        caps = self.capabilities
        policy = AttachmentPolicy(
            max_bytes=caps.max_attachment_bytes if caps.attachments else 0,
            max_count=caps.max_attachments if caps.attachments else 0,
            types=caps.attachment_types)
        types = getattr(self.settings, "attachment_types", None)
        policy = policy.narrowed(
            max_bytes=getattr(self.settings, "max_attachment_bytes", None),
            max_count=getattr(self.settings, "max_attachments", None),
            types=tuple(types) if types is not None else None)
        return policy.narrowed(max_bytes=self.context.max_attachment_bytes)

    def _check_outbound_attachments(self, attachments: Sequence[Attachment]) -> None:
        if not self.capabilities.attachments:
            raise ReplyRejected(f"{self.type_name} does not accept attachments")
        policy = self.attachment_policy
        try:
            policy.check_count(len(attachments))
        except AttachmentRefused as exc:
            raise ReplyRejected(exc.reason) from None
        for item in attachments:
            if item.storage_ref is None:
                raise ReplyRejected(f"attachment {item.name!r} has no stored file")
            if item.size > policy.max_bytes:
                raise ReplyRejected(f"attachment {item.name!r} is {item.size} bytes; "
                                    f"{self.type_name} allows {policy.max_bytes}")
            if not policy.allows_type(item.content_type):
                raise ReplyRejected(f"attachment {item.name!r} is {item.content_type}; "
                                    f"{self.type_name} takes {', '.join(policy.types)}")

    async def store_attachment(self, data: bytes, *, name: str) -> Attachment:
        """Check an inbound file against ``attachment_policy`` and store it; the returned
        ``Attachment`` (sniffed type, safe name) goes on the ``InboundMessage``. Raises
        ``AttachmentRefused`` with the reason: a webhook answers it (413/415, not kept in
        quarantine: the sender still has the file). An adapter whose provider must get a 2xx
        keeps the message instead with ``refused_attachment``."""
        content_type = self.attachment_policy.check(data, name)
        if self.context.attachments is None:
            raise AttachmentRefused("this hub stores no attachments", 415)
        return await self.context.attachments.put(data, name=safe_name(name),
                                                  content_type=content_type)

    @staticmethod
    def refused_attachment(name: str, declared_type: str, size: int,
                           error: AttachmentRefused) -> Attachment:
        """A placeholder for a file the channel refused: the agent sees what and why."""
        return Attachment(name=safe_name(name), content_type=declared_type[:100] or
                          "application/octet-stream", size=size, refused=error.reason)

    def reply_window(self, last_inbound_at: float | None, now: float) -> WindowState:
        """What a reply may be now (the same rules ``check_reply`` enforces), for the inbox."""
        return window_state(self.capabilities, last_inbound_at, now)

    async def templates_for_thread(self, thread_id: str,
                                   language: str | None) -> tuple[TemplateSpec, ...]:
        """The templates an agent can send in this conversation now, for the inbox.

        Most channels declare theirs once (``approved_templates``, picked by language); a
        marketplace whose reasons differ per order and are spent as they are used (Mercado
        Libre's action guide) reads them from the provider here. May raise a
        ``ChannelError``: the inbox then shows the declared ones."""
        return templates_for(self.capabilities, language)

    @abc.abstractmethod
    async def deliver(self, reply: OutboundReply) -> str:
        """Provider-specific send; may raise anything, ``map_error`` classifies it."""

    def map_error(self, exc: BaseException) -> ChannelError:
        """Default mapping of transport failures; adapters extend it for provider codes."""
        return map_http_error(exc)


def map_http_error(exc: BaseException) -> ChannelError:
    """HTTP and connection failures to the error family (shared by HTTP-based adapters)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        status = exc.status
        detail = f"HTTP {status} {exc.message}".strip()
        if status == 429:
            retry_after = None
            if exc.headers is not None:
                retry_after = retry_after_seconds(exc.headers.get("Retry-After"))
            return RateLimited(detail, retry_after=retry_after)
        if status in (401, 403):
            return AuthError(detail)
        if status in (408, 409, 425) or status >= 500:
            return RetryableError(detail)
        return PermanentError(detail)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetryableError("timed out")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return RetryableError(f"connection failed: {type(exc).__name__}")
    return PermanentError(f"unexpected error: {type(exc).__name__}: {exc}")


# Kept with a quarantined body that came to a sub-path, beside the replay headers, so a retry
# parses it as what it was (a Twilio status callback, not a message). Not a valid HTTP/1.1
# field name, so no request header can pose as it.
STORED_PATH_KEY = ":path"


class StoredRequest:
    """What ``parse`` sees when a quarantined body is parsed again: the kept headers only (and
    the sub-path it was posted to, as ``match_info["path"]``)."""

    method = "POST"

    def __init__(self, headers: Mapping[str, str]) -> None:
        kept = dict(headers)
        path = kept.pop(STORED_PATH_KEY, None)
        self.headers: Mapping[str, str] = kept
        self.query: Mapping[str, str] = {}
        self.match_info: Mapping[str, str] = {"path": path} if path else {}


class WebhookAdapter(ChannelAdapter):
    """An adapter fed by provider POSTs: size limit, verify, parse, store, then acknowledge.

    ``verify`` and ``parse`` may be coroutines (eBay fetches a public key by ``kid``, cached).
    ``parse`` returns messages, delivery updates and fetch notices; messages are ingested,
    updates applied through ``context.deliveries``, notices stored in ``context.fetches`` (a
    provider whose notifications only name a resource: the worker fetches it later, see
    ``fetch``), and only then is the provider answered (``accepted``: JSON
    by default; an adapter returns what its provider expects, e.g. empty TwiML). A provider
    that posts to more than one URL per instance (Twilio's ``StatusCallback``) is served under
    ``/webhooks/{type}/{instance}/{path}`` for each path in ``subpaths``; ``parse`` reads
    ``request.match_info.get("path", "")``.
    """

    webhook_methods: ClassVar[frozenset[str]] = frozenset({"POST"})
    subpaths: ClassVar[frozenset[str]] = frozenset()
    # Request headers ``parse`` reads (e.g. an event-type header): kept with a quarantined body
    # so ``inboxhub quarantine retry`` can parse it again after a fix. ``parse`` must read no
    # other part of the request, or the adapter overrides ``reparse``.
    replay_headers: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def verify(self, request: web.Request, body: bytes) -> Awaitable[None] | None:
        """Raise ``InvalidSignature`` unless the raw body is authentic (constant-time)."""

    @abc.abstractmethod
    def parse(self, request: web.Request,
              body: bytes) -> Sequence[Parsed] | Awaitable[Sequence[Parsed]]:
        """Normalize an authentic body; raise ``MalformedPayload`` with a reason if unusable."""

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        """Provider verification handshakes (Meta hub.challenge, eBay challenge_code)."""
        raise web.HTTPMethodNotAllowed(request.method, sorted(self.webhook_methods))

    async def reparse(self, body: bytes, headers: Mapping[str, str]) -> Sequence[Parsed]:
        """Parse a body that was verified on arrival and quarantined (operator's retry)."""
        try:
            return await self.parse_or_explain(cast(web.Request, StoredRequest(headers)), body)
        except AttachmentRefused as exc:  # kept: the retry reports it like any other reason
            raise MalformedPayload(exc.reason) from None

    @final
    async def parse_or_explain(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        """``parse``, with every failure a ``MalformedPayload``: an authentic body that trips
        the parser (msgspec's RecursionError on 5,000 nested arrays, a bug in an adapter) is
        kept in quarantine with a reason and answered 400, never a 500 that loses it."""
        try:
            parsed = self.parse(request, body)
            if inspect.isawaitable(parsed):
                parsed = await parsed
            for item in parsed:
                if isinstance(item, FetchNotice):
                    # Judged here, not when queued: a notice the queue would refuse is the
                    # provider's malformed input (kept, 400), not our outage (503 forever).
                    try:
                        check_notice(item.resource, item.dedupe_key)
                    except ValueError as exc:
                        raise MalformedPayload(f"notification names no usable resource: {exc}"
                                               ) from None
            return parsed
        except (MalformedPayload, AttachmentRefused):
            raise
        except RecursionError:
            raise MalformedPayload("body is nested too deeply to parse") from None
        except Exception as exc:
            raise MalformedPayload(
                f"body could not be parsed ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None

    def accepted(self, outcomes: Sequence[IngestOutcome]) -> web.StreamResponse:
        """The acknowledgement the provider expects once everything is stored.

        Called only after every message was ingested, every receipt recorded and every fetch
        notice queued (not fetched: that happens after the answer), so whatever
        it returns means "durable". The default is JSON naming the stored ids. A provider
        that expects something else overrides it: Twilio wants TwiML (an empty
        ``<Response/>`` sends no automatic reply), Shopee an empty 2xx::

            def accepted(self, outcomes):
                return web.Response(text=EMPTY_TWIML, content_type="text/xml")

            def accepted(self, outcomes):
                return web.Response(status=204)

        ``rejected`` is the same hook for refusals (401/400/413), for a provider that wants
        a particular error body.
        """
        return web.json_response(
            {"stored": [o.message_id for o in outcomes],
             "duplicates": sum(1 for o in outcomes if o.duplicate)}
        )

    def rejected(self, error: InboundError) -> web.StreamResponse:
        return error_json(error.status, inbound_error_code(error), error.reason)

    # -- helpers for providers that sign URLs or post forms ---------------------------------

    def signed_urls(self, request: web.Request) -> tuple[str, ...]:
        """The URL the provider requested (and signed), as it may have written it.

        Behind a reverse proxy ``request.url`` is the proxy's upstream address, not what
        Twilio or Shopee signed; with ``hub.public_url`` (``context.public_url``) set, the URL
        is that base plus the request's raw path and query exactly as sent. The first entry is
        the URL as requested; the others are the same URL with its default port added or
        removed (``:443`` for https, ``:80`` for http), because Twilio is inconsistent about
        ports and its own validator accepts either (CHANNELS.md §3). A non-default port is
        never toggled.
        """
        return url_variants(public_request_url(request, self.context.public_url))

    def form(self, request: web.Request, body: bytes, *,
             max_fields: int = 1000) -> MultiDict[str]:
        """An ``application/x-www-form-urlencoded`` body (Twilio) parsed from the raw bytes:
        repeated keys kept in order, UTF-8 only, malformed input refused with the reason
        (``MalformedPayload``: a 400; raised from ``verify`` it is not quarantined)."""
        content_type = request.headers.get("Content-Type", "")
        mime, _, params = content_type.partition(";")
        if mime.strip().lower() != FORM_CONTENT_TYPE:
            raise MalformedPayload(f"expected Content-Type {FORM_CONTENT_TYPE}, got "
                                   f"{mime.strip()[:100] or 'none'}")
        charset = _charset(params)
        if charset not in (None, "utf-8", "utf8"):
            raise MalformedPayload(f"form charset {charset[:40]!r} is not supported; use UTF-8")
        return parse_form(body, max_fields=max_fields)

    @final
    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return await self.handle_get(request)
        health = self.context.health
        if health is None:
            return (await self._answer_post(request))[1]
        started = time.monotonic()
        outcome, response = await self._answer_post(request)
        health.webhook(self.instance, outcome, time.monotonic() - started)
        return response

    @final
    async def _answer_post(self, request: web.Request,
                           ) -> tuple[WebhookOutcome, web.StreamResponse]:
        """The POST path of ``handle_webhook``, with the class of its answer for the health
        counters (named here, not read off the status: ``rejected`` may answer anything)."""
        if self._ingest is None:
            return "unavailable", error_json(503, "unavailable", "channel not started")
        try:
            body = await read_body(request, self.context.max_body_bytes)
            verified = self.verify(request, body)
            if inspect.isawaitable(verified):
                await verified
        except InboundError as exc:
            return rejection_class(exc), self.rejected(exc)
        try:
            parsed = await self.parse_or_explain(request, body)
        except AttachmentRefused as exc:
            return rejection_class(exc), self.rejected(exc)
        except MalformedPayload as exc:
            try:
                await self._quarantine(request, body, exc.reason)
            except Exception:
                # Not kept means not answered for good: the provider will deliver it again.
                return "unavailable", error_json(503, "unavailable",
                                                 "temporarily unable to store")
            return "malformed", self.rejected(exc)
        try:
            outcomes = await self.store_items(parsed)
        except Exception as exc:
            # Not stored means not acknowledged: the provider will deliver it again.
            log.warning("channel %s: webhook not stored: %s", self.instance, describe(exc))
            return "unavailable", error_json(503, "unavailable", "temporarily unable to store")
        return "accepted", self.accepted(outcomes)

    async def _quarantine(self, request: web.Request, body: bytes, reason: str) -> str:
        headers = {name: request.headers[name] for name in self.replay_headers
                   if name in request.headers}
        path = request.match_info.get("path")
        if path:
            headers[STORED_PATH_KEY] = path
        if not self.replay_headers and not path:
            return await self.context.quarantine(self.instance, body, reason)
        return await self.context.quarantine(self.instance, body, reason, headers=headers)


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def parse_form(body: bytes, *, max_fields: int = 1000) -> MultiDict[str]:
    """Strict form decoding: ASCII on the wire, well-formed ``%XX`` escapes that decode to
    UTF-8, ``+`` as space, at most ``max_fields`` fields, every repeated key kept.

    ``urllib.parse.parse_qsl`` alone is lenient: it passes ``%zz`` through and replaces bad
    UTF-8 silently, so two different bodies could verify as the same parameters.
    """
    if not body:
        return MultiDict()
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPayload("form body is not ASCII (non-ASCII must be %-escaped)") from None
    if _BAD_ESCAPE.search(body):
        raise MalformedPayload("form body has a malformed %-escape")
    if text.count("&") + 1 > max_fields:
        raise MalformedPayload(f"form body has more than {max_fields} fields")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                                       encoding="utf-8", errors="strict",
                                       max_num_fields=max_fields)
    except UnicodeDecodeError:
        raise MalformedPayload("form body escapes do not decode to UTF-8") from None
    except ValueError as exc:
        raise MalformedPayload(f"form body is malformed: {str(exc)[:100]}") from None
    return MultiDict(pairs)


def public_request_url(request: web.Request, public_url: str | None) -> str:
    """``public_url`` (the hub's address as providers see it; a path in it is a prefix the
    proxy strips) plus the raw path and query as requested; without it, ``request.url``'s
    own scheme and host."""
    base = public_url.rstrip("/") if public_url else f"{request.scheme}://{request.host}"
    return base + request.raw_path


def url_variants(url: str) -> tuple[str, ...]:
    """``url`` first, then with its default port added, or removed when it is given."""
    parts = urllib.parse.urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or parts.hostname is None:
        return (url,)
    try:
        port = parts.port
    except ValueError:
        return (url,)
    host = parts.netloc.rsplit("@", 1)[-1]
    if port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif port == default:
        other = parts._replace(netloc=host.rsplit(":", 1)[0])
    else:
        return (url,)
    return (url, urllib.parse.urlunsplit(other))


async def serve_webhook(adapter: ChannelAdapter, request: web.Request) -> web.StreamResponse:
    """``/webhooks/{type}/{instance}[/{path}]`` once the instance is found: a sub-path the
    adapter does not serve is a 404 and a method it does not take a 405 (with ``Allow``), then
    the adapter answers. The hub's router and the conformance kit both dispatch through here."""
    path = request.match_info.get("path")
    if path is not None and path not in getattr(adapter, "subpaths", frozenset()):
        return error_json(404, "not_found", f"channel instance has no webhook path {path!r}")
    if request.method not in adapter.webhook_methods:
        allowed = ", ".join(sorted(adapter.webhook_methods))
        response = error_json(405, "method_not_allowed",
                              f"method {request.method} is not allowed here; use {allowed}")
        response.headers["Allow"] = allowed
        return response
    return await adapter.handle_webhook(request)


def error_json(status: int, code: str, message: str) -> web.Response:
    """The hub's one error shape, ``{"error": {"code", "message"}}``, for webhook answers."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def rejection_class(error: InboundError) -> WebhookOutcome:
    """The health counters' class of a refused webhook (``channels.services.health``)."""
    if isinstance(error, InvalidSignature):
        return "signature"
    if isinstance(error, PayloadTooLarge):
        return "too_large"
    if isinstance(error, AttachmentRefused):
        return "too_large" if error.status == 413 else "malformed"
    return "malformed"


def inbound_error_code(error: InboundError) -> str:
    if isinstance(error, InvalidSignature):
        return "invalid_signature"
    if isinstance(error, PayloadTooLarge):
        return "payload_too_large"
    if isinstance(error, MalformedPayload):
        return "malformed_payload"
    if isinstance(error, AttachmentRefused):
        return "attachment_refused"
    return "bad_request"


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes, refusing larger bodies without buffering them."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
