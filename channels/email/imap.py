"""The IMAP side of the email channel: one connection to one mailbox (aioimaplib).

What the adapter needs and nothing more: connect (implicit TLS, STARTTLS or plain), log in
(LOGIN or ``AUTHENTICATE XOAUTH2``), SELECT, fetch everything above a UID without touching
``\\Seen`` (``BODY.PEEK[]``), wait for news (IDLE when advertised, re-issued before the server's
29-minute cut-off; NOOP polling otherwise) and set ``\\Answered``. Every step has a timeout, and
every failure leaves as one of the channel errors: connection trouble, timeouts and a dropped
connection are ``RetryableError`` (reconnecting is the poller's job, with backoff), refused
credentials ``AuthError``.

aioimaplib never fails a pending command when the connection drops (it waits for a reply that
will not come), so this client races each call against its own "connection lost" event.

Cursor (the contract's opaque bytes, see ``encode_cursor``): ``(UIDVALIDITY, last UID)``. UIDs
name a message only together with UIDVALIDITY (RFC 3501 §2.3.1.1): when SELECT reports another
UIDVALIDITY than the cursor's, every UID the cursor knows is void, so ``resume_uid`` answers 0
and the adapter refetches the whole mailbox, relying on the ingest's Message-ID/content dedupe
to drop what it already stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aioimaplib

from channels.errors import AuthError, PermanentError, RetryableError

Security = Literal["tls", "starttls", "none"]
T = TypeVar("T")

IDLE_RENEW_SECONDS = 29 * 60  # RFC 2177: servers may drop an IDLE client after 30 minutes
DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
CURSOR_PREFIX = b"imap1:"

_UID_RE = re.compile(rb"\bUID (\d+)")
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")
_FETCH_RE = re.compile(rb"^\d+ FETCH \(")
_SEARCH_RE = re.compile(rb"[0-9 ]*")  # aioimaplib strips "SEARCH" off "* SEARCH 3 4 7"
_CODE_RE = re.compile(r"\[([A-Z0-9.-]+)")
_AUTH_CODES = {"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED"}


class _NoWireLogs(logging.Filter):
    """aioimaplib logs every line it sends and receives (DEBUG) and unparsed server lines
    (INFO): message bodies, and a password that LOGIN's quoting or XOAUTH2's base64 hides from
    its scrubbing. Neither may reach our logs, whatever level an operator sets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_wire_logger = logging.getLogger("aioimaplib.aioimaplib")
if not any(isinstance(f, _NoWireLogs) for f in _wire_logger.filters):
    _wire_logger.addFilter(_NoWireLogs())


def encode_cursor(uidvalidity: int, last_uid: int) -> bytes:
    """``b"imap1:<uidvalidity>:<last_uid>"``: readable in ``inboxhub`` output, versioned."""
    if uidvalidity <= 0 or last_uid < 0:
        raise ValueError("uidvalidity must be positive and last_uid not negative")
    return CURSOR_PREFIX + f"{uidvalidity}:{last_uid}".encode()


def decode_cursor(value: bytes) -> tuple[int, int]:
    """``(uidvalidity, last_uid)``; ValueError on anything ``encode_cursor`` did not write."""
    if not value.startswith(CURSOR_PREFIX):
        raise ValueError("not an IMAP cursor")
    parts = value[len(CURSOR_PREFIX):].split(b":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError("malformed IMAP cursor")
    uidvalidity, last_uid = int(parts[0]), int(parts[1])
    if uidvalidity <= 0:
        raise ValueError("malformed IMAP cursor")
    return uidvalidity, last_uid


def resume_uid(cursor: bytes | None, uidvalidity: int, uidnext: int | None = None) -> int:
    """The last UID already stored for this mailbox under ``uidvalidity`` (0: fetch all).

    A cursor from another UIDVALIDITY describes messages that no longer have those UIDs: resync
    from the start and let the Message-ID/content dedupe drop the ones stored before. So does a
    cursor at or beyond ``uidnext`` (a restored mailbox that kept its UIDVALIDITY, against the
    RFC): new mail would otherwise sit below the cursor for ever."""
    if cursor is None:
        return 0
    old_validity, last_uid = decode_cursor(cursor)
    if old_validity != uidvalidity:
        return 0
    if uidnext is not None and last_uid >= uidnext:
        return 0
    return last_uid


def mailbox_arg(name: str) -> str:
    """A mailbox name as an IMAP argument: modified UTF-7 (RFC 3501 §5.1.3), quoted.

    aioimaplib sends arguments as given, so "Pedidos Amazon" would be two arguments and
    "Envíos" invalid."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            utf16 = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: list[int]) -> str:
    """Ascending UIDs as an IMAP sequence set with ranges (``1:3,7``): short command lines."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def xoauth2_string(user: str, token: str) -> str:
    """Google's/Microsoft's XOAUTH2 initial response, before base64."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


@dataclass(frozen=True)
class MailboxState:
    """What SELECT said: UIDs are meaningful only with ``uidvalidity``."""

    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes
    flags: frozenset[str]


@dataclass(frozen=True)
class SkippedMessage:
    """A message over ``max_message_bytes``: not downloaded; the adapter reports and skips it."""

    uid: int
    size: int


@dataclass
class FetchResult:
    messages: list[FetchedMessage] = field(default_factory=list)
    skipped: list[SkippedMessage] = field(default_factory=list)
    more: bool = False  # the batch limit stopped it: fetch again from ``last_uid``

    @property
    def last_uid(self) -> int | None:
        """The highest UID seen (fetched or skipped): the next cursor position once stored."""
        uids = [m.uid for m in self.messages] + [s.uid for s in self.skipped]
        return max(uids) if uids else None


async def _settle(*tasks: asyncio.Future[Any]) -> None:
    """Cancel what is still running and wait for it, without swallowing our own cancellation
    (``asyncio.wait`` raises CancelledError only when the caller itself is cancelled)."""
    for task in tasks:
        if not task.done():
            task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit


def _text(response: Any) -> str:
    parts = []
    for line in response.lines:
        if isinstance(line, bytes | bytearray) and len(line) < 1000:
            parts.append(bytes(line).decode("utf-8", "replace"))
    return " ".join(parts).strip()[:300]


class _FetchCommand(aioimaplib.FetchCommand):  # type: ignore[misc]
    """aioimaplib's FETCH command (2.0.3) with ``wait_data`` made incremental.

    Upstream asks, after every read, whether the answer is complete by scanning every line
    received so far for the last ``n FETCH (`` line and counting the parentheses after it:
    quadratic in a batch (a 100-message FETCH is read in hundreds of chunks, each rescanning
    hundreds of lines), and event-loop time the channel needs for storing. The last such line
    is found once per new line here; the answer (parentheses balanced after it) is the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scanned = 0
        self._last_fetch = 0

    def wait_data(self) -> bool:
        lines = self._resp_lines
        for index in range(self._scanned, len(lines)):
            line = lines[index]
            if isinstance(line, bytes) and self.FETCH_MESSAGE_DATA_RE.match(line):
                self._last_fetch = index
        self._scanned = len(lines)
        return not aioimaplib.matched_parenthesis(b"".join(
            line for line in lines[self._last_fetch:] if isinstance(line, bytes)))


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, plus the SASL error challenge it does not answer, and its
    response parser as a loop."""

    sasl_challenge: bytes = b""

    def _handle_responses(self, data: bytes, line_handler: Any,
                          current_cmd: Any = None) -> None:
        """aioimaplib's own parser (2.0.3) with its tail recursion turned into a loop.

        Upstream calls itself once per line of a read (up to 256 KiB), so an answer of more
        than about 1000 short lines in one read (``UID FETCH 1:* (UID RFC822.SIZE)`` of a
        large mailbox, a long list of EXISTS) overflowed the stack inside ``data_received``:
        the connection was dropped and every retry failed the same way (aioimaplib issue
        #118, open). Same steps, same order, same exceptions."""
        while True:
            if not data:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise aioimaplib.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                data = current_cmd.append_literal_data(data)
                if current_cmd.wait_literal_data():
                    raise aioimaplib.IncompleteRead(current_cmd)
            line, separator, tail = data.partition(aioimaplib.CRLF)
            if not separator:
                raise aioimaplib.IncompleteRead(current_cmd, data)
            cmd = line_handler(line, current_cmd)
            begin_literal = aioimaplib.literal_data_re.match(line)
            if begin_literal:
                if cmd is None:
                    cmd = aioimaplib.Command("NIL", "unused")
                cmd.begin_literal_data(int(begin_literal.group("size")))
                data, current_cmd = tail, cmd
            elif cmd is not None and cmd.wait_data():
                data, current_cmd = tail, cmd
            else:
                data, current_cmd = tail, None

    async def fetch(self, message_set: str, message_parts: str, by_uid: bool = False,
                    timeout: float | None = None) -> Any:
        """Upstream's ``fetch`` with ``_FetchCommand``."""
        return await self.execute(
            _FetchCommand(self.new_tag(), message_set, message_parts,
                          prefix="UID" if by_uid else "", loop=self.loop, timeout=timeout))

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # XOAUTH2/OAUTHBEARER failure (RFC 7628 §3.2.2): the server sends "+ <base64 JSON
            # error>" and waits for an empty client response before its tagged NO; unanswered,
            # the login would hang until the timeout instead of failing as AuthError.
            self.sasl_challenge = line[1:].strip()
            self.transport.write(b"\r\n")
            return
        super()._continuation(line)


class _IMAP4(aioimaplib.IMAP4):  # type: ignore[misc]
    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Any = None, ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(local_loop.create_connection(
            lambda: self.protocol, host, port, ssl=ssl_context))


class ImapClient:
    """One session on one mailbox. Not reusable after ``close``: make a new one to reconnect."""

    def __init__(
        self, *, host: str, port: int, security: Security, username: str,
        password: str | None = None, oauth_token: str | None = None, mailbox: str = "INBOX",
        timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        idle_renew_seconds: float = IDLE_RENEW_SECONDS, poll_interval: float = 60.0,
    ) -> None:
        if security not in ("tls", "starttls", "none"):
            raise ValueError(f"unknown IMAP security {security!r}")
        if (password is None) == (oauth_token is None):
            raise ValueError("give exactly one of password or oauth_token")
        self.host, self.port, self.security = host, port, security
        self.username, self.mailbox = username, mailbox
        self._password, self._oauth_token = password, oauth_token
        self.timeout = timeout
        self._ssl_context = ssl_context
        self.max_message_bytes = max_message_bytes
        self.idle_renew_seconds = idle_renew_seconds
        self.poll_interval = poll_interval
        self._imap: _IMAP4 | None = None
        self._lost = asyncio.Event()
        self.state: MailboxState | None = None
        self.idling = asyncio.Event()  # set while an IDLE is acknowledged (tests wait on it)
        self.idle_commands = 0  # IDLE commands issued in this session (re-issues included)
        # The server announced a message (untagged EXISTS) in the answer to some command
        # since the last fetch began: Dovecot reports it once, so an IDLE started after it
        # would wait for the next change. wait_for_new returns at once instead.
        self.announced = False

    # -- plumbing ---------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    async def _call(self, what: str, aw: Awaitable[T], timeout: float | None = None) -> T:
        """Run one IMAP step with a timeout, failing at once if the connection drops."""
        if self._lost.is_set():
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: close it rather than leave it un-awaited
            raise RetryableError(f"IMAP connection to {self.host} lost")
        step = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({step, lost}, timeout=timeout or self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _settle(step, lost)
        if step in done and not step.cancelled():
            exc = step.exception()
            if exc is None:
                result = step.result()
                if what != "IDLE" and _announces(result):
                    self.announced = True
                return result
            if isinstance(exc, aioimaplib.CommandTimeout | TimeoutError):
                raise RetryableError(f"IMAP {what} timed out") from exc
            if isinstance(exc, OSError | ssl.SSLError):
                raise RetryableError(f"IMAP {what} failed: {exc}") from exc
            if isinstance(exc, aioimaplib.AioImapException):
                raise RetryableError(f"IMAP {what} failed: {exc}") from exc
            raise exc
        if self._lost.is_set():
            raise RetryableError(f"IMAP connection to {self.host} lost during {what}")
        raise RetryableError(f"IMAP {what} timed out after {timeout or self.timeout}s")

    def _client(self) -> _IMAP4:
        if self._imap is None:
            raise RuntimeError("not connected")
        return self._imap

    # -- session ----------------------------------------------------------------------------

    async def connect(self) -> MailboxState:
        """Connect, secure, authenticate and SELECT the mailbox."""
        context = self._tls_context() if self.security == "tls" else None
        self._imap = _IMAP4(host=self.host, port=self.port, timeout=self.timeout,
                            conn_lost_cb=self._on_lost, ssl_context=context)
        try:
            await self._call("connect", self._imap.wait_hello_from_server())
            if self.security == "starttls":
                await self._starttls()
            await self._authenticate()
            state = await self._select()
            self.announced = False  # SELECT's EXISTS is the count, not news
            return state
        except BaseException:
            await self.close()
            raise

    async def _starttls(self) -> None:
        imap = self._client()
        protocol = imap.protocol
        if not imap.has_capability("STARTTLS"):
            raise PermanentError(f"IMAP server {self.host} does not offer STARTTLS")
        response = await self._call("STARTTLS", protocol.execute(
            aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)))
        if response.result != "OK":
            raise RetryableError(f"IMAP STARTTLS refused: {_text(response)}")
        loop = asyncio.get_running_loop()
        transport = await self._call("TLS handshake", loop.start_tls(
            protocol.transport, protocol, self._tls_context(), server_hostname=self.host))
        protocol.transport = transport
        await self._call("CAPABILITY", protocol.capability())  # RFC 3501: forget the old list

    async def _authenticate(self) -> None:
        imap = self._client()
        if self._oauth_token is not None:
            if not imap.has_capability("AUTH=XOAUTH2"):
                # the server, not the token: refreshing cannot help (a config to fix)
                raise PermanentError(f"IMAP server {self.host} does not offer AUTH=XOAUTH2")
            if not imap.has_capability("SASL-IR"):
                # aioimaplib sends the token inline (RFC 4959); Gmail and Outlook offer SASL-IR
                raise PermanentError(f"IMAP server {self.host} offers XOAUTH2 without SASL-IR")
            response = await self._call("AUTHENTICATE", imap.xoauth2(self.username,
                                                                     self._oauth_token))
        else:
            if imap.has_capability("LOGINDISABLED"):
                raise AuthError(f"IMAP server {self.host} refuses LOGIN on this connection "
                                "(LOGINDISABLED): use tls or starttls")
            assert self._password is not None
            response = await self._call("LOGIN", imap.login(self.username, self._password))
        if response.result != "OK":
            text = _text(response)
            challenge = getattr(imap.protocol, "sasl_challenge", b"")
            if challenge:  # base64 JSON such as {"status":"401","schemes":"bearer",...}
                with contextlib.suppress(ValueError):
                    text += " " + base64.b64decode(challenge).decode("utf-8", "replace")[:200]
            code = _CODE_RE.search(text)
            if response.result == "NO" or (code and code.group(1) in _AUTH_CODES):
                if code and code.group(1) == "UNAVAILABLE":
                    raise RetryableError(f"IMAP login unavailable: {text}")
                raise AuthError(f"IMAP login refused for {self.username}: {text}")
            raise RetryableError(f"IMAP login failed: {text}")
        await self._call("CAPABILITY", imap.protocol.capability())

    async def _select(self) -> MailboxState:
        response = await self._call("SELECT", self._client().select(mailbox_arg(self.mailbox)))
        if response.result != "OK":
            raise PermanentError(f"IMAP SELECT {self.mailbox} refused: {_text(response)}")
        uidvalidity = uidnext = exists = None
        for line in response.lines:
            if not isinstance(line, bytes | bytearray):
                continue
            text = bytes(line)
            if m := re.search(rb"\[UIDVALIDITY (\d+)\]", text):
                uidvalidity = int(m.group(1))
            if m := re.search(rb"\[UIDNEXT (\d+)\]", text):
                uidnext = int(m.group(1))
            if m := re.match(rb"(\d+) EXISTS", text):
                exists = int(m.group(1))
        if uidvalidity is None:
            raise PermanentError(f"IMAP server {self.host} sent no UIDVALIDITY for "
                                 f"{self.mailbox}")
        self.state = MailboxState(uidvalidity, uidnext, exists or 0)
        return self.state

    def has_capability(self, name: str) -> bool:
        return bool(self._client().has_capability(name))

    # -- messages ---------------------------------------------------------------------------

    async def _uid(self, what: str, *args: str, timeout: float | None = None) -> Any:
        response = await self._call(what, self._client().protocol.uid(
            *args, timeout=timeout or self.timeout), timeout=(timeout or self.timeout) + 1)
        if response.result != "OK":
            raise RetryableError(f"IMAP {what} failed: {_text(response)}")
        return response

    async def fetch_since(self, last_uid: int, *, limit: int = 100,
                          max_batch_bytes: int = 32 * 1024 * 1024) -> FetchResult:
        """The messages with the lowest UIDs above ``last_uid``, ascending, flags untouched.

        ``UID SEARCH`` for the UIDs above, then the sizes (``RFC822.SIZE``) of the lowest
        ``limit`` of them, so a message over ``max_message_bytes`` is reported in
        ``skipped`` and never downloaded; then the bodies with ``BODY.PEEK[]``, at most
        ``limit`` messages or ``max_batch_bytes`` (always at least one) per call, and
        ``more`` says whether to call again. The result covers a UID prefix: every UID up to
        ``last_uid`` of the result was fetched, skipped or expunged, so it is safe as cursor.
        ``n:*`` matches the highest message even below n (RFC 3501), hence the client-side
        ``uid > last_uid``. A NOOP first: a session only sees messages that arrived after its
        last sync once the server has had a command to announce them in (Dovecot's UID FETCH
        does not look)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        noop = await self._call("NOOP", self._client().noop())
        # what the NOOP announced, the search below sees; what later answers announce, not
        self.announced = False
        if noop.result != "OK":
            raise RetryableError(f"IMAP NOOP failed: {_text(noop)}")
        # The UIDs above the cursor (one line), then the sizes of this batch's candidates
        # only: asking every message above the cursor for its size made a first sync of N
        # messages read N lines per batch, N^2/limit in all.
        search = await self._call("UID SEARCH", self._client().protocol.search(
            "UID", f"{last_uid + 1}:*", charset=None, by_uid=True))
        if search.result != "OK":
            raise RetryableError(f"IMAP UID SEARCH failed: {_text(search)}")
        # A first sync's every search answers every UID above (10,000 on a 10,000-mail
        # backlog): read with map(int), not a comprehension that parses each twice.
        found: set[int] = set()
        for line in search.lines:
            if isinstance(line, bytes | bytearray) and _SEARCH_RE.fullmatch(line):
                found.update(map(int, line.split()))
        above = sorted(uid for uid in found if uid > last_uid)
        if not above:
            return FetchResult()
        candidates = above[:limit]
        response = await self._uid("UID FETCH", "fetch", uid_set(candidates),
                                   "(UID RFC822.SIZE)")
        sizes: dict[int, int] = {}
        for line in response.lines:
            if isinstance(line, bytes | bytearray) and _FETCH_RE.match(bytes(line)):
                uid_m, size_m = _UID_RE.search(line), _SIZE_RE.search(line)
                if uid_m and size_m and int(uid_m.group(1)) > last_uid:
                    sizes[int(uid_m.group(1))] = int(size_m.group(1))
        result = FetchResult(more=len(above) > len(candidates))
        wanted: list[int] = []
        total = 0
        for uid in sorted(sizes):
            size = sizes[uid]
            if size > self.max_message_bytes:
                result.skipped.append(SkippedMessage(uid, size))
                continue
            if wanted and (len(wanted) >= limit or total + size > max_batch_bytes):
                result.more = True
                break
            wanted.append(uid)
            total += size
        if not wanted:
            return result
        # a large batch needs longer than one command's timeout: allow 1 MB/s on top
        timeout = self.timeout + total / 1_000_000
        response = await self._uid("UID FETCH", "fetch", uid_set(wanted),
                                   "(UID FLAGS BODY.PEEK[])", timeout=timeout)
        fetched: dict[int, FetchedMessage] = {}
        lines = response.lines
        i = 0
        while i < len(lines):
            line = lines[i]
            if isinstance(line, bytes) and _FETCH_RE.match(line):
                meta = [line]
                body: bytes | None = None
                j = i + 1
                while j < len(lines) and not (isinstance(lines[j], bytes)
                                              and _FETCH_RE.match(lines[j])):
                    if isinstance(lines[j], bytearray) and body is None:
                        body = bytes(lines[j])
                    elif isinstance(lines[j], bytes | bytearray):
                        meta.append(bytes(lines[j]))
                    j += 1
                head = b" ".join(meta)
                uid_m = _UID_RE.search(head)
                if uid_m and body is not None:
                    uid = int(uid_m.group(1))
                    flags_m = _FLAGS_RE.search(head)
                    flags = frozenset(flags_m.group(1).decode().split()) if flags_m else frozenset()
                    if uid in sizes and uid not in fetched:
                        fetched[uid] = FetchedMessage(uid, body, flags)
                i = j
            else:
                i += 1
        result.messages = [fetched[u] for u in sorted(fetched)]
        return result

    async def add_flags(self, uid: int, *flags: str) -> None:
        """E.g. ``add_flags(uid, "\\\\Answered")`` after a reply went out."""
        for flag in flags:
            if not re.fullmatch(r"\\?[A-Za-z0-9$_.-]+", flag):
                raise ValueError(f"not an IMAP flag: {flag!r}")
        await self._uid("UID STORE", "store", str(uid), "+FLAGS.SILENT", f"({' '.join(flags)})")

    # -- waiting ----------------------------------------------------------------------------

    async def wait_for_new(self, timeout: float) -> bool:
        """Until the server reports a change (True) or ``timeout`` passes (False).

        True may be spurious (an EXPUNGE, another client's flag change): the caller fetches
        either way. With IDLE the command is ended with DONE and re-issued every
        ``idle_renew_seconds``; without it, NOOP every ``poll_interval``."""
        if self.announced:  # a message came during the last fetch, after its search
            self.announced = False
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.has_capability("IDLE"):
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                if await self._idle_once(min(remaining, self.idle_renew_seconds)):
                    return True
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self._call("wait", asyncio.sleep(min(remaining, self.poll_interval)),
                             timeout=remaining + 1)
            response = await self._call("NOOP", self._client().noop())
            if any(isinstance(line, bytes) and re.search(rb"\d+ (EXISTS|RECENT)", line)
                   for line in response.lines):
                return True

    async def _idle_once(self, seconds: float) -> bool:
        imap = self._client()
        self.idle_commands += 1
        idle_task: asyncio.Future[Any] = await self._call("IDLE", imap.idle_start(
            timeout=seconds + 3600))  # our own deadline below ends it; never aioimaplib's timer
        self.idling.set()
        news = False
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while not news:
                remaining = end - loop.time()
                if remaining <= 0:
                    break
                try:
                    push = await self._call("IDLE", imap.wait_server_push(timeout=remaining),
                                            timeout=remaining + 1)
                except RetryableError:
                    if self._lost.is_set():
                        raise
                    break  # our own time is up: renew the IDLE
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                news = any(isinstance(line, bytes | bytearray)
                           and re.search(rb"\d+ (EXISTS|RECENT)", bytes(line))
                           for line in (push if isinstance(push, list) else []))
        finally:
            self.idling.clear()
        imap.idle_done()
        response = await self._call("DONE", idle_task)
        if response.result != "OK":
            raise RetryableError(f"IMAP IDLE ended with {response.result}: {_text(response)}")
        return news

    # -- ending -----------------------------------------------------------------------------

    async def close(self) -> None:
        """LOGOUT if the connection is still up, then drop it; never raises."""
        imap, self._imap = self._imap, None
        if imap is None:
            return
        if not self._lost.is_set() and imap.protocol.state in ("AUTH", "SELECTED", "NONAUTH"):
            with contextlib.suppress(Exception):
                self._imap = imap
                if imap.has_pending_idle():  # cancelled mid-IDLE: no command before DONE
                    imap.idle_done()
                await self._call("LOGOUT", imap.logout(), timeout=min(self.timeout, 5))
            self._imap = None
        transport = imap.protocol.transport
        if transport is not None:
            transport.close()
        pending = [*imap.tasks, *imap.protocol.tasks]
        if imap._client_task is not None:
            pending.append(imap._client_task)
        await _settle(*pending)
        if imap._idle_waiter is not None:
            imap._idle_waiter.cancel()

    async def __aenter__(self) -> ImapClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()



def _announces(response: object) -> bool:
    """Whether a command's answer carries an untagged ``* n EXISTS``."""
    lines = getattr(response, "lines", None)
    if not isinstance(lines, list):
        return False
    return any(isinstance(line, bytes | bytearray) and line.endswith(b" EXISTS")
               and line[:1].isdigit() for line in lines)
