"""The Redis store: every read and write the pipeline and the API make.

Multi-key steps go through the Lua scripts in ``storage/lua`` (one atomic step each); single-key
reads are plain commands. The frozen payload of a message is stored as msgpack beside its
mutable delivery fields, so a status change never rewrites the payload.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from channels.models import InboundMessage, OutboundReply
from storage import keys, search
from storage.attachments import AttachmentService, sha_of
from storage.deliveries import INDEX_TTL_SECONDS
from storage.events import EventLog
from storage.keys import PartitionKeys
from storage.quarantine import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, RAW_LIMIT, QuarantineLog
from storage.records import Conversation, DeadLetter, MessageView, QuarantineEntry
from storage.replication import ReplicaAcks, ReplicaAckTimeout, run_acked
from storage.scripts import Scripts, run_pipelined

QUARANTINE_RAW_LIMIT = RAW_LIMIT
REPLY_KEY_TTL = 24 * 3600

_inbound_encoder = msgspec.msgpack.Encoder()
_inbound_decoder = msgspec.msgpack.Decoder(InboundMessage)
_reply_decoder = msgspec.msgpack.Decoder(OutboundReply)


SendVerdict = Literal["send", "busy", "done", "scheduled", "missing"]


class IngestResult(msgspec.Struct, frozen=True):
    """What the store did with an inbound message; ``duplicate`` means it was already there."""

    message_id: str
    conversation_id: str
    seq: int
    duplicate: bool
    new_conversation: bool


class Position(msgspec.Struct, frozen=True):
    """A place in the conversation list: the activity score as Redis gave it, and the id.

    Rows come in (score, id) descending order, so a page that ends at a Position is continued
    exactly even when many conversations share a timestamp. An empty id means "everything at
    that score is already past" (the ``before`` timestamp of the old API).
    """

    score: str
    id: str = ""


class ConversationFilter(msgspec.Struct, frozen=True):
    """AND across fields, OR among the values of one field; empty = any. ``channel`` matches
    the channel type or the channel instance name."""

    status: tuple[str, ...] = ()
    channel: tuple[str, ...] = ()
    language: tuple[str, ...] = ()
    market: tuple[str, ...] = ()
    assignee: tuple[str, ...] = ()
    queue: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()

    def groups(self) -> list[list[tuple[str, str]]]:
        out: list[list[tuple[str, str]]] = []
        for name in ("status", "channel", "language", "market", "assignee", "queue", "tag"):
            values: tuple[str, ...] = getattr(self, name)
            if values:
                out.append([(name, v) for v in values])
        return out


class Visibility(msgspec.Struct, frozen=True):
    """What an agent may see: assigned to ``agent``, or waiting in one of ``pools``."""

    agent: str
    pools: tuple[str, ...] = ()

    def group(self) -> list[tuple[str, str]]:
        return [("assignee", self.agent), *(("pool", p) for p in self.pools)]


class ConversationPage(msgspec.Struct, frozen=True):
    """One page; ``next`` continues it (None: this was the last page). ``plans`` says how
    each partition answered (see lua/conversations.lua), for tests and diagnostics."""

    conversations: list[Conversation]
    next: Position | None
    plans: tuple[str, ...] = ()


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[MessageView]
    next_seq: int | None


class UnknownConversation(LookupError):
    """The id names no conversation (or is not one of our ids)."""


class UnknownMessage(LookupError):
    """The id names no message."""


class NotRetryable(ValueError):
    """Only a failed outbound reply can be retried."""


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _f(value: bytes | str | None) -> float | None:
    text = _s(value)
    return float(text) if text not in (None, "") else None


class Store:
    """Typed access to the hub's Redis data; one instance per process, shared by all tasks."""

    def __init__(self, redis: Redis, *, partitions: int = 1, dedupe_ttl: int = 7 * 86400,
                 quarantine_max_entries: int = DEFAULT_MAX_ENTRIES,
                 quarantine_max_bytes: int = DEFAULT_MAX_BYTES,
                 replica_acks: ReplicaAcks | None = None) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        # redis-py's stubs type replies for decode_responses=True/False at once; we always read
        # bytes, so the client is used untyped here and every reply is decoded explicitly.
        self.redis: Any = redis
        self.partitions = partitions
        self.dedupe_ttl = dedupe_ttl
        # storage.replica_acks: ingest answers only once that many replicas have the batch
        # (storage/replication.py); None or 0 replicas: once the primary has it.
        self.replica_acks = replica_acks if replica_acks and replica_acks.replicas else None
        self.scripts = Scripts(redis)
        self._parts = [PartitionKeys(p) for p in range(partitions)]
        self.quarantine_log = QuarantineLog(redis, max_entries=quarantine_max_entries,
                                            max_bytes=quarantine_max_bytes)
        # Attachment files (set by the app); erasure and retention delete through it.
        self.attachments: AttachmentService | None = None
        # The live event log (set by the app): facts below append to it once stored.
        self.events: EventLog | None = None

    # -- partitions ------------------------------------------------------------------------

    def keys_for(self, entity_id: str) -> PartitionKeys | None:
        p = keys.partition_from_id(entity_id, self.partitions)
        return None if p is None else self._parts[p]

    @property
    def inbound_streams(self) -> list[str]:
        return [k.inbound for k in self._parts]

    @property
    def outbox_streams(self) -> list[str]:
        return [k.outbox for k in self._parts]

    def partition_keys(self) -> Sequence[PartitionKeys]:
        return self._parts

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- inbound ---------------------------------------------------------------------------

    async def ingest(self, message: InboundMessage) -> IngestResult:
        """Store a message durably (dedupe + upsert + append + enqueue, one atomic step)."""
        if self.replica_acks is not None:  # WAIT rides on the batch's pipeline
            [answer] = await self.ingest_many([message])
            if isinstance(answer, Exception):
                raise answer
            return answer
        script_keys, args, message = self._ingest_call(message)
        result = await self.scripts.ingest(keys=script_keys, args=args)
        if self.attachments is not None and message.attachments:
            await self.attachments.unpin(_shas(message.attachments))
        stored = _ingest_result(result)
        if self.events is not None and not stored.duplicate:
            await self.events.new_messages([(stored.conversation_id, stored.message_id,
                                             message.channel_instance, stored.new_conversation)])
        return stored

    async def ingest_many(self, messages: Sequence[InboundMessage],
                          ) -> list[IngestResult | Exception]:
        """``ingest`` for each of ``messages``, in order, in one round trip (a pipeline of the
        same atomic script: Redis runs them one after the other, so a later message of the
        batch sees an earlier one, as a duplicate too). Per message its result, or the error
        Redis answered its script with (the caller raises it: that message is not stored);
        a connection failure raises for the whole batch, of which any prefix may be stored.
        Messages after a failed one are still stored: when the batch is delivered again they
        are duplicates, so nothing is lost or stored twice.

        With ``replica_acks`` the batch ends with WAIT; a message whose primary got fewer
        replica confirmations in time is answered ``ReplicaAckTimeout``, after its event is
        appended (what the primary stored is stored: the provider's retry finds it as a
        duplicate)."""
        if not messages:
            return []
        calls = [self._ingest_call(message) for message in messages]
        unconfirmed: dict[int, ReplicaAckTimeout] = {}
        if self.replica_acks is None:
            answers = await run_pipelined(self.redis, self.scripts.ingest,
                                          [(script_keys, args) for script_keys, args, _ in calls])
        else:
            answers, unconfirmed = await run_acked(
                self.redis, self.scripts.ingest,
                [(script_keys, args, self._probe_key(message))
                 for script_keys, args, message in calls], self.replica_acks)
        results: list[IngestResult | Exception] = []
        pinned: list[str] = []
        for (_, _, message), answer in zip(calls, answers, strict=True):
            if isinstance(answer, Exception):
                results.append(answer)
                continue
            results.append(_ingest_result(answer))
            if message.attachments:
                pinned.extend(_shas(message.attachments))
        if self.attachments is not None and pinned:
            await self.attachments.unpin(pinned)
        if self.events is not None:
            await self.events.new_messages([
                (r.conversation_id, r.message_id, m.channel_instance, r.new_conversation)
                for (_, _, m), r in zip(calls, results, strict=True)
                if isinstance(r, IngestResult) and not r.duplicate])
        for i, error in unconfirmed.items():  # stored, but replicas did not confirm it
            results[i] = error
        return results

    def _probe_key(self, message: InboundMessage) -> str:
        """The replica-ack probe in ``message``'s partition: the slot its script wrote."""
        p = keys.partition_of(message.channel_instance, message.thread_id, self.partitions)
        return self._parts[p].replica_ack

    def _ingest_call(self, message: InboundMessage,
                     ) -> tuple[list[str], list[Any], InboundMessage]:
        """The ingest script's keys and arguments for ``message`` (stamped ``received_at``)."""
        p = keys.partition_of(message.channel_instance, message.thread_id, self.partitions)
        k = self._parts[p]
        now = time.time()
        if not message.received_at:
            message = msgspec.structs.replace(message, received_at=now)
        script_keys = [
            k.seen(message.channel_instance, message.provider_message_id),
            k.threads,
            k.contacts,
            k.conversations,
            k.inbound,
        ]
        args: list[Any] = [
            k.base,
            keys.new_id(p),
            keys.new_id(p),
            keys.new_id(p),
            f"{message.channel_instance}\x00{message.thread_id}",
            f"{message.channel_instance}\x00{message.sender_handle}",
            _inbound_encoder.encode(message),
            repr(now),
            self.dedupe_ttl,
            message.channel_type,
            message.channel_instance,
            message.thread_id,
            message.sender_handle,
            message.sender_name or "",
            message.provider_message_id,
            _file_keys(message.attachments),
            _provider_time(message.sent_at),
            *search.message_tokens(message),  # ARGV[18..]: indexed in the same step
        ]
        return script_keys, args, message

    async def load_for_routing(
        self, conversation_id: str, message_id: str
    ) -> tuple[Conversation | None, InboundMessage | None]:
        """Conversation, its contact and the message in one round trip (the router's read)."""
        ck, mk = self.keys_for(conversation_id), self.keys_for(message_id)
        if ck is None or mk is None:
            return None, None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(ck.conversation(conversation_id))
            pipe.hget(mk.message(message_id), "data")
            raw, data = await pipe.execute()
        if not raw or data is None:
            return None, None
        message = _inbound_decoder.decode(data)
        # The contact's handle is the message's sender: no third read on the hot path.
        return _conversation(raw, [message.sender_handle, message.sender_name]), message

    async def load_inbound(self, message_id: str) -> InboundMessage | None:
        k = self.keys_for(message_id)
        if k is None:
            return None
        data = await self.redis.hget(k.message(message_id), "data")
        return None if data is None else _inbound_decoder.decode(data)

    # -- conversations ---------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        k = self.keys_for(conversation_id)
        if k is None:
            return None
        raw = await self.redis.hgetall(k.conversation(conversation_id))
        if not raw:
            return None
        contact = await self.redis.hmget(k.contact(_s(raw[b"contact_id"]) or ""), "handle", "name")
        return _conversation(raw, contact)

    async def get_conversations(self, ids: Iterable[str], *,
                                fields: Sequence[str] | None = None) -> list[Conversation]:
        """Batch load in one round trip per kind of read (the list endpoint's hot path).
        With ``fields``, only those fields of each conversation are read (``id`` always) and
        the contact is not: the rest of each record holds its defaults. For readers that
        need a few dimensions of many conversations (the KPI aggregator) and would otherwise
        copy every field of each, tags and all."""
        wanted = [(cid, k) for cid in ids if (k := self.keys_for(cid)) is not None]
        if fields is not None:
            names = ["id", *(f for f in fields if f != "id")]
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid, k in wanted:
                    pipe.hmget(k.conversation(cid), names)
                rows: list[list[bytes | None]] = await pipe.execute()
            return [_conversation({n.encode(): v for n, v in zip(names, row, strict=True)
                                   if v is not None}, [None, None])
                    for row in rows if row[0] is not None]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, k in wanted:
                pipe.hgetall(k.conversation(cid))
            raws: list[dict[bytes, bytes]] = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for (_, k), raw in zip(wanted, raws, strict=True):
                pipe.hmget(k.contact(_s(raw.get(b"contact_id")) or ""), "handle", "name")
            contacts = await pipe.execute()
        return [
            _conversation(raw, contact)
            for raw, contact in zip(raws, contacts, strict=True)
            if raw
        ]

    async def list_conversations(
        self, *, limit: int = 50, before: float | None = None
    ) -> list[Conversation]:
        """Most recently active first, merged across partitions."""
        after = None if before is None else Position(repr(float(before)))
        return (await self.page_conversations(limit=limit, after=after)).conversations

    async def page_conversations(
        self, *, limit: int = 50, after: Position | None = None,
        filters: ConversationFilter | None = None, visibility: Visibility | None = None,
        small_driver: int = 2000, min_scan: int = 1024,
        required: Sequence[tuple[str, str]] = (),
    ) -> ConversationPage:
        """A full page of the conversations matching ``filters`` (and ``visibility``), most
        recently active first, after ``after``: filtered inside Redis, so a page is short
        only when it is the last one. The thresholds choose the plan (lua/conversations.lua);
        tests lower them to drive every plan with little data. ``required``: predicates that
        must all hold (search terms: ``("term", token)``, see storage/search.py)."""
        groups = (filters or ConversationFilter()).groups()
        groups.extend([pred] for pred in required)
        if visibility is not None:
            groups.append(visibility.group())
        spec = msgspec.json.encode(groups)
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in self._parts:
                await self.scripts.conversations(
                    keys=[k.conversations],
                    args=[k.base, "page", after.score if after else "", after.id if after else "",
                          limit + 1, spec, small_driver, min_scan],
                    client=pipe,
                )
            replies: list[list[bytes]] = await pipe.execute()
        rows: list[tuple[float, str, str, Any, Any, Any]] = []
        plans: list[str] = []
        for reply in replies:
            plans.append(_s(reply[0]) or "")
            for i in range(1, len(reply), 5):
                score = _s(reply[i + 1]) or "0"
                raw, handle, name = reply[i + 2], reply[i + 3], reply[i + 4]
                rows.append((float(score), _s(reply[i]) or "", score, raw, handle, name))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        more = len(rows) > limit
        rows = rows[:limit]
        conversations = [
            _conversation(dict(zip(raw[0::2], raw[1::2], strict=True)), [handle, name])
            for _, _, _, raw, handle, name in rows if raw
        ]
        next_position = Position(rows[-1][2], rows[-1][1]) if more and rows else None
        return ConversationPage(conversations, next_position, tuple(plans))

    async def pick_conversations(
        self, candidates: Sequence[tuple[str, str]], *,
        filters: ConversationFilter | None = None, visibility: Visibility | None = None,
    ) -> dict[str, Conversation]:
        """Those of ``candidates`` ((id, score) pairs) that exist and match ``filters`` and
        ``visibility``, by the very predicates of ``page_conversations``, one round trip for
        all partitions: lists ordered by another index (storage/sla.py) filter through it."""
        groups = (filters or ConversationFilter()).groups()
        if visibility is not None:
            groups.append(visibility.group())
        spec = msgspec.json.encode(groups)
        by_part: dict[int, list[tuple[str, str]]] = {}
        for cid, score in candidates:
            k = self.keys_for(cid)
            if k is not None:
                by_part.setdefault(k.partition, []).append((cid, score))
        if not by_part:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for part, rows in by_part.items():
                k = self._parts[part]
                await self.scripts.conversations(
                    keys=[k.conversations],
                    args=[k.base, "pick", msgspec.json.encode(rows), "", len(rows), spec],
                    client=pipe)
            replies: list[list[Any]] = await pipe.execute()
        found: dict[str, Conversation] = {}
        for reply in replies:
            for i in range(1, len(reply), 5):
                raw = reply[i + 2]
                if raw:
                    found[_s(reply[i]) or ""] = _conversation(
                        dict(zip(raw[0::2], raw[1::2], strict=True)),
                        [reply[i + 3], reply[i + 4]])
        return found

    async def update_conversation(self, conversation_id: str, fields: dict[str, str]) -> bool:
        """Write fields of an existing record and its filter indexes in one atomic step.

        False, and nothing written, when the record is gone (erased, or past retention): a
        late routing event must not bring back a record that was deleted.
        """
        k = self.keys_for(conversation_id)
        if k is None:
            raise UnknownConversation(conversation_id)
        flat = [part for item in fields.items() for part in item]
        try:
            await self._conversations(k, "update", conversation_id, *flat)
        except ResponseError as exc:
            if "NOCONV" in str(exc):
                return False
            raise
        return True

    async def mark_unreachable(self, conversation_id: str, reason: str, *,
                               last_inbound_at: float | None) -> bool:
        """Mark the buyer unreachable (their channel refused our send), unless they wrote
        after ``last_inbound_at`` (what the failed send knew): the ingest of that message
        already cleared the mark, and writing it back would refuse replies to a buyer who is
        reachable again. False when not written (that, or the record is gone)."""
        k = self.keys_for(conversation_id)
        if k is None:
            raise UnknownConversation(conversation_id)
        return bool(await self.redis.eval(
            _MARK_UNREACHABLE, 1, k.conversation(conversation_id), reason,
            repr(last_inbound_at) if last_inbound_at is not None else ""))

    async def clear_unreachable(self, conversation_id: str) -> None:
        """A send went through: whatever made the buyer unreachable is over."""
        k = self.keys_for(conversation_id)
        if k is not None:
            await self.redis.hdel(k.conversation(conversation_id), "unreachable")

    async def reindex_conversation(self, conversation_id: str) -> bool:
        """Recompute a record's filter-index memberships from its fields (self-healing)."""
        k = self.keys_for(conversation_id)
        if k is None:
            raise UnknownConversation(conversation_id)
        return bool(await self._conversations(k, "reindex", conversation_id))

    async def backfill_indexes(self, batch: int = 500) -> int:
        """Index records written before the filter indexes existed (idempotent; run once
        after an upgrade): each record's waiting pool is read from its routing state, then
        one atomic update per record writes it and reindexes. Returns the records seen."""
        seen = 0
        for k in self._parts:
            start = 0
            while True:
                ids = [_s(c) or "" for c in
                       await self.redis.zrange(k.conversations, start, start + batch - 1)]
                if not ids:
                    break
                start += batch
                async with self.redis.pipeline(transaction=False) as pipe:
                    for cid in ids:
                        pipe.hmget(keys.routing_state(cid), "status", "pool")
                    states = await pipe.execute()
                for cid, (status, pool) in zip(ids, states, strict=True):
                    waiting = status == b"waiting" and pool
                    with contextlib.suppress(UnknownConversation):
                        await self.update_conversation(
                            cid, {"pool": _s(pool) or ""} if waiting else {})
                seen += len(ids)
        return seen

    async def _conversations(self, k: PartitionKeys, command: str, *args: Any) -> Any:
        return await self.scripts.conversations(keys=[k.conversations],
                                                args=[k.base, command, *args])

    async def get_messages(self, conversation_id: str, *, limit: int = 500) -> list[MessageView]:
        """Messages in per-conversation sequence order (invariant 3)."""
        k = self.keys_for(conversation_id)
        if k is None:
            raise UnknownConversation(conversation_id)
        ids = await self.redis.zrange(k.conversation_messages(conversation_id), 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.hgetall(k.message(_s(mid) or ""))
            rows: list[dict[bytes, bytes]] = await pipe.execute()
        pairs = zip(ids, rows, strict=True)
        return [_message_view(_s(mid) or "", row) for mid, row in pairs if row]

    async def page_messages(self, conversation_id: str, *, limit: int = 100,
                            after_seq: int | None = None,
                            descending: bool = False) -> MessagePage:
        """Messages in sequence order (or newest first), ``limit`` at a time after
        ``after_seq``: keyset paging on the per-conversation sequence, so a page costs the
        same on the first and on the ten-thousandth message."""
        k = self.keys_for(conversation_id)
        if k is None:
            raise UnknownConversation(conversation_id)
        key = k.conversation_messages(conversation_id)
        if descending:
            top = "+inf" if after_seq is None else f"({after_seq}"
            ids = await self.redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 1)
        else:
            bottom = "-inf" if after_seq is None else f"({after_seq}"
            ids = await self.redis.zrangebyscore(key, bottom, "+inf", start=0, num=limit + 1)
        more = len(ids) > limit
        ids = ids[:limit]
        async with self.redis.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.hgetall(k.message(_s(mid) or ""))
            rows: list[dict[bytes, bytes]] = await pipe.execute()
        views = [_message_view(_s(mid) or "", row)
                 for mid, row in zip(ids, rows, strict=True) if row]
        return MessagePage(views, views[-1].seq if more and views else None)

    async def get_message(self, message_id: str) -> MessageView | None:
        k = self.keys_for(message_id)
        if k is None:
            return None
        row = await self.redis.hgetall(k.message(message_id))
        return _message_view(message_id, row) if row else None

    # -- outbound --------------------------------------------------------------------------

    async def enqueue_reply(
        self, reply: OutboundReply, *, client_key: str | None = None
    ) -> tuple[str, bool]:
        """Append a reply and queue it; returns (message id, duplicate)."""
        k = self.keys_for(reply.conversation_id)
        if k is None:
            raise UnknownConversation(reply.conversation_id)
        cid = reply.conversation_id
        try:
            mid, _seq, dup = await self.scripts.enqueue_reply(
                keys=[
                    k.conversation(cid),
                    k.conversation_messages(cid),
                    k.message(reply.reply_id),
                    k.outbox,
                    k.reply_key(cid, client_key or ""),
                    k.conversations,
                ],
                args=[
                    reply.reply_id,
                    _inbound_encoder.encode(reply),
                    repr(time.time()),
                    cid,
                    client_key or "",
                    REPLY_KEY_TTL,
                    k.base,
                    _file_keys(reply.attachments),
                ],
            )
        except ResponseError as exc:
            if "NOCONV" in str(exc):
                raise UnknownConversation(cid) from None
            raise
        if self.events is not None and not dup:
            await self.events.append("reply", cid, msg=_s(mid), agent=reply.author,
                                     channel=reply.channel_instance)
        return _s(mid) or "", bool(dup)

    async def load_reply(self, message_id: str) -> tuple[OutboundReply, dict[str, str]] | None:
        """The reply payload plus its mutable delivery fields."""
        k = self.keys_for(message_id)
        if k is None:
            return None
        row = await self.redis.hgetall(k.message(message_id))
        if not row or row.get(b"direction") != b"out":
            return None
        fields = {_s(a) or "": _s(b) or "" for a, b in row.items() if a != b"data"}
        return _reply_decoder.decode(row[b"data"]), fields

    async def claim_send(self, message_id: str, *, lease_seconds: float,
                         owner: str) -> tuple[SendVerdict, int]:
        """Decide atomically whether this process sends the reply now (see claim_send.lua)."""
        k = self._require(message_id)
        verdict, attempts = await self.scripts.claim_send(
            keys=[k.message(message_id)], args=[repr(time.time()), lease_seconds, owner]
        )
        return _s(verdict) or "missing", int(attempts)  # type: ignore[return-value]

    async def mark_sent(self, message_id: str, provider_message_id: str, *,
                        channel_instance: str | None = None) -> None:
        """Record the provider id before the outbox entry is acknowledged (invariant 2), and in
        the same step index it for delivery receipts and apply the receipts that arrived
        before the send returned (``lua/deliveries.lua``)."""
        k = self._require(message_id)
        if channel_instance is None:
            loaded = await self.load_reply(message_id)
            if loaded is None:
                return
            channel_instance = loaded[0].channel_instance
        await self.scripts.deliveries(
            keys=[k.message(message_id),
                  k.delivery_index(channel_instance, provider_message_id),
                  k.early_receipts(channel_instance, provider_message_id),
                  k.early_receipts(channel_instance, message_id),
                  k.dlq],
            args=["sent", message_id, provider_message_id, repr(time.time()),
                  INDEX_TTL_SECONDS, channel_instance],
        )
        if self.events is not None:
            await self.delivery_event(message_id, channel_instance)

    async def delivery_event(self, message_id: str, channel_instance: str | None = None,
                             ) -> None:
        """A "delivery" event with the message's delivery state as it stands now (a send
        whose early receipts were applied in the same step is already "delivered")."""
        k = self.keys_for(message_id)
        if self.events is None or k is None:
            return
        status, cid = await self.redis.hmget(k.message(message_id), "status",
                                             "conversation_id")
        if cid:
            await self.events.append("delivery", _s(cid) or "", action=_s(status) or "sent",
                                     msg=message_id, channel=channel_instance)

    async def schedule_retry(self, message_id: str, due: float, attempts: int, error: str) -> None:
        """Hand the reply to the retry set: until it is due, no outbox entry may send it."""
        k = self._require(message_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                k.message(message_id),
                mapping={"status": "queued", "retry_pending": 1, "attempts": attempts,
                         "error": error, "updated_at": repr(time.time())},
            )
            pipe.hdel(k.message(message_id), "lease_until", "lease_owner")
            pipe.zadd(k.retry, {message_id: due})
            await pipe.execute()

    async def defer_send(self, message_id: str, due: float, attempts: int) -> None:
        """Hand a reply the rate limiter held back to the retry set until ``due``: like
        ``schedule_retry`` it is owned by the set meanwhile, but the wait is no failed attempt
        (``attempts`` is the count before this claim) and a previous error stays as it was."""
        k = self._require(message_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                k.message(message_id),
                mapping={"status": "queued", "retry_pending": 1, "attempts": attempts,
                         "updated_at": repr(time.time())},
            )
            pipe.hdel(k.message(message_id), "lease_until", "lease_owner")
            pipe.zadd(k.retry, {message_id: due})
            await pipe.execute()

    async def release_due_retries(self, now: float, batch: int = 500) -> int:
        released = 0
        for k in self._parts:
            while True:
                n = int(await self.scripts.release_retries(
                    keys=[k.retry, k.outbox], args=[repr(now), batch, k.base]
                ))
                released += n
                if n < batch:
                    break
        return released

    async def next_retry_due(self) -> float | None:
        best: float | None = None
        for k in self._parts:
            head = await self.redis.zrange(k.retry, 0, 0, withscores=True)
            if head and (best is None or head[0][1] < best):
                best = float(head[0][1])
        return best

    async def dead_letter(self, reply: OutboundReply, error: str, attempts: int) -> str:
        k = self._require(reply.reply_id)
        entry = await self.scripts.dead_letter(
            keys=[k.message(reply.reply_id), k.dlq],
            args=[reply.reply_id, reply.conversation_id, reply.channel_instance, error,
                  attempts, repr(time.time())],
        )
        if self.events is not None:
            await self.events.append("delivery", reply.conversation_id, action="failed",
                                     msg=reply.reply_id, channel=reply.channel_instance)
        return _s(entry) or ""

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for k in self._parts:
            for entry_id, f in await self.redis.xrevrange(k.dlq, count=limit):
                out.append(DeadLetter(
                    id=_s(entry_id) or "",
                    message_id=_s(f[b"msg"]) or "",
                    conversation_id=_s(f[b"conv"]) or "",
                    channel_instance=_s(f[b"instance"]) or "",
                    error=_s(f[b"error"]) or "",
                    attempts=int(f[b"attempts"]),
                    failed_at=float(f[b"failed_at"]),
                ))
        out.sort(key=lambda d: -d.failed_at)
        return out[:limit]

    async def retry_dead_letter(self, message_id: str) -> None:
        k = self.keys_for(message_id)
        if k is None:
            raise UnknownMessage(message_id)
        try:
            await self.scripts.retry_dead(
                keys=[k.message(message_id), k.dlq, k.outbox],
                args=[message_id, repr(time.time())],
            )
        except ResponseError as exc:
            if "NOMSG" in str(exc):
                raise UnknownMessage(message_id) from None
            if "NOTFAILED" in str(exc):
                raise NotRetryable(message_id) from None
            raise

    # -- quarantine ------------------------------------------------------------------------

    async def quarantine(self, channel_instance: str, raw: bytes, error: str, *,
                         headers: Mapping[str, str] | None = None) -> str:
        """Keep input we could not normalize, with the reason, for an operator to inspect."""
        return await self.quarantine_log.add(channel_instance, raw, error, headers=headers)

    async def list_quarantine(self, limit: int = 100) -> list[QuarantineEntry]:
        rows = await self.redis.xrevrange(keys.QUARANTINE, count=limit)
        return [
            QuarantineEntry(
                id=_s(entry_id) or "",
                channel_instance=_s(f[b"instance"]) or "",
                error=_s(f[b"error"]) or "",
                received_at=float(f[b"received_at"]),
                raw=f[b"raw"].decode("utf-8", errors="replace"),
                raw_truncated=f.get(b"truncated") == b"1",
            )
            for entry_id, f in rows
        ]

    def _require(self, message_id: str) -> PartitionKeys:
        k = self.keys_for(message_id)
        if k is None:
            raise UnknownMessage(message_id)
        return k


def _provider_time(sent_at: float | None) -> str:
    """The message's provider time for the conversation's ``last_inbound_at`` ("" when
    unknown or unusable; the script never takes one later than now)."""
    if sent_at is None or not math.isfinite(sent_at) or sent_at <= 0:
        return ""
    return repr(sent_at)


def _ingest_result(result: Any) -> IngestResult:
    mid, cid, seq, dup, new = result
    return IngestResult(
        message_id=_s(mid) or "",
        conversation_id=_s(cid) or "",
        seq=int(seq),
        duplicate=bool(dup),
        new_conversation=bool(new),
    )


def _shas(attachments: Iterable[Any]) -> list[str]:
    return [sha for sha in _file_keys(attachments).split("\n") if sha]


def _file_keys(attachments: Iterable[Any]) -> str:
    return "\n".join(sha for a in attachments if (sha := sha_of(a.storage_ref)) is not None)


_MARK_UNREACHABLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seen = redis.call('HGET', KEYS[1], 'last_inbound_at')
if seen and ARGV[2] ~= '' and tonumber(seen) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'unreachable', ARGV[1])
return 1
"""


def _conversation(raw: dict[bytes, bytes], contact: list[Any]) -> Conversation:
    def get(name: str) -> str | None:
        value = _s(raw.get(name.encode()))
        return value if value else None

    return Conversation(
        id=get("id") or "",
        channel=get("channel") or "",
        channel_instance=get("channel_instance") or "",
        thread_id=get("thread_id") or "",
        contact_id=get("contact_id") or "",
        contact_handle=_s(contact[0]) or "",
        contact_name=_s(contact[1]) or None,
        status=get("status") or "new",  # type: ignore[arg-type]
        language=get("language"),
        market=get("market"),
        assignee=get("assignee"),
        queue=get("queue"),
        created_at=_f(raw.get(b"created_at")) or 0.0,
        updated_at=_f(raw.get(b"updated_at")) or 0.0,
        last_inbound_at=_f(raw.get(b"last_inbound_at")),
        last_inbound_provider_id=get("last_inbound_provider_id"),
        message_count=int(raw.get(b"message_count", b"0")),
        language_confidence=_f(raw.get(b"language_confidence")),
        language_low_confidence=raw.get(b"language_low_confidence") == b"1",
        skill=get("skill"),
        label=get("label"),
        replies_disabled=get("replies_disabled"),
        answer_url=get("answer_url"),
        unreachable=get("unreachable"),
        work_status=("resolved" if get("status") == "resolved"  # type: ignore[arg-type]
                     else get("work_status") or "open"),
        snoozed_until=_f(raw.get(b"snoozed_until")),
        priority=get("priority") or "normal",  # type: ignore[arg-type]
        spam=raw.get(b"spam") == b"1",
        blocked=raw.get(b"blocked") == b"1",
        tags=(get("tags") or "").split("\n") if get("tags") else [],
    )


def _status_at(row: dict[bytes, bytes]) -> float | None:
    """When the shown status began: a receipt's (or the send's) time while no later step has
    written the message (lua/deliveries.lua stamps it), else the message's last write."""
    updated = row.get(b"updated_at")
    if b"status_at" in row and row.get(b"status_stamp") == updated:
        return _f(row[b"status_at"])
    return _f(updated)


def _message_view(message_id: str, row: dict[bytes, bytes]) -> MessageView:
    direction = _s(row.get(b"direction")) or "in"
    common: dict[str, Any] = {
        "id": message_id,
        "conversation_id": _s(row.get(b"conversation_id")) or "",
        "seq": int(row.get(b"seq", b"0")),
        "status": _s(row.get(b"status")) or "received",
        "created_at": _f(row.get(b"created_at")) or 0.0,
        "attempts": int(row.get(b"attempts", b"0")),
        "error": _s(row.get(b"error")) or None,
        "provider_message_id": _s(row.get(b"provider_message_id")) or None,
        "status_at": _status_at(row),
    }
    if direction == "out":
        reply = _reply_decoder.decode(row[b"data"])
        return MessageView(
            direction="out", channel=reply.channel_type, channel_instance=reply.channel_instance,
            text=reply.text, author=reply.author, attachments=reply.attachments,
            reply_to=reply.in_reply_to, **common,
        )
    msg = _inbound_decoder.decode(row[b"data"])
    common["provider_message_id"] = msg.provider_message_id
    edited = row.get(b"edited_text")
    return MessageView(
        direction="in", channel=msg.channel_type, channel_instance=msg.channel_instance,
        text=_s(edited) or "" if edited is not None else msg.text,
        sender_handle=msg.sender_handle, sender_name=msg.sender_name,
        sent_at=msg.sent_at, attachments=msg.attachments, reply_to=msg.reply_to,
        edited_at=_f(row.get(b"edited_at")),
        original_text=msg.text if edited is not None else None, moderation=msg.moderation,
        **common,
    )
