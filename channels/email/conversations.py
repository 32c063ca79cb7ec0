"""Which conversation a mail joins, decided with what the hub remembers (``context.threads``).

In order:

1. An id of ours among the mail's In-Reply-To, References or quoted body (``threading``)
   names the thread our reply belonged to; it counts only when the mail comes from that
   thread's buyer (a forwarded copy of our mail sent by someone else opens their own).
2. Otherwise an id of one of the buyer's own earlier mails that we stored (Outlook keeps only
   In-Reply-To; a reply to the buyer's second mail names only that one), again only from the
   same sender.
3. Otherwise the same sender with the same subject (prefixes in any language stripped) within
   ``subject_thread_days`` of the last mail under it; after that, or with a subject that is
   only a prefix, a new conversation.
4. Otherwise ``thread_root_id``: a fresh thread, stable for redeliveries.

A mail joined by 1 or 2 whose subject differs from the thread's while the thread's
conversation is resolved opens a new conversation: the buyer hit "reply" on an old mail to ask
something new. Without ``context.threads`` (a bare kit harness) only 1 (without the sender
check) and 4 apply, as in the channel's first cut.

The memos written here (their TTLs below) are also what a reply's Subject and References are
built from when the mail it answers was polled by another process or before a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from typing import Any, Final

import msgspec

from channels.email.mime import ParsedEmail
from channels.email.threading import (
    normalize_subject,
    reply_token_of,
    thread_candidates,
)
from channels.services.threads import MemoWrite, ThreadMemory, check_memo

log = logging.getLogger(__name__)

THREAD_ID: Final = re.compile(r"e[0-9a-f]{32}")
MESSAGE_MEMO_TTL_SECONDS: Final = 180 * 86400
"""How long a buyer's mail can still be threaded onto and replied to with its headers."""
MAX_MEMO_REFERENCES: Final = 20


class MessageMemo(msgspec.Struct, frozen=True, omit_defaults=True):
    """One stored mail: its thread, sender and what a reply to it needs."""

    thread_id: str
    sender: str
    subject: str
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    uidvalidity: int = 0
    uid: int = 0


class ThreadMemo(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thread: whose it is, its current subject (for comparing and for "Re:")."""

    buyer: str
    subject_key: str
    subject: str
    at: float


class SubjectMemo(msgspec.Struct, frozen=True):
    thread_id: str
    at: float


_message_memo = msgspec.msgpack.Decoder(MessageMemo)
_thread_memo = msgspec.msgpack.Decoder(ThreadMemo)
_subject_memo = msgspec.msgpack.Decoder(SubjectMemo)
_encode = msgspec.msgpack.encode


def mail_time(parsed: ParsedEmail, now: float) -> float:
    """When a mail was written, for the subject window: its Date, never later than now (a
    backlog read after downtime keeps its own spacing; a Date in the future counts as now)."""
    return min(parsed.date, now) if parsed.date else now


def thread_root_id(parsed: ParsedEmail) -> str:
    """A thread of its own: the sender plus the mail's first References id, else In-Reply-To,
    else its own Message-ID (or content digest), so a redelivery lands in the same one."""
    if parsed.references:
        root = parsed.references[0]
    else:
        root = parsed.in_reply_to or parsed.message_id or "sha256:" + parsed.content_digest
    digest = hashlib.sha256(f"{parsed.from_address}\n{root}".encode()).hexdigest()
    return "e" + digest[:32]


def fresh_thread_id(parsed: ParsedEmail) -> str:
    """A new conversation for a mail that must not join the one it references."""
    own = parsed.message_id or "sha256:" + parsed.content_digest
    digest = hashlib.sha256(f"{parsed.from_address}\n{own}\nnew".encode()).hexdigest()
    return "e" + digest[:32]


def provider_id_of(parsed: ParsedEmail) -> str:
    return parsed.message_id or "sha256:" + parsed.content_digest


def message_key(provider_id: str) -> str:
    return "m:" + provider_id


def thread_key(thread_id: str) -> str:
    return "t:" + thread_id


def subject_key(sender: str, key: str) -> str:
    return f"s:{sender}\x00{key}"


class BatchMemory:
    """A batch's view of the thread memory: what the batch may read, fetched up front in two
    round trips, and what it writes, kept here and written in one round trip at the end.

    Deciding a backlog mail by mail cost about five sequential round trips each (bench.email
    measured 0.07 of the FETCH-only rate with thread memory against 0.22 without). Reads see
    the batch's own writes, so a mail that replies to an earlier mail of the same batch
    threads exactly as it did when every memo went to Redis at once; the writes still reach
    Redis before the batch is stored (``EmailThreads.batch``).
    """

    def __init__(self, memory: ThreadMemory, instance: str) -> None:
        self.memory = memory
        self.instance = instance
        self.known: dict[str, bytes | None] = {}
        self.pending: list[MemoWrite] = []

    async def prefetch(self, keys: Iterable[str]) -> None:
        wanted = [key for key in dict.fromkeys(keys) if key not in self.known]
        if wanted:
            values = await self.memory.recall_many(self.instance, wanted)
            self.known.update(zip(wanted, values, strict=True))

    async def recall(self, instance: str, key: str) -> bytes | None:
        if instance == self.instance and key in self.known:
            return self.known[key]
        return await self.memory.recall(instance, key)

    async def recall_many(self, instance: str, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.recall(instance, key) for key in keys]

    async def remember(self, instance: str, key: str, value: bytes, *,
                       ttl_seconds: float, thread_id: str) -> None:
        if instance != self.instance:
            await self.memory.remember(instance, key, value, ttl_seconds=ttl_seconds,
                                       thread_id=thread_id)
            return
        check_memo(value, ttl_seconds)  # refused here, as the store would, not at the flush
        self.known[key] = value
        self.pending.append(MemoWrite(key, value, ttl_seconds, thread_id))

    async def remember_many(self, instance: str, writes: Sequence[MemoWrite]) -> None:
        for write in writes:
            await self.remember(instance, write.key, write.value,
                                ttl_seconds=write.ttl_seconds, thread_id=write.thread_id)

    async def thread_status(self, instance: str, thread_id: str) -> str | None:
        return await self.memory.thread_status(instance, thread_id)

    async def thread_contact(self, instance: str, thread_id: str) -> str | None:
        return await self.memory.thread_contact(instance, thread_id)

    async def flush(self) -> None:
        if self.pending:
            writes, self.pending = self.pending, []
            await self.memory.remember_many(self.instance, writes)


def _reads_of(parsed: ParsedEmail) -> list[str]:
    """The memos ``thread_for`` and ``remember`` may read for a mail, before any is known."""
    found = [thread_key(thread_root_id(parsed))]
    for candidate in thread_candidates(parsed):
        token = reply_token_of(candidate)
        if token is None:
            found.append(message_key(candidate))
        elif THREAD_ID.fullmatch(token):
            found.append(thread_key(token))
    subject = normalize_subject(parsed.subject)
    if subject.key and parsed.from_address:
        found.append(subject_key(parsed.from_address, subject.key))
    return found


def _threads_named(values: Iterable[bytes | None]) -> list[str]:
    """The thread memos a first read leads to (a parent mail's thread, a subject's thread)."""
    found: list[str] = []
    for value in values:
        if value is None:
            continue
        for decoder in (_message_memo, _subject_memo):
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                found.append(thread_key(decoder.decode(value).thread_id))
                break
    return found


class EmailThreads:
    """Thread decisions and the memos behind them, for one mailbox (one channel instance)."""

    def __init__(self, instance: str, memory: ThreadMemory | None, *,
                 subject_window_seconds: float) -> None:
        self.instance = instance
        self.memory = memory
        self.subject_window_seconds = subject_window_seconds

    async def prefetch(self, mails: Sequence[ParsedEmail]) -> BatchMemory | None:
        """A batch memory holding every memo deciding ``mails`` may read (two round trips),
        for ``batch``; None when there is no memory to read or no mail."""
        memory = self.memory
        if memory is None or isinstance(memory, BatchMemory) or not mails:
            return None
        buffered = BatchMemory(memory, self.instance)
        await buffered.prefetch(key for mail in mails for key in _reads_of(mail))
        await buffered.prefetch(_threads_named(buffered.known.values()))
        return buffered

    @contextlib.asynccontextmanager
    async def batch(self, mails: Sequence[ParsedEmail], *,
                    prefetched: BatchMemory | None = None) -> AsyncIterator[None]:
        """Decide and remember ``mails`` (in order, inside the block) against one read of
        their memos, and write the memos in one round trip when the block ends. A block that
        raises writes nothing: the batch is not stored, and a redelivery decides afresh.
        ``prefetched``: ``prefetch(mails)`` made earlier (after every memo before these was
        written), so the block does not wait for the reads."""
        memory = self.memory
        if memory is None or isinstance(memory, BatchMemory) or not mails:
            yield
            return
        buffered = (prefetched if prefetched is not None and prefetched.memory is memory
                    and not prefetched.pending else await self.prefetch(mails))
        assert buffered is not None
        self.memory = buffered
        try:
            yield
        finally:
            self.memory = memory
        await buffered.flush()

    async def thread_for(self, parsed: ParsedEmail, *, now: float | None = None) -> str:
        now = mail_time(parsed, time.time() if now is None else now)
        candidates = thread_candidates(parsed)
        memory = self.memory
        if memory is None:
            for candidate in candidates:
                token = reply_token_of(candidate)
                if token is not None and THREAD_ID.fullmatch(token):
                    return token
            return thread_root_id(parsed)
        sender = parsed.from_address
        subject = normalize_subject(parsed.subject)
        joined = await self._by_reference(memory, candidates, sender)
        if joined is not None:
            thread_id, memo = joined
            if (memo is not None and subject.key and memo.subject_key
                    and subject.key != memo.subject_key
                    and await memory.thread_status(self.instance, thread_id) == "resolved"):
                return fresh_thread_id(parsed)
            return thread_id
        if subject.key and sender:
            found = await memory.recall(self.instance, subject_key(sender, subject.key))
            if found is not None:
                memo_s = _subject_memo.decode(found)
                if now - memo_s.at <= self.subject_window_seconds:
                    return memo_s.thread_id
        return thread_root_id(parsed)

    async def _by_reference(self, memory: ThreadMemory, candidates: list[str], sender: str,
                            ) -> tuple[str, ThreadMemo | None] | None:
        for candidate in candidates:
            token = reply_token_of(candidate)
            if token is not None:
                if not THREAD_ID.fullmatch(token):
                    continue
                memo = await self.thread(token)
                # the thread's buyer: from its memo, else (a thread older than the memos,
                # or one whose memo expired) the conversation's contact
                buyer = (memo.buyer if memo is not None
                         else await memory.thread_contact(self.instance, token))
                if buyer is not None and buyer != sender:
                    log.info("channel %s: a mail names our message but comes from another "
                             "sender than the thread's buyer; not joined", self.instance)
                    continue
                return token, memo
            found = await memory.recall(self.instance, message_key(candidate))
            if found is None:
                continue
            parent = _message_memo.decode(found)
            if parent.sender != sender:
                continue
            return parent.thread_id, await self.thread(parent.thread_id)
        return None

    async def thread(self, thread_id: str) -> ThreadMemo | None:
        if self.memory is None:
            return None
        found = await self.memory.recall(self.instance, thread_key(thread_id))
        return _thread_memo.decode(found) if found is not None else None

    async def parent(self, provider_id: str) -> MessageMemo | None:
        if self.memory is None:
            return None
        found = await self.memory.recall(self.instance, message_key(provider_id))
        return _message_memo.decode(found) if found is not None else None

    async def remember(self, parsed: ParsedEmail, thread_id: str, *, uidvalidity: int,
                       uid: int, now: float | None = None) -> None:
        """Write the memos of a mail about to be stored (before: a crash in between leaves
        memos that decide a redelivery the same way, never a stored mail without them)."""
        memory = self.memory
        if memory is None:
            return
        now = mail_time(parsed, time.time() if now is None else now)
        subject = normalize_subject(parsed.subject)
        references = parsed.references
        if len(references) > MAX_MEMO_REFERENCES:
            references = references[:1] + references[-(MAX_MEMO_REFERENCES - 1):]
        message = MessageMemo(
            thread_id=thread_id, sender=parsed.from_address, subject=parsed.subject[:998],
            message_id=parsed.message_id, in_reply_to=parsed.in_reply_to,
            references=references, uidvalidity=uidvalidity, uid=uid)
        # Independent keys, so written side by side (round trips of a backlog's every mail);
        # the thread memo keeps its buyer, so it is read before it is rewritten. A batch's
        # memory answers from what it holds without a round trip: one step after the other
        # there (gather's tasks and futures were 7 % of the loop on a backlog).
        together = _one_by_one if isinstance(memory, BatchMemory) else _together
        _, known = await together(
            memory.remember(self.instance, message_key(provider_id_of(parsed)),
                            _encode(message), ttl_seconds=MESSAGE_MEMO_TTL_SECONDS,
                            thread_id=thread_id),
            self.thread(thread_id))
        assert known is None or isinstance(known, ThreadMemo)
        buyer = known.buyer if known is not None else parsed.from_address
        writes = [memory.remember(
            self.instance, thread_key(thread_id),
            _encode(ThreadMemo(buyer=buyer, subject_key=subject.key,
                               subject=parsed.subject[:998], at=now)),
            ttl_seconds=MESSAGE_MEMO_TTL_SECONDS, thread_id=thread_id)]
        if subject.key and parsed.from_address:  # no sender: nothing to scope a subject to
            writes.append(memory.remember(
                self.instance, subject_key(parsed.from_address, subject.key),
                _encode(SubjectMemo(thread_id=thread_id, at=now)),
                ttl_seconds=max(self.subject_window_seconds, 1.0), thread_id=thread_id))
        await together(*writes)


async def _one_by_one(*steps: Coroutine[Any, Any, Any]) -> list[Any]:
    """``_together`` for steps that do not wait on the network (``BatchMemory``): in order,
    without a task each; every step runs (and is awaited) even when one fails, and the first
    failure is raised, as ``_together`` does."""
    results: list[Any] = []
    try:
        for step in steps:
            try:
                results.append(await step)
            except Exception as exc:
                results.append(exc)
    finally:  # cancelled midway: the steps not reached are closed, never left unawaited
        for step in steps[len(results) + 1:]:
            step.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def _together(*steps: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run ``steps`` concurrently and wait for every one; then raise the first failure as
    itself (not an ExceptionGroup: the supervisor classifies Redis errors by type)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
