"""Full-text search over conversations: an inverted index written at ingest.

What is indexed, per inbound message: the buyer's display name and handle, the order id the
channel gave (``ChannelHints.order_id``) and the message text. Tokens are accent-folded (NFKD,
combining marks dropped, recomposed: Hangul stays whole) and case-folded; digits of any script
read as ASCII; a run of Han/Hiragana/Katakana (no spaces between words) becomes overlapping
bigrams plus its single characters, so "包裹" finds "我的包裹在哪里" and a 1-character query
works too. Anything else (punctuation, emoji, symbols) separates tokens; Arabic and Hebrew
letters are word characters like any other (their vowel points are combining marks).

Layout, per partition (``ih:{pN}:``, the conversation's hash tag, so the list script reads them
in the same slot as the records):

  idx:term:<token>   set of conversation ids (a posting; the page script's "term" predicate)
  conv:<c>:terms     hash token -> "" of the tokens posted for ``<c>``, so erasure and
                     retention remove exactly its postings (storage/lifecycle.py); a hash,
                     not a set: Redis 7.0 keeps small hashes as compact listpacks (the index's
                     memory is mostly these and the postings)

The ingest script itself posts a new message's tokens (``message_tokens`` computed by the
caller, passed as its last arguments), in the step that stores it: a stored message is always
searchable, at no extra command per webhook. Sets and hash fields make the write idempotent;
``backfill`` (``lua/search_index.lua``) indexes what an earlier release stored.
Bounded: at most ``MAX_TEXT`` characters of a text are read, ``MAX_TOKENS``
distinct tokens per message, tokens over ``MAX_TOKEN`` characters are skipped, and
one-character tokens outside CJK (stop-word noise) are not kept.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
from redis.commands.core import AsyncScript

from channels.models import InboundMessage
from storage.keys import PartitionKeys
from storage.scripts import load_script

MAX_TEXT: Final = 20_000
MAX_TOKENS: Final = 256
MAX_TOKEN: Final = 48
MAX_QUERY_TERMS: Final = 8
TERM_FIELD: Final = "term"


def _is_cjk(ch: str) -> bool:
    """Scripts written without spaces between words (bigram-indexed)."""
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F
            or 0xF900 <= o <= 0xFAFF or 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF)


def fold(text: str) -> str:
    """Accent- and case-folded text: NFKD, combining marks dropped, NFC again, casefold."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", stripped).casefold()


def _runs(text: str) -> Iterable[tuple[bool, str]]:
    """Maximal runs of word characters: (is CJK, run)."""
    run: list[str] = []
    cjk = False
    for ch in text:
        if ch.isdigit():
            digit = unicodedata.decimal(ch, None)
            ch = str(digit) if digit is not None else ch
        if not ch.isalnum():
            if run:
                yield cjk, "".join(run)
                run = []
            continue
        here = _is_cjk(ch)
        if run and here != cjk:
            yield cjk, "".join(run)
            run = []
        cjk = here
        run.append(ch)
    if run:
        yield cjk, "".join(run)


def tokens(text: str, *, limit: int = MAX_TOKENS) -> list[str]:
    """The distinct index tokens of ``text``, in order of first appearance, at most ``limit``."""
    out: dict[str, None] = {}
    for cjk, run in _runs(fold(text[:MAX_TEXT])):
        if cjk:
            found = [run[i:i + 2] for i in range(len(run) - 1)] + list(run)
        elif 2 <= len(run) <= MAX_TOKEN:
            found = [run]
        else:
            found = []
        for token in found:
            out.setdefault(token, None)
            if len(out) >= limit:
                return list(out)
    return list(out)


def query_terms(q: str) -> list[str]:
    """A query's terms (AND): the same folding as the index; a CJK run of two or more
    characters asks for each of its bigrams, a lone CJK character for itself."""
    out: dict[str, None] = {}
    for cjk, run in _runs(fold(q)):
        if cjk:
            found = [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        elif 2 <= len(run) <= MAX_TOKEN:
            found = [run]
        else:
            found = []
        for token in found:
            out.setdefault(token, None)
    return list(out)


def message_tokens(message: InboundMessage) -> list[str]:
    """What one inbound message contributes: buyer name and handle, order id, text."""
    head = " ".join(part for part in (message.sender_name, message.sender_handle,
                                      message.hints.order_id) if part)
    found = tokens(head)
    budget = MAX_TOKENS - len(found)
    if budget > 0:
        found += [t for t in tokens(message.text, limit=MAX_TOKENS) if t not in found][:budget]
    return found


def posting_key(k: PartitionKeys, token: str) -> str:
    return k.index(TERM_FIELD, token)


def terms_key(k: PartitionKeys, conversation_id: str) -> str:
    return f"{k.conversation(conversation_id)}:terms"


def index_script(redis: Any) -> AsyncScript:
    """``lua/search_index.lua`` bound to ``redis``: one message's tokens in one command (a
    pipeline of one SADD per token cost the hub more Python time per webhook than the
    ingest script itself)."""
    return load_script(redis, "search_index")


def index_call(k: PartitionKeys, conversation_id: str,
               found: Sequence[str]) -> tuple[list[str], list[str]]:
    """The script's keys and arguments for one message's tokens."""
    return [terms_key(k, conversation_id)], [posting_key(k, ""), conversation_id, *found]


async def queue_index(script: AsyncScript, pipe: Any, k: PartitionKeys, conversation_id: str,
                      found: Sequence[str]) -> None:
    """Add one message's tokens to ``pipe`` (a pipeline: the caller executes it)."""
    if found:
        script_keys, args = index_call(k, conversation_id, found)
        await script(keys=script_keys, args=args, client=pipe)


async def forget_conversations(redis: Any, k: PartitionKeys,
                               conversation_ids: Iterable[str]) -> int:
    """Remove the conversations from every posting they are in; returns keys deleted."""
    deleted = 0
    for cid in conversation_ids:
        key = terms_key(k, cid)
        batch: list[str] = []
        async for token, _ in redis.hscan_iter(key, count=500):
            batch.append(token.decode() if isinstance(token, bytes) else token)
        for i in range(0, len(batch), 500):
            async with redis.pipeline(transaction=False) as pipe:
                for token in batch[i:i + 500]:
                    pipe.srem(posting_key(k, token), cid)
                await pipe.execute()
        deleted += int(await redis.delete(key))
    return deleted


async def backfill(redis: Any, parts: Sequence[PartitionKeys], batch: int = 200) -> int:
    """Index every stored inbound message (data written before the index existed, or after
    a crash between an ingest and its index write that no redelivery healed). Idempotent;
    returns the messages read. Memory stays bounded: ``batch`` conversations at a time."""
    decoder = msgspec.msgpack.Decoder(InboundMessage)
    seen = 0
    for k in parts:
        cids: list[str] = []
        async for member, _ in redis.zscan_iter(k.conversations, count=batch):
            cids.append(member.decode() if isinstance(member, bytes) else member)
            if len(cids) >= batch:
                seen += await _backfill_some(redis, k, cids, decoder)
                cids = []
        if cids:
            seen += await _backfill_some(redis, k, cids, decoder)
    return seen


async def _backfill_some(redis: Any, k: PartitionKeys, cids: Sequence[str],
                         decoder: Any) -> int:
    script = index_script(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for cid in cids:
            pipe.zrange(k.conversation_messages(cid), 0, -1)
        message_ids = await pipe.execute()
    seen = 0
    for cid, mids in zip(cids, message_ids, strict=True):
        async with redis.pipeline(transaction=False) as pipe:
            for mid in mids:
                pipe.hmget(k.message(mid.decode()), "direction", "data")
            rows = await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for direction, data in rows:
                if direction == b"in" and data:
                    await queue_index(script, pipe, k, cid,
                                      message_tokens(decoder.decode(data)))
                    seen += 1
            if pipe.command_stack:
                await pipe.execute()
    return seen
