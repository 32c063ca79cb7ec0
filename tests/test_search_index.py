"""The search index on real Redis: tokenising awkward text, what ingest writes (once, however
often a message is delivered), AND queries paged through the list script in every plan, and
erasure leaving no posting behind."""

from __future__ import annotations

from typing import Any

import pytest

from channels.models import ChannelHints, InboundMessage
from storage import lifecycle, search
from storage.store import Position, Store, Visibility


def msg(pid: str, text: str, *, thread: str | None = None, sender: str = "buyer",
        name: str | None = None, order_id: str | None = None) -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance="shop", provider_message_id=pid,
                          thread_id=thread or pid, sender_handle=sender, text=text,
                          sender_name=name, hints=ChannelHints(order_id=order_id))


async def find(store: Store, q: str, **kw: Any) -> list[str]:
    terms = search.query_terms(q)
    assert terms, q
    page = await store.page_conversations(required=[("term", t) for t in terms], **kw)
    return [c.id for c in page.conversations]


@pytest.mark.parametrize(("text", "query"), [
    ("Quiero devolver la canción", "cancion"),
    ("Quiero devolver la canción", "CANCIÓN"),
    ("Quiero devolver la cancion", "canción"),
    ("Ação de devolução", "acao devolucao"),
    ("Straße", "STRASSE"),
    ("我的包裹在哪里", "包裹"),
    ("我的包裹在哪里", "包裹在哪"),
    ("我的包裹在哪里", "包"),
    ("荷物はどこですか", "どこ"),
    ("أين طلبي؟", "طلبي"),
    ("أَيْنَ طَلَبِي", "طلبي"),  # vowel points are combining marks
    ("שָׁלוֹם, איפה החבילה", "שלום החבילה"),
    ("🙂🙂 refund 🇪🇸 please ❤️", "refund"),
    ("order ١٢٣٤٥", "12345"),
    ("한국어 배송 문의", "배송"),
])
def test_query_terms_match_index_tokens(text: str, query: str) -> None:
    indexed = set(search.tokens(text))
    assert set(search.query_terms(query)) <= indexed, (search.query_terms(query), indexed)


def test_no_match_across_words_and_no_crash_on_symbols() -> None:
    assert "包裹" not in search.tokens("包 裹")  # two runs: no bigram across a space
    assert search.query_terms("😀 🇪🇸 ‏‎ \x00\x07 ---") == []
    assert search.query_terms("a") == []  # one Latin letter is noise, CJK is not
    assert search.tokens("x" * 49) == []  # over MAX_TOKEN: skipped
    assert len(search.tokens(" ".join(f"w{i}" for i in range(1000)))) == search.MAX_TOKENS
    lone = "\ud800 broken surrogate"
    assert "broken" in search.tokens(lone)


async def test_ingest_indexes_name_handle_order_and_text(store: Store) -> None:
    stored = await store.ingest(msg("m1", "¿Dónde está mi canción?", sender="maria@example.com",
                                    name="María José", order_id="702-8837261-5521"))
    other = await store.ingest(msg("m2", "where is my parcel", sender="bob"))
    cid = stored.conversation_id
    assert await find(store, "maria") == [cid]
    assert await find(store, "JOSE") == [cid]
    assert await find(store, "example.com") == [cid]
    assert await find(store, "702-8837261-5521") == [cid]
    assert await find(store, "8837261") == [cid]
    assert await find(store, "donde cancion") == [cid]
    assert await find(store, "parcel") == [other.conversation_id]
    assert await find(store, "cancion parcel") == []  # AND, not OR


async def test_duplicates_are_not_indexed_twice(store: Store, redis: Any) -> None:
    first = await store.ingest(msg("m1", "refund please", thread="t"))
    k = store.keys_for(first.conversation_id)
    assert k is not None
    before = sorted(await redis.hkeys(search.terms_key(k, first.conversation_id)))
    postings = await redis.scard(search.posting_key(k, "refund"))
    again = await store.ingest(msg("m1", "refund please", thread="t"))
    batch = await store.ingest_many([msg("m1", "refund please", thread="t")] * 3)
    assert again.duplicate and all(not isinstance(r, Exception) and r.duplicate for r in batch)
    assert sorted(await redis.hkeys(search.terms_key(k, first.conversation_id))) == before
    assert await redis.scard(search.posting_key(k, "refund")) == postings == 1
    assert await find(store, "refund") == [first.conversation_id]


async def test_ingest_many_indexes_each_message(store: Store) -> None:
    results = await store.ingest_many([msg(f"m{i}", f"pedido número{i} urgente")
                                       for i in range(5)])
    ids = {r.conversation_id for r in results if not isinstance(r, Exception)}
    assert set(await find(store, "urgente")) == ids
    assert len(await find(store, "numero3")) == 1


@pytest.mark.parametrize("small,min_scan", [(2000, 1024), (0, 3), (0, 1000)])
async def test_paging_every_plan_no_dupes_no_misses(redis: Any, small: int,
                                                    min_scan: int) -> None:
    store = Store(redis, partitions=3)
    wanted: set[str] = set()
    for i in range(90):
        text = "common word" + (" rare" if i % 7 == 0 else "")
        r = await store.ingest(msg(f"m{i}", text))
        if i % 7 == 0:
            wanted.add(r.conversation_id)
    for q, expected in (("rare", wanted), ("common rare", wanted), ("word", None)):
        seen: list[str] = []
        after: Position | None = None
        while True:
            page = await store.page_conversations(
                limit=4, after=after, required=[("term", t) for t in search.query_terms(q)],
                small_driver=small, min_scan=min_scan)
            seen += [c.id for c in page.conversations]
            if page.next is None:
                break
            assert len(page.conversations) == 4  # only the last page is short
            after = page.next
        assert len(seen) == len(set(seen))
        assert set(seen) == (expected if expected is not None else set(seen))
        if expected is None:
            assert len(seen) == 90


async def test_visibility_limits_search(store: Store) -> None:
    mine = await store.ingest(msg("m1", "broken zipper", thread="a"))
    theirs = await store.ingest(msg("m2", "broken zipper", thread="b"))
    await store.update_conversation(mine.conversation_id,
                                    {"status": "assigned", "assignee": "ana"})
    await store.update_conversation(theirs.conversation_id,
                                    {"status": "assigned", "assignee": "bruno"})
    assert await find(store, "zipper", visibility=Visibility("ana")) == [mine.conversation_id]
    assert await find(store, "zipper", visibility=Visibility("bruno")) == [
        theirs.conversation_id]
    assert await find(store, "zipper", visibility=Visibility("zoe", ("es#0",))) == []


async def test_erasure_removes_postings(store: Store, redis: Any) -> None:
    gone = await store.ingest(msg("m1", "Olá Wanderléia", sender="wanderleia", thread="x"))
    kept = await store.ingest(msg("m2", "Olá amigo", sender="amigo", thread="y"))
    fp = await lifecycle.footprint(store, gone.conversation_id)
    assert fp is not None
    assert await lifecycle.detach(store, fp, only_resolved_before=None)
    await lifecycle.delete_conversations(store, [fp])
    assert await find(store, "ola") == [kept.conversation_id]
    leftovers = [key async for key in redis.scan_iter(match="*wanderleia*")]
    assert leftovers == []
    k = store.keys_for(gone.conversation_id)
    assert k is not None
    assert not await redis.exists(search.terms_key(k, gone.conversation_id))
    for key in [key async for key in redis.scan_iter(match="*idx:term:*")]:
        assert not await redis.sismember(key, gone.conversation_id)


async def test_backfill_indexes_what_was_stored_before(store: Store, redis: Any) -> None:
    a = await store.ingest(msg("m1", "pedido atrasado", name="Nuno", thread="a"))
    b = await store.ingest(msg("m2", "pedido perdido", thread="b"))
    await store.ingest(msg("m3", "segunda mensagem", thread="a"))
    before = {key async for key in redis.scan_iter(match="*:terms")}
    for key in [key async for key in redis.scan_iter(match="*idx:term:*")] + list(before):
        await redis.delete(key)  # as a release without the index left the data
    assert await find(store, "pedido") == []
    assert await search.backfill(redis, store.partition_keys(), batch=1) == 3
    assert set(await find(store, "pedido")) == {a.conversation_id, b.conversation_id}
    assert await find(store, "nuno segunda") == [a.conversation_id]
    assert {key async for key in redis.scan_iter(match="*:terms")} == before
    assert await search.backfill(redis, store.partition_keys()) == 3  # idempotent
    assert set(await find(store, "pedido")) == {a.conversation_id, b.conversation_id}
