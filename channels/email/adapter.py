"""The email channel: one IMAP mailbox in (IDLE, else NOOP polling), SMTP out.

Built on the package's pure parts (``mime``, ``threading``, ``amazon``, ``compose``) and its
transports (``imap``, ``smtp``); the ``PollingAdapter`` base holds the mailbox's lease, loads
and checkpoints the cursor and stores what ``poll`` returns, so this module only speaks IMAP
and SMTP.

Inbound. One ``ImapClient`` per mailbox, kept between polls and replaced after any failure
(the client is not reusable). A poll fetches above the cursor's UID; when nothing is new it
waits in IDLE (``wait_for_new``) for up to ``IDLE_WAIT_SECONDS`` and fetches again, so a
delivered message is stored within a second and an idle mailbox costs one IDLE per wait. The
cursor is ``encode_cursor(UIDVALIDITY, last UID)``; a UIDVALIDITY change refetches the mailbox
and the ingest drops what it already has by Message-ID (or content digest). Each message is
parsed off the event loop: a ``MalformedEmail`` is quarantined with its reason, an auto-reply
is skipped (the cursor still moves past it), a bounce of one of our messages becomes a
``DeliveryUpdate`` ``failed`` with the diagnostic, anything else an ``InboundMessage``.

Parsing is CPU work (MIME, charsets, HTML to text, quotes: about as long as the download) and
a thread would hold the GIL the event loop needs, so a fetched batch goes to the adapter's
parse process (``parse_process.ParseProcesses``: ``parse_processes`` children, default one,
started on first use and stopped by ``close``) in one request (``mime.parse_many``); with
``parse_processes = 0`` the batch is parsed on a thread instead. A parse process that dies
(out of memory on a hostile message) fails the poll as retryable and a new one is started.
While a backlog lasts (a batch stopped at ``FETCH_LIMIT``), a reader (``_Reader``) fetches
the next batches and has them parsed while the polling base stores this one: download, parse
and store overlap. Threads, memos and attachments are still decided and written by ``poll``,
one batch after the other, after the previous batch was stored, and a batch read ahead is
only used by a poll that starts where it was fetched.

Threads. A thread id is ``"e" + 32 hex``. Our outbound Message-IDs carry the conversation's
thread id as their reply token (``threading.new_message_id``), so a mail whose In-Reply-To,
References or quoted body names one of our ids joins that thread, whatever the client did to
References; ``conversations.EmailThreads`` decides the rest (the buyer's own earlier ids, the
subject-plus-sender fallback within ``subject_thread_days``, a new conversation for a new
subject on a resolved one), with memos kept in the hub's store (``context.threads``) so every
process and every restart decides alike.

Outbound. ``OutboundReply`` carries no subject and no References; the adapter takes them from
the mail the reply's ``in_reply_to`` names (kept in memory for what this process polled, else
from the store's memo), else the thread's last subject, and builds ``Subject: Re: …``,
In-Reply-To and References (RFC 5322 §3.6.4). After a send the parent is flagged
``\\Answered``. ``deliver`` returns the Message-ID it generated: that is
the id a bounce names, so the receipt finds the reply.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import ssl
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from channels.attachments import AttachmentRefused
from channels.base import AdapterContext, Capabilities
from channels.email.amazon import check_amazon_reply, is_amazon_relay, order_ids
from channels.email.compose import address as plain_address
from channels.email.compose import compose_reply, html_body, message_bytes
from channels.email.conversations import (
    THREAD_ID,
    BatchMemory,
    EmailThreads,
    MessageMemo,
    provider_id_of,
)
from channels.email.imap import (
    FetchResult,
    ImapClient,
    MailboxState,
    Security,
    decode_cursor,
    encode_cursor,
    resume_uid,
)
from channels.email.mime import EmailAttachment, ParsedEmail, parse_many
from channels.email.parse_process import ParseProcesses
from channels.email.senders import AMAZON_LABEL, SenderRule, sender_facts
from channels.email.smtp import send_message
from channels.email.threading import new_message_id, reply_headers, reply_tokens
from channels.errors import (
    AuthError,
    ChannelError,
    RateLimited,
    ReplyRejected,
    RetryableError,
    TokenExpired,
)
from channels.models import Attachment, ChannelHints, DeliveryUpdate, InboundMessage, OutboundReply
from channels.polling import Polled, PollingAdapter, PollingSettings, PollItem, Schedule, Unusable
from channels.secrets import Secret
from channels.tokens import OAuth2Refresher, with_token

log = logging.getLogger(__name__)

ParseResults = list[ParsedEmail | str]
"""``mime.parse_many``'s answer: per message its ``ParsedEmail`` or ``MalformedEmail``'s reason."""

MAX_TEXT_LENGTH: Final = 100_000
MAX_ATTACHMENTS: Final = 50
NETWORK_TIMEOUT_SECONDS: Final = 30.0
IDLE_WAIT_SECONDS: Final = 20.0
"""How long one poll waits in IDLE for news before it returns (and fetches anyway)."""
NOOP_INTERVAL_SECONDS: Final = 10.0
"""Without IDLE: how often a waiting poll asks the server (NOOP) whether mail came."""
FETCH_LIMIT: Final = 500
AHEAD_BATCHES: Final = 2
"""Batches of a backlog read (and parsed) ahead of the one being stored: each at most
``FETCH_LIMIT`` messages or ``fetch_since``'s 32 MB."""
PARENT_CACHE_SIZE: Final = 10_000
ATTACHMENT_WRITES: Final = 8
"""Attachments of a fetched batch stored at once (each a Redis pin and a file write)."""
SMTP_RATE_LIMIT_CODES: Final = frozenset({421, 452})
SMTP_RATE_LIMIT_RETRY_SECONDS: Final = 60.0
_DEFAULT_IMAP_PORT: Final = {"tls": 993, "starttls": 143, "none": 143}
_DEFAULT_SMTP_PORT: Final = {"tls": 465, "starttls": 587, "none": 25}

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_LOCAL = re.compile(r"http://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?/")


class EmailSettings(PollingSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``imap_security`` and ``smtp_security`` have no default: plaintext (``none``) only
    when written. Ports default from the security (993/143, 465/587/25)."""

    address: str
    imap_host: str
    imap_security: Security
    imap_username: str
    imap_port: Port | None = None
    imap_password: Secret | None = None
    imap_auth: Literal["password", "xoauth2"] = "password"
    mailbox: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] = "INBOX"
    smtp_host: str
    smtp_security: Security
    smtp_port: Port | None = None
    smtp_username: str | None = None
    smtp_password: Secret | None = None
    # "xoauth2": SMTP logs in with the same token as IMAP (one grant covers both at Gmail and
    # Microsoft 365), so it needs imap_auth = "xoauth2" and smtp_username.
    smtp_auth: Literal["password", "xoauth2"] = "password"
    # imap_auth = "xoauth2" (Gmail, Microsoft 365): the access token comes from the token
    # store (``inboxhub channels auth INSTANCE``) and is refreshed with this grant.
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: Secret | None = None
    reply_to: str | None = None
    # Replies carry an HTML alternative rendered from the agent's text (compose.html_body);
    # never to Amazon's relay, which takes plain text only.
    html_replies: bool = False
    mark_seen: bool = False
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=0)] = 25 * 1024 * 1024
    # A mail with no usable References joins the same sender's conversation under the same
    # subject only this long after the last mail there (channels/email/conversations.py).
    subject_thread_days: Annotated[float, msgspec.Meta(ge=0, le=365)] = 7.0
    # Sender domain -> label, market, no-reply (channels/email/senders.py).
    sender_rules: tuple[SenderRule, ...] = ()
    # Processes that parse fetched mail (MIME, charsets, HTML) beside the event loop; 0
    # parses on a thread of this process instead (the GIL then slows the loop meanwhile).
    parse_processes: Annotated[int, msgspec.Meta(ge=0, le=16)] = 1

    def __post_init__(self) -> None:
        plain_address(self.address)  # ValueError names the problem
        if self.reply_to is not None:
            plain_address(self.reply_to)
        if self.imap_auth == "xoauth2":
            if self.imap_password is not None:
                raise ValueError('imap_password is not used with imap_auth = "xoauth2" (the '
                                 "token comes from the token store); remove it")
            if not self.oauth_token_url or not self.oauth_client_id:
                raise ValueError('imap_auth = "xoauth2" needs oauth_token_url and '
                                 "oauth_client_id (the provider's refresh-token grant)")
            if not self.oauth_token_url.startswith("https://") and not _LOCAL.match(
                    self.oauth_token_url):
                raise ValueError("oauth_token_url: expected an https:// URL")
        elif self.imap_password is None:
            raise ValueError('imap_password is required with imap_auth = "password"')
        if self.smtp_auth == "xoauth2":
            if self.imap_auth != "xoauth2":
                raise ValueError('smtp_auth = "xoauth2" uses the IMAP grant: set imap_auth = '
                                 '"xoauth2" too')
            if self.smtp_username is None or self.smtp_password is not None:
                raise ValueError('smtp_auth = "xoauth2" needs smtp_username and no '
                                 "smtp_password")
        elif (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("give smtp_username and smtp_password together, or neither")

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1].lower()

    def hint_labels(self) -> frozenset[str]:
        """The labels this mailbox can put on conversations (``routing.sla.<label>``)."""
        return frozenset({AMAZON_LABEL, *(rule.label for rule in self.sender_rules)})


@dataclass(frozen=True)
class _Parent:
    """What a reply needs from the mail it answers."""

    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    uidvalidity: int
    uid: int


class _Reader:
    """Reads a backlog ahead of the batch ``poll`` returned, while the polling base stores it:
    fetches batch after batch above ``after`` and hands each to the parse process as soon as
    it arrives, so the next download overlaps this parse and both overlap the store. At most
    ``depth`` batches wait to be taken. Nothing here is stored or acknowledged: ``take`` gives
    a batch only to a poll that starts at the UID it was fetched above. Its session commands
    hold ``lock`` (one command at a time on a session).

    ``read_memos_ahead``: once a poll has written its batch's thread memos, the next batch's
    memo reads (``EmailThreads.prefetch``, two round trips) start here, while the polling
    base stores the batch before: they see every memo written so far, which is all the
    decisions need (a conversation's status is read when deciding, after the store)."""

    def __init__(self, client: ImapClient, uidvalidity: int, after: int, *, depth: int,
                 lock: asyncio.Lock,
                 parse: Callable[[FetchResult], Awaitable[ParseResults]]) -> None:
        self.client = client
        self.uidvalidity = uidvalidity
        self.depth = depth
        self._lock = lock
        self._parse = parse
        self._ready: deque[tuple[int, FetchResult, asyncio.Future[ParseResults]]] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = False
        self._memos: dict[int, asyncio.Future[BatchMemory | None]] = {}
        self._task = asyncio.create_task(self._run(after), name="email:read-ahead")

    async def _run(self, after: int) -> None:
        while True:
            while len(self._ready) >= self.depth and not self._stopping:
                self._room.clear()
                await self._room.wait()
            if self._stopping:
                return
            async with self._lock:
                batch = await self.client.fetch_since(after, limit=FETCH_LIMIT)
            self._ready.append((after, batch, asyncio.ensure_future(self._parse(batch))))
            self._arrived.set()
            if not batch.more or batch.last_uid is None:
                return
            after = batch.last_uid

    def read_memos_ahead(self, after: int, read: Callable[[ParseResults],
                                                          Awaitable[BatchMemory | None]],
                         ) -> None:
        """Start reading the memos of the batch fetched above ``after`` once it is parsed,
        if that batch is the next one here (else the poll that takes it reads them)."""
        if not self._ready or self._ready[0][0] != after or after in self._memos:
            return
        parsing = self._ready[0][2]

        async def memos() -> BatchMemory | None:
            return await read(await asyncio.shield(parsing))

        self._memos[after] = asyncio.ensure_future(memos())

    async def take(self, after: int,
                   ) -> tuple[FetchResult, ParseResults, BatchMemory | None] | None:
        """The next batch read ahead, parsed, if it was fetched above ``after``; None when it
        was not (the cursor did not move as expected) or the backlog ended. A failure of the
        reading is the session's and raises."""
        while True:
            self._arrived.clear()
            if self._ready:
                break
            if self._task.done():
                self._task.result()
                return None
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait({self._task, arrived}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
        if self._ready[0][0] != after:
            return None
        _, batch, parsing = self._ready.popleft()
        self._room.set()
        results = await parsing
        memos = self._memos.pop(after, None)
        return batch, results, (await memos if memos is not None else None)

    async def close(self, *, cancel: bool) -> None:
        """Stop reading. ``cancel=False`` (the session goes on): the fetch in flight is let
        finish, so the next command does not meet its answer; its failure raises. Parses
        not taken are dropped either way."""
        self._stopping = True
        self._room.set()
        try:
            if cancel:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            else:
                await self._task
        finally:
            pending: list[asyncio.Future[Any]] = [parsing for _, _, parsing in self._ready]
            pending.extend(self._memos.values())
            self._ready.clear()
            self._memos.clear()
            for parsing in pending:
                parsing.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _mails(results: ParseResults) -> list[ParsedEmail]:
    """The buyer messages of a parsed batch (what gets a thread), in order."""
    return [parsed for parsed in results
            if not isinstance(parsed, str) and parsed.kind == "message"]


@dataclass(frozen=True)
class _OutFile:
    name: str
    content_type: str
    data: bytes


def reply_token(thread_id: str) -> str:
    """The token our Message-ID carries: the thread id itself when it has the email form."""
    if THREAD_ID.fullmatch(thread_id):
        return thread_id
    return "e" + hashlib.sha256(thread_id.encode()).hexdigest()[:32]


class EmailChannel(PollingAdapter):
    type_name: ClassVar[str] = "email"
    settings_type: ClassVar[type[EmailSettings]] = EmailSettings
    settings: EmailSettings

    def __init__(self, instance: str, settings: EmailSettings, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.capabilities = Capabilities(
            max_text_length=MAX_TEXT_LENGTH, threading=True,
            attachments=settings.max_attachment_bytes > 0,
            max_attachment_bytes=settings.max_attachment_bytes,
            max_attachments=MAX_ATTACHMENTS if settings.max_attachment_bytes > 0 else 0,
            html=settings.html_replies)
        self.schedule = Schedule(
            interval_seconds=0.0,
            timeout_seconds=IDLE_WAIT_SECONDS + 4 * NETWORK_TIMEOUT_SECONDS)
        self.imap_port = settings.imap_port or _DEFAULT_IMAP_PORT[settings.imap_security]
        self.smtp_port = settings.smtp_port or _DEFAULT_SMTP_PORT[settings.smtp_security]
        self._client: ImapClient | None = None
        self._state: MailboxState | None = None
        self._unseen: set[int] = set()  # mark_seen: UIDs handed out, flagged once stored
        self._parents: OrderedDict[str, _Parent] = OrderedDict()
        self._parsers: ParseProcesses | None = None
        self._reader: _Reader | None = None
        self._session_lock = asyncio.Lock()  # the reader's fetches vs. poll's own commands
        self.refresher: OAuth2Refresher | None = None
        if settings.imap_auth == "xoauth2":
            assert settings.oauth_token_url and settings.oauth_client_id  # checked
            self.refresher = OAuth2Refresher(
                context.http, settings.oauth_token_url, client_id=settings.oauth_client_id,
                client_secret=settings.oauth_client_secret, timeout=NETWORK_TIMEOUT_SECONDS)
        self.threads = EmailThreads(instance, context.threads,
                                    subject_window_seconds=settings.subject_thread_days * 86400)
        # tests shorten these
        self.idle_wait_seconds = IDLE_WAIT_SECONDS
        self.ssl_context: ssl.SSLContext | None = None

    def accounts(self) -> Sequence[str]:
        return (self.settings.mailbox,)

    # -- inbound ---------------------------------------------------------------------------

    @classmethod
    def oauth_for(cls, settings: Any) -> bool:
        auth = (settings.get("imap_auth") if isinstance(settings, Mapping)
                else getattr(settings, "imap_auth", None))
        return auth == "xoauth2"

    def _new_client(self, oauth_token: str | None = None) -> ImapClient:
        password = self.settings.imap_password
        return ImapClient(
            host=self.settings.imap_host, port=self.imap_port,
            security=self.settings.imap_security, username=self.settings.imap_username,
            password=password.reveal() if oauth_token is None and password else None,
            oauth_token=oauth_token, mailbox=self.settings.mailbox,
            timeout=NETWORK_TIMEOUT_SECONDS, ssl_context=self.ssl_context,
            poll_interval=NOOP_INTERVAL_SECONDS)

    async def _connect(self) -> tuple[ImapClient, MailboxState]:
        """A logged-in session: with the password, or with a fresh XOAUTH2 token (a refused
        token is refreshed once through the store, single-flight across processes)."""
        if self.refresher is None:
            client = self._new_client()
            return client, await client.connect()  # closes itself when it fails

        async def login(token: str) -> tuple[ImapClient, MailboxState]:
            client = self._new_client(oauth_token=token)
            try:
                return client, await client.connect()
            except AuthError as exc:  # the server refused the token: refresh, then once more
                raise TokenExpired(f"IMAP server refused the access token: {exc}") from exc

        return await with_token(self.context.tokens, self.instance, self.refresher, login)

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        fresh = self._client is None
        if self._client is None:
            self._client, self._state = await self._connect()
        client, state = self._client, self._state
        assert state is not None
        try:
            # A UIDNEXT at or below the cursor means a restored mailbox, but only as SELECT
            # saw it: later in the session the cursor legitimately passes that UIDNEXT.
            last = resume_uid(cursor, state.uidvalidity, state.uidnext if fresh else None)
            ahead = await self._take_ahead(client, state.uidvalidity, last)
            await self._mark_seen(client, cursor, state.uidvalidity)
            memos: BatchMemory | None = None
            if ahead is not None:
                batch, results, memos = ahead
            else:  # no reader here: the session is this poll's alone
                batch = await client.fetch_since(last, limit=FETCH_LIMIT)
                if not batch.messages and not batch.skipped:
                    await client.wait_for_new(self.idle_wait_seconds)
                    batch = await client.fetch_since(last, limit=FETCH_LIMIT)
                results = await self._parse(batch)
            end = batch.last_uid if batch.last_uid is not None else last
            if batch.more and self._reader is None:
                self._reader = _Reader(client, state.uidvalidity, end, depth=AHEAD_BATCHES,
                                       lock=self._session_lock, parse=self._parse)
            items = await self._items(batch, results, memos)
            if self._reader is not None and self._reader.uidvalidity == state.uidvalidity:
                self._reader.read_memos_ahead(end, self._read_memos)
        except BaseException:
            # Failed or cancelled mid-command (a stop during IDLE): the session is unusable.
            self._client = self._state = None
            try:
                await self._drop_reader()
            finally:
                await client.close()
            raise
        return items, encode_cursor(state.uidvalidity, end)

    async def _take_ahead(self, client: ImapClient, uidvalidity: int, last: int,
                          ) -> tuple[FetchResult, ParseResults, BatchMemory | None] | None:
        """The batch read ahead, when it starts where this poll does. It was fetched above
        the cursor the last poll returned; when that was not checkpointed (its store failed,
        the lease moved) this poll starts lower and the reader is stopped, its batches
        dropped, never stored out of order."""
        reader = self._reader
        if reader is None:
            return None
        if reader.client is not client or reader.uidvalidity != uidvalidity:
            self._reader = None
            await reader.close(cancel=True)
            return None
        ahead = await reader.take(last)
        if ahead is None:
            self._reader = None
            await reader.close(cancel=False)
        return ahead

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close(cancel=True)

    async def _mark_seen(self, client: ImapClient, cursor: bytes | None,
                         uidvalidity: int) -> None:
        """``mark_seen``: flag ``\\Seen`` on what the last poll returned, now that the cursor
        (checkpointed only after storing) has passed it."""
        if not self._unseen or cursor is None:
            return
        try:
            valid, stored = decode_cursor(cursor)
        except ValueError:
            return
        if valid != uidvalidity:
            self._unseen.clear()
            return
        done = sorted(uid for uid in self._unseen if uid <= stored)
        self._unseen.difference_update(done)
        async with self._session_lock:  # the reader may be fetching on this session
            for uid in done:
                await client.add_flags(uid, "\\Seen")

    async def _parse(self, batch: FetchResult) -> ParseResults:
        """``parse_many`` over the batch's messages, off the event loop (module docstring):
        per message its ``ParsedEmail`` or the ``MalformedEmail`` reason."""
        if not batch.messages:
            return []
        policy = self.attachment_policy
        raws = [fetched.raw for fetched in batch.messages]
        limits = {"max_attachment_bytes": policy.max_bytes,
                  "max_attachments": max(policy.max_count, 1)}
        if self.settings.parse_processes == 0:
            return await asyncio.to_thread(functools.partial(parse_many, raws, **limits))
        if self._parsers is None:
            self._parsers = ParseProcesses(self.settings.parse_processes)
        return await self._parsers.parse(raws, **limits)

    async def _read_memos(self, results: ParseResults) -> BatchMemory | None:
        return await self.threads.prefetch(_mails(results))

    async def _items(self, batch: FetchResult, results: ParseResults,
                     memos: BatchMemory | None = None) -> list[PollItem]:
        items: list[PollItem] = []
        for skipped in batch.skipped:
            items.append(Unusable(
                f"IMAP UID {skipped.uid} in {self.settings.mailbox}".encode(),
                f"message of {skipped.size} bytes is over the download limit; left in the "
                "mailbox, not fetched"))
        mails = _mails(results)
        # The batch's attachments are stored side by side while its threads are decided:
        # one after the other, each file's pin and write (a round trip and a thread hop,
        # an fsync when the bytes are new) cost a backlog as long as parsing it.
        files = asyncio.ensure_future(self._attachments_of(mails))
        decided: list[tuple[int, ParsedEmail, InboundMessage]] = []
        try:
            async with self.threads.batch(mails, prefetched=memos):
                for fetched, parsed in zip(batch.messages, results, strict=True):
                    if isinstance(parsed, str):  # MalformedEmail's reason
                        items.append(Unusable(fetched.raw,
                                              f"IMAP UID {fetched.uid}: {parsed}"))
                        continue
                    if self.settings.mark_seen:
                        self._unseen.add(fetched.uid)
                    if parsed.kind == "auto_reply":
                        log.info("channel %s: skipped an auto-reply (UID %d)", self.instance,
                                 fetched.uid)
                        continue
                    if parsed.kind == "bounce":
                        update = self._bounce(parsed, fetched.uid)
                        if update is not None:
                            items.append(update)
                        continue
                    decided.append((len(items), parsed, await self._message(parsed,
                                                                            fetched.uid)))
                    items.append(decided[-1][2])
                stored = await files
        finally:
            if not files.done():  # the decisions failed: the writes in flight are let go
                files.cancel()
            await asyncio.gather(files, return_exceptions=True)
        for (index, parsed, message), attachments in zip(decided, stored, strict=True):
            if parsed.attachments:
                items[index] = msgspec.structs.replace(message, attachments=attachments)
        return items

    async def _attachments_of(self, mails: Sequence[ParsedEmail],
                              ) -> list[tuple[Attachment, ...]]:
        """Every mail's attachments stored (or their refusals), per mail in order; at most
        ``ATTACHMENT_WRITES`` at a time. Raises the first failure once every write ended."""
        gate = asyncio.Semaphore(ATTACHMENT_WRITES)

        async def one(found: EmailAttachment) -> Attachment:
            async with gate:
                return await self._attachment(found)

        flat = [found for mail in mails for found in mail.attachments]
        stored: list[Attachment] = []
        for result in await asyncio.gather(*(one(found) for found in flat),
                                           return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            stored.append(result)
        out: list[tuple[Attachment, ...]] = []
        start = 0
        for mail in mails:
            out.append(tuple(stored[start:start + len(mail.attachments)]))
            start += len(mail.attachments)
        return out

    def _bounce(self, parsed: ParsedEmail, uid: int) -> DeliveryUpdate | None:
        bounce = parsed.bounce
        original = bounce.original_message_id if bounce is not None else None
        if bounce is None or original is None or not reply_tokens([original]):
            log.info("channel %s: skipped a bounce that names no message of ours (UID %d)",
                     self.instance, uid)
            return None
        if self.context.deliveries is None:
            log.info("channel %s: bounce of a reply not recorded (this hub records no "
                     "delivery receipts; UID %d)", self.instance, uid)
            return None
        error = bounce.diagnostic or bounce.status or "bounced"
        if bounce.status and bounce.diagnostic and bounce.status not in bounce.diagnostic:
            error = f"{bounce.status} {bounce.diagnostic}"
        return DeliveryUpdate(channel_instance=self.instance, provider_message_id=original,
                              state="failed", at=parsed.date, error=error[:1000])

    async def _message(self, parsed: ParsedEmail, uid: int) -> InboundMessage:
        """The mail as the hub stores it, its thread decided and remembered; its attachments
        are filled in by ``_items`` once stored."""
        provider_id = provider_id_of(parsed)
        self._remember(provider_id, parsed, uid)
        assert self._state is not None
        thread_id = await self.threads.thread_for(parsed)
        await self.threads.remember(parsed, thread_id, uidvalidity=self._state.uidvalidity,
                                    uid=uid)
        facts = sender_facts(parsed.from_address, self.settings.sender_rules)
        found = (order_ids(parsed.subject, parsed.full_text)
                 if facts.label == AMAZON_LABEL else ())
        hints = ChannelHints(market=facts.market, label=facts.label,
                             replies_disabled=facts.replies_disabled,
                             answer_url=facts.answer_url,
                             order_id=found[0] if found else None)
        return InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=provider_id, thread_id=thread_id,
            sender_handle=parsed.from_address, sender_name=parsed.from_name or None,
            text=parsed.text, html=parsed.html, sent_at=parsed.date, hints=hints)

    async def _attachment(self, found: EmailAttachment) -> Attachment:
        if found.data is None or found.refused is not None:
            return Attachment(name=found.name, content_type=found.declared_type[:100]
                              or "application/octet-stream", size=found.size,
                              refused=found.refused or "not kept")
        try:
            return await self.store_attachment(found.data, name=found.name)
        except AttachmentRefused as exc:
            return self.refused_attachment(found.name, found.declared_type, found.size, exc)

    def _remember(self, provider_id: str, parsed: ParsedEmail, uid: int) -> None:
        assert self._state is not None
        self._parents[provider_id] = _Parent(parsed.subject, parsed.message_id,
                                             parsed.in_reply_to, parsed.references,
                                             self._state.uidvalidity, uid)
        self._parents.move_to_end(provider_id)
        while len(self._parents) > PARENT_CACHE_SIZE:
            self._parents.popitem(last=False)

    async def close(self) -> None:
        client, self._client, self._state = self._client, None, None
        parsers, self._parsers = self._parsers, None
        try:
            await self._drop_reader()
            if client is not None:
                await client.close()
        finally:
            if parsers is not None:
                await parsers.close()

    # -- outbound --------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        super().check_reply(reply, now=now)
        facts = sender_facts(reply.recipient_handle, self.settings.sender_rules)
        if facts.replies_disabled:
            where = f" at {facts.answer_url}" if facts.answer_url else ""
            raise ReplyRejected(f"replying is disabled: {facts.replies_disabled}{where}")
        if is_amazon_relay(reply.recipient_handle):  # refused before it is queued
            check_amazon_reply(reply.text, None, reply.attachments)

    async def deliver(self, reply: OutboundReply) -> str:
        settings = self.settings
        recipient = reply.recipient_handle.strip()
        files = await self._outbound_files(reply.attachments)
        parent = await self._parent(reply)
        subject = parent.subject if parent is not None else await self._thread_subject(reply)
        in_reply_to: str | None
        references: tuple[str, ...]
        if parent is not None and parent.message_id:
            in_reply_to, references = reply_headers(parent)
        elif reply.in_reply_to and reply.in_reply_to.startswith("<"):
            in_reply_to, references = reply.in_reply_to, (reply.in_reply_to,)
        else:
            in_reply_to, references = None, ()
        message_id = new_message_id(reply_token(reply.thread_id), settings.domain)
        try:
            message = compose_reply(
                from_address=settings.address, to=recipient, subject=subject,
                message_id=message_id, text=reply.text, in_reply_to=in_reply_to,
                references=references, reply_to=settings.reply_to, attachments=files,
                html_part=(html_body(reply.text)
                           if settings.html_replies and not is_amazon_relay(recipient)
                           else None))
        except ValueError as exc:
            raise ReplyRejected(f"cannot compose the email: {exc}") from None
        try:
            await self._submit(message_bytes(message), recipient)
        except RetryableError as exc:
            code = getattr(exc.__cause__, "code", None)
            if code in SMTP_RATE_LIMIT_CODES:
                raise RateLimited(str(exc), retry_after=SMTP_RATE_LIMIT_RETRY_SECONDS) from exc
            raise
        if parent is not None:
            await self._mark_answered(parent)
        return message_id

    async def _submit(self, data: bytes, recipient: str) -> None:
        settings = self.settings

        async def submit(oauth_token: str | None) -> None:
            try:
                await send_message(
                    data, mail_from=settings.address, rcpt_to=[recipient],
                    host=settings.smtp_host, port=self.smtp_port,
                    security=settings.smtp_security, username=settings.smtp_username,
                    password=settings.smtp_password.reveal() if settings.smtp_password else None,
                    oauth_token=oauth_token, timeout=NETWORK_TIMEOUT_SECONDS,
                    ssl_context=self.ssl_context)
            except AuthError as exc:
                if oauth_token is None:
                    raise
                raise TokenExpired(f"SMTP server refused the access token: {exc}") from exc

        if settings.smtp_auth != "xoauth2" or self.refresher is None:
            await submit(None)
            return

        async def with_access_token(token: str) -> None:
            await submit(token)

        await with_token(self.context.tokens, self.instance, self.refresher, with_access_token)

    async def _parent(self, reply: OutboundReply) -> _Parent | None:
        """The mail a reply answers: polled by this process, else as remembered in the
        store (polled by another process, or before a restart)."""
        if not reply.in_reply_to:
            return None
        parent = self._parents.get(reply.in_reply_to)
        if parent is not None:
            return parent
        memo: MessageMemo | None = await self.threads.parent(reply.in_reply_to)
        if memo is None:
            return None
        return _Parent(memo.subject, memo.message_id, memo.in_reply_to, memo.references,
                       memo.uidvalidity, memo.uid)

    async def _thread_subject(self, reply: OutboundReply) -> str:
        """A reply that names no known mail still gets the thread's subject (``Re: …``)."""
        memo = await self.threads.thread(reply.thread_id)
        return memo.subject if memo is not None else ""

    async def _mark_answered(self, parent: _Parent) -> None:
        """``\\Answered`` on the mail just answered, in a short session of its own (the
        polling one may be in IDLE, where no other command may be sent). Best effort: the
        reply is already sent, so a failure is logged, never raised."""
        try:
            client, state = await self._connect()
        except ChannelError as exc:
            log.warning("channel %s: could not flag UID %d as answered: %s", self.instance,
                        parent.uid, type(exc).__name__)
            return
        try:
            if state.uidvalidity == parent.uidvalidity:
                await client.add_flags(parent.uid, "\\Answered")
        except ChannelError as exc:
            log.warning("channel %s: could not flag UID %d as answered: %s", self.instance,
                        parent.uid, type(exc).__name__)
        finally:
            await client.close()

    async def _outbound_files(self, attachments: Sequence[Attachment]) -> list[_OutFile]:
        if not attachments:
            return []
        store = self.context.attachments
        if store is None:
            raise ReplyRejected("this hub stores no attachments")
        files: list[_OutFile] = []
        for item in attachments:
            data = await store.get(item.storage_ref) if item.storage_ref else None
            if data is None:
                raise ReplyRejected(f"attachment {item.name!r} is no longer stored")
            files.append(_OutFile(item.name, item.content_type, data))
        return files
