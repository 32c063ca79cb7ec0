"""The Telegram channel: a bot's private chats, by webhook or by long polling (CHANNELS.md §2).

``TelegramChannel`` is what the registry names; constructing it gives the class for the
configured ``mode``: ``TelegramWebhookChannel`` (a ``WebhookAdapter`` served at
``/webhooks/telegram/{instance}``) or ``TelegramPollingChannel`` (a ``PollingAdapter``: one
poller per bot under the lease, the ``getUpdates`` offset as the cursor, checkpointed only after
the updates before it were stored). Both normalize updates the same way (``inbound``), fetch
files the same way (``getFile``, then the file URL, into the attachment store) and send the
same way (``outbound``).

Files are downloaded before the message is stored, not through the fetch-after-notify stage:
the Bot API has no call that returns a message by id, so a queued fetch would have to trust
what the notification said, which that stage never does. A download that fails for a
retryable reason is not acknowledged (webhook: 503, so Telegram delivers again; polling: the
offset stays) for up to ``DEFER_DOWNLOAD_SECONDS`` after the first failure; after that the
message is stored with a placeholder naming the failure, so a long outage of the file server
never costs the buyer's words.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import msgspec
from aiohttp import web

from channels.attachments import AttachmentRefused
from channels.base import (
    AdapterContext,
    Capabilities,
    ChannelAdapter,
    IngestCallback,
    IngestOutcome,
    Parsed,
    WebhookAdapter,
)
from channels.errors import (
    AuthError,
    ChannelError,
    InboundError,
    InvalidSignature,
    MalformedPayload,
    PermanentError,
    ReplyRejected,
    RetryableError,
)
from channels.models import Attachment, DraftCheck, InboundMessage, MessageEdit, OutboundReply
from channels.polling import Polled, PollingAdapter, PollItem, Schedule, Unusable
from channels.supervisor import Backoff, describe
from channels.telegram.api import BotApi, RecipientUnreachable
from channels.telegram.inbound import Draft, FileRef, Skipped, decode_update, normalize
from channels.telegram.outbound import Sender
from channels.telegram.settings import (
    ALLOWED_UPDATES,
    MAX_DOWNLOAD_BYTES,
    MAX_SPLIT_PARTS,
    MAX_TEXT_LENGTH,
    RATE_LIMITS,
    WEBHOOK_PORTS,
    TelegramSettings,
)
from channels.telegram.split import utf16_length

log = logging.getLogger(__name__)

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
DEFER_DOWNLOAD_SECONDS: Final = 600.0
_REMEMBERED_DEFERRALS: Final = 10_000
_REGISTER_BACKOFF: Final = Backoff(base=1.0, cap=300.0)


class SecretTokenMismatch(InvalidSignature):
    """Missing or wrong ``X-Telegram-Bot-Api-Secret-Token``: 403, as PTB's webhook answers."""

    status = 403


class WrongContentType(InboundError):
    """Telegram posts ``application/json`` only; anything else is not an update."""

    status = 415


class DownloadDeferred(AttachmentRefused):
    """A file could not be fetched just now: answered 503, not kept, so Telegram delivers the
    update again (an ``AttachmentRefused`` so that the webhook plumbing does not quarantine
    it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 503)


class TelegramChannel(ChannelAdapter):
    """The Bot API channel; see the module docstring. ``skipped`` counts the updates that were
    acknowledged but not routed, by kind; ``blocked_chats`` the chats whose buyer blocked the
    bot while this process ran (newest last)."""

    type_name: ClassVar[str] = "telegram"
    unique_settings: ClassVar[tuple[str, ...]] = ("bot_token",)
    settings_type: ClassVar[type[TelegramSettings]] = TelegramSettings
    settings: TelegramSettings
    webhook_methods: ClassVar[frozenset[str]] = frozenset({"POST"})

    def __new__(cls, instance: str, settings: TelegramSettings,
                context: AdapterContext) -> TelegramChannel:
        if cls is TelegramChannel:
            cls = TelegramPollingChannel if settings.mode == "polling" else \
                TelegramWebhookChannel
        return super().__new__(cls)

    def __init__(self, instance: str, settings: TelegramSettings,
                 context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        split = settings.long_messages == "split"
        self.capabilities = Capabilities(
            max_text_length=MAX_TEXT_LENGTH * (MAX_SPLIT_PARTS if split else 1),
            threading=True, rate_limits=RATE_LIMITS,
            attachments=True, max_attachment_bytes=MAX_DOWNLOAD_BYTES, max_attachments=1)
        self.api = BotApi(context.http, settings.bot_token, settings.api_base_url,
                          settings.timeout_seconds)
        self.sender = Sender(self.api, split=split, limit=MAX_TEXT_LENGTH,
                             max_parts=MAX_SPLIT_PARTS, limiter=context.limiter,
                             limits=RATE_LIMITS, files=context.attachments,
                             memory=context.threads, instance=instance)
        self.skipped: collections.Counter[str] = collections.Counter()
        self.blocked_chats: OrderedDict[str, float] = OrderedDict()
        self._deferred: OrderedDict[int, float] = OrderedDict()

    # -- inbound, shared by both modes -----------------------------------------------------

    async def items(self, update_data: Any) -> list[InboundMessage | MessageEdit]:
        """What one update stores: a message, an edit of one, or nothing (not routed)."""
        update = decode_update(update_data)
        drafted = update if isinstance(update, Skipped) else normalize(update, self.instance)
        if isinstance(drafted, Skipped):
            self._skip(drafted)
            return []
        attachments = await self._attachments(drafted)
        message = msgspec.structs.replace(drafted.message, attachments=attachments)
        if drafted.edit_of is None or attachments:
            # an edit that carries a file (a replaced photo) is stored as a message of its
            # own: an edit keeps only words, and the new file must not be lost
            return [message]
        return [MessageEdit(channel_instance=self.instance, thread_id=message.thread_id,
                            provider_message_id=drafted.edit_of, text=drafted.edited_text,
                            edited_at=drafted.edited_at, fallback=message)]

    def _skip(self, skipped: Skipped) -> None:
        self.skipped[skipped.kind] += 1
        if skipped.blocked is None:
            log.debug("channel %s: update %d (%s) acknowledged, not routed", self.instance,
                      skipped.update_id, skipped.kind)
            return
        self.blocked_chats[skipped.blocked] = time.time()
        self.blocked_chats.move_to_end(skipped.blocked)
        while len(self.blocked_chats) > _REMEMBERED_DEFERRALS:
            self.blocked_chats.popitem(last=False)
        log.info("channel %s: update %d: a buyer blocked the bot; replies to that chat will "
                 "fail until they write again", self.instance, skipped.update_id)

    async def _attachments(self, draft: Draft) -> tuple[Attachment, ...]:
        try:
            found = tuple([await self._attachment(f) for f in draft.files])
        except RetryableError as exc:
            first = self._deferred.setdefault(draft.update_id, time.monotonic())
            if time.monotonic() - first < DEFER_DOWNLOAD_SECONDS:
                self._trim_deferred()
                raise DownloadDeferred(f"update {draft.update_id}: the file could not be "
                                       f"fetched from Telegram now ({exc}); not acknowledged, so "
                                       "Telegram sends it again"
                                       ) from None
            log.warning("channel %s: update %d: file still not fetchable after %.0f s; "
                        "storing the message without it", self.instance, draft.update_id,
                        DEFER_DOWNLOAD_SECONDS)
            found = tuple(self.refused_attachment(
                f.name, f.declared_type, f.size or 0,
                AttachmentRefused(f"Telegram did not serve the file: {exc}"))
                for f in draft.files)
        self._deferred.pop(draft.update_id, None)
        return found

    def _trim_deferred(self) -> None:
        while len(self._deferred) > _REMEMBERED_DEFERRALS:
            self._deferred.popitem(last=False)

    async def _attachment(self, ref: FileRef) -> Attachment:
        """``getFile`` then the download, into the attachment store; a file the channel does
        not take (too big, a refused type, no store) is a placeholder saying why."""
        policy = self.attachment_policy
        try:
            if ref.size is not None and ref.size > policy.max_bytes:
                raise AttachmentRefused(f"attachment is {ref.size} bytes, over this channel's "
                                        f"limit of {policy.max_bytes} bytes")
            try:
                info = await self.api.call("getFile", {"file_id": ref.file_id})
            except PermanentError as exc:  # "file is too big" and the like
                raise AttachmentRefused(str(exc)) from None
            file_path = info.get("file_path") if isinstance(info, dict) else None
            if not isinstance(file_path, str):
                raise AttachmentRefused("Telegram offered no download for the file")
            data = await self.api.download(file_path, policy.max_bytes)
            if data is None:
                raise AttachmentRefused(f"attachment is over this channel's limit of "
                                        f"{policy.max_bytes} bytes")
            return await self.store_attachment(data, name=ref.name)
        except AttachmentRefused as exc:
            return self.refused_attachment(ref.name, ref.declared_type, ref.size or 0, exc)

    # -- outbound --------------------------------------------------------------------------

    def check_draft(self, draft: OutboundReply, *, now: float) -> DraftCheck:
        """The reply box under a Telegram draft: UTF-16 length per message and how many
        messages a long reply goes out as (``long_messages = "split"``)."""
        problem = self.draft_problem(draft, now=now)
        parts: int | None = None
        if draft.text.strip():
            try:
                parts = len(self.sender.parts(draft.text))
            except ReplyRejected:
                parts = None
        return DraftCheck(length=utf16_length(draft.text), max_length=MAX_TEXT_LENGTH,
                          fits=problem is None, problem=problem, parts=parts)

    async def deliver(self, reply: OutboundReply) -> str:
        try:
            return await self.sender.send(reply)
        except RecipientUnreachable:
            log.info("channel %s: reply %s: Telegram says the buyer cannot be reached (blocked "
                     "the bot or left Telegram)", self.instance, reply.reply_id)
            raise


class TelegramWebhookChannel(TelegramChannel, WebhookAdapter):
    """``mode = "webhook"``: Telegram POSTs each update with the secret token; on start the
    webhook is registered (``setWebhook`` with ``secret_token``) when the hub knows its public
    URL."""

    def __init__(self, instance: str, settings: TelegramSettings,
                 context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self._register: asyncio.Task[None] | None = None

    async def start(self, ingest: IngestCallback) -> None:
        await super().start(ingest)
        if self.context.public_url is None:
            log.info("channel %s: hub.public_url is not set; not calling setWebhook (register "
                     "https://<public address>%s with secret_token yourself)", self.instance,
                     self.webhook_path)
            return
        self._register = self.context.spawn(self._register_webhook(),
                                            f"channel:{self.instance}:setWebhook")

    async def stop(self) -> None:
        task, self._register = self._register, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await super().stop()

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/{self.type_name}/{self.instance}"

    @property
    def webhook_url(self) -> str:
        assert self.context.public_url is not None
        return self.context.public_url.rstrip("/") + self.webhook_path

    async def _register_webhook(self) -> None:
        """``setWebhook`` until Telegram takes it (a 5xx or a timeout at boot is retried; a
        refused token is logged for the operator and not retried)."""
        url = self.webhook_url
        port = urllib.parse.urlsplit(url).port
        if port is not None and port not in WEBHOOK_PORTS:
            log.warning("channel %s: Telegram delivers webhooks only to ports %s; %d will be "
                        "refused", self.instance, sorted(WEBHOOK_PORTS), port)
        secret = self.settings.webhook_secret
        assert secret is not None
        params = {"url": url, "secret_token": secret.reveal(),
                  "allowed_updates": list(ALLOWED_UPDATES)}
        failures = 0
        while True:
            try:
                await self.api.call("setWebhook", params)
            except (AuthError, PermanentError) as exc:
                log.error("channel %s: setWebhook refused: %s", self.instance, describe(exc))
                return
            except ChannelError as exc:
                failures += 1
                delay = _REGISTER_BACKOFF.after(exc, failures)
                log.warning("channel %s: setWebhook failed (%s); retrying in %.0f s",
                            self.instance, describe(exc), delay)
                await asyncio.sleep(delay)
                continue
            log.info("channel %s: webhook registered at %s", self.instance, url)
            return

    def verify(self, request: web.Request, body: bytes) -> None:
        given = request.headers.get(SECRET_HEADER, "")
        secret = self.settings.webhook_secret
        expected = secret.reveal_bytes() if secret is not None else b""
        # Constant time; an unset secret never matches (webhook mode requires one).
        if not expected or not hmac.compare_digest(given.encode("utf-8", "replace"),
                                                   expected):
            raise SecretTokenMismatch(f"missing or wrong {SECRET_HEADER}")
        mime = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if mime != "application/json":
            raise WrongContentType(f"expected Content-Type application/json, got "
                                   f"{mime[:100] or 'none'}")

    async def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedPayload(f"body is not JSON: {exc}") from None
        return await self.items(data)

    def accepted(self, outcomes: Sequence[IngestOutcome]) -> web.StreamResponse:
        # An empty 200: a JSON answer with a "method" field would be run by Telegram as a call.
        return web.Response(status=200)


class TelegramPollingChannel(TelegramChannel, PollingAdapter):
    """``mode = "polling"``: ``getUpdates`` long polls; the cursor is the next offset (one past
    the last update stored), so an update is confirmed to Telegram only by the poll after it
    was stored. The first poll after start deletes any webhook (the two are exclusive)."""

    webhook_methods: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, instance: str, settings: TelegramSettings,
                 context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        wait = settings.long_poll_seconds
        self.schedule = Schedule(interval_seconds=0.0 if wait else 1.0,
                                 timeout_seconds=wait + settings.timeout_seconds * 8)
        self._webhook_deleted = False

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        if not self._webhook_deleted:
            await self.api.call("deleteWebhook", {"drop_pending_updates": False})
            self._webhook_deleted = True
        offset = int(cursor) if cursor else None
        params: dict[str, Any] = {"timeout": self.settings.long_poll_seconds, "limit": 100,
                                  "allowed_updates": list(ALLOWED_UPDATES)}
        if offset is not None:
            params["offset"] = offset
        try:
            result = await self.api.call(
                "getUpdates", params,
                timeout=self.settings.long_poll_seconds + self.settings.timeout_seconds)
        except RetryableError as exc:
            if "409" in str(exc):
                raise RetryableError(f"{exc} (another process or deployment is polling or "
                                     "has set a webhook for this bot; only one may read its "
                                     "updates)", retry_after=exc.retry_after) from None
            raise
        if not isinstance(result, list):
            raise RetryableError("Telegram getUpdates answered something other than a list")
        items: list[PollItem] = []
        # Files are fetched per update; a batch of many stops early (the rest comes with the
        # next poll) rather than running into the schedule's timeout and being fetched again.
        budget = time.monotonic() + self.schedule.timeout_seconds / 2
        for raw in result:
            if items and time.monotonic() > budget:
                break
            update_id = raw.get("update_id") if isinstance(raw, dict) else None
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                items.append(Unusable(msgspec.json.encode(raw), "update has no update_id"))
                continue
            if offset is not None and update_id < offset:
                continue  # confirmed already: Telegram should not have sent it
            try:
                items.extend(await self.items(raw))
            except MalformedPayload as exc:
                items.append(Unusable(msgspec.json.encode(raw), exc.reason))
            except DownloadDeferred as exc:
                raise RetryableError(exc.reason) from None
            offset = update_id + 1
        return items, str(offset).encode() if offset is not None else (cursor or b"")
