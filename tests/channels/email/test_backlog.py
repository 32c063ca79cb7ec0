"""A backlog on the real Dovecot: batches read ahead while the last one is stored, and the
parse processes they go through.

``poll`` is driven directly, with the cursor the polling base would pass: the one the last
poll returned (its batch stored and checkpointed) or, after a failed store, the older one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.base import AdapterContext
from channels.email import adapter as email_adapter
from channels.email.adapter import EmailChannel
from channels.email.imap import decode_cursor
from channels.email.mime import parse_many
from channels.email.parse_process import ParseProcesses
from channels.errors import RetryableError
from channels.models import InboundMessage
from channels.polling import Unusable
from storage.store import Store
from storage.threads import RedisThreads
from tests.channels.email.test_conformance import mail, settings_for, uids

LIMITS = {"max_attachment_bytes": 1_000_000, "max_attachments": 5}


def buyer_mail(n: int) -> bytes:
    return mail(f"buyer{n % 3}@buyer.test", f"Pedido {n}", f"¿Dónde está mi pedido {n}?",
                f"<backlog-{n}@buyer.test>")


async def no_quarantine(*args: Any, **kwargs: Any) -> str:
    raise AssertionError("poll is driven directly here: nothing is quarantined")


def no_spawn(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the email adapter spawns no hub tasks")


@pytest.fixture
async def channel(dovecot: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch,
                  ) -> AsyncIterator[Any]:
    monkeypatch.setattr(email_adapter, "FETCH_LIMIT", 3)  # 3 messages a batch: a backlog
    made: list[EmailChannel] = []

    async with aiohttp.ClientSession() as http:
        def make(instance: str = "shop", threads: Any = None,
                 **overrides: Any) -> EmailChannel:
            adapter = EmailChannel(instance, settings_for(dovecot, smtp_server, **overrides),
                                   AdapterContext(http=http, quarantine=no_quarantine,
                                                  spawn=no_spawn, threads=threads))
            adapter.idle_wait_seconds = 0.2
            made.append(adapter)
            return adapter

        yield make
        for adapter in made:
            await adapter.close()


def ids(items: Any) -> list[str]:
    return [item.provider_message_id for item in items if isinstance(item, InboundMessage)]


async def test_backlog_is_read_ahead_in_order_each_message_once(channel: Any,
                                                                dovecot: Any) -> None:
    for n in range(10):
        await dovecot.adeliver(buyer_mail(n))
    adapter = channel()
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        items, cursor = await adapter.poll("INBOX", cursor)
        assert len(items) <= 3
        seen += ids(items)
        if len(seen) < 10:
            assert adapter._reader is not None  # the next batches are being read meanwhile
    assert seen == [f"<backlog-{n}@buyer.test>" for n in range(10)]
    assert adapter._reader is None or not adapter._reader._ready
    await dovecot.adeliver(buyer_mail(10))  # past the backlog: the ordinary fetch (then IDLE)
    items, cursor = await adapter.poll("INBOX", cursor)
    assert ids(items) == ["<backlog-10@buyer.test>"]
    assert adapter._reader is None


async def test_a_cursor_that_did_not_move_drops_what_was_read_ahead(channel: Any,
                                                                   dovecot: Any) -> None:
    """The store of a batch failed (or the lease moved): the base polls again from the old
    cursor, and gets that batch again, not the one read ahead after it."""
    for n in range(8):
        await dovecot.adeliver(buyer_mail(n))
    adapter = channel()
    first, cursor1 = await adapter.poll("INBOX", None)
    assert adapter._reader is not None
    await asyncio.sleep(0.2)  # the reader has batches waiting
    again, cursor1_again = await adapter.poll("INBOX", None)
    assert ids(again) == ids(first) == [f"<backlog-{n}@buyer.test>" for n in range(3)]
    assert cursor1_again == cursor1
    seen = ids(again)
    cursor = cursor1
    while len(seen) < 8:
        items, cursor = await adapter.poll("INBOX", cursor)
        seen += ids(items)
    assert seen == [f"<backlog-{n}@buyer.test>" for n in range(8)]
    assert decode_cursor(cursor)[1] == max(await asyncio.to_thread(uids, dovecot))


async def test_malformed_mail_in_a_backlog_is_quarantined_in_place(channel: Any,
                                                                  dovecot: Any) -> None:
    for n in range(5):
        await dovecot.adeliver(b"\x00\x01 not a mail\n" if n == 3 else buyer_mail(n))
    adapter = channel()
    items: list[Any] = []
    cursor = None
    while len(items) < 5:
        batch, cursor = await adapter.poll("INBOX", cursor)
        items += batch
    assert isinstance(items[3], Unusable) and b"not a mail" in items[3].raw
    assert ids(items) == [f"<backlog-{n}@buyer.test>" for n in (0, 1, 2, 4)]


async def test_thread_parsing_gives_what_the_process_does(channel: Any, dovecot: Any) -> None:
    for n in range(4):
        await dovecot.adeliver(buyer_mail(n))
    by_process, by_thread = channel(), channel(parse_processes=0)
    got: dict[str, list[str]] = {}
    for name, adapter in (("process", by_process), ("thread", by_thread)):
        cursor, seen = None, []
        while len(seen) < 4:
            items, cursor = await adapter.poll("INBOX", cursor)
            seen += [f"{m.provider_message_id} {m.thread_id} {m.text}" for m in items
                     if isinstance(m, InboundMessage)]
        got[name] = seen
    assert got["process"] == got["thread"]
    assert by_thread._parsers is None


async def test_parse_process_matches_parse_many_and_survives_a_kill() -> None:
    raws = [buyer_mail(n) for n in range(5)] + [b"", b"\x00 junk only"]
    parsers = ParseProcesses(1)
    try:
        assert await parsers.parse(raws, **LIMITS) == parse_many(raws, **LIMITS)
        [child] = parsers._children
        child.process.kill()
        await child.process.wait()
        # a dead child found idle is replaced before the request goes out
        assert await parsers.parse(raws[:1], **LIMITS) == parse_many(raws[:1], **LIMITS)
        [child] = parsers._children
        killer = asyncio.get_running_loop().call_later(0.05, child.process.kill)
        with pytest.raises(RetryableError):  # died with the request in hand
            await parsers.parse([buyer_mail(0)] * 3000, **LIMITS)
        killer.cancel()
        assert await parsers.parse(raws[:2], **LIMITS) == parse_many(raws[:2], **LIMITS)
    finally:
        await parsers.close()
    assert child.process.returncode is not None
    assert not parsers._children


async def test_a_cancelled_parse_kills_its_child() -> None:
    parsers = ParseProcesses(1)
    try:
        await parsers.parse([buyer_mail(0)], **LIMITS)
        [child] = parsers._children
        task = asyncio.create_task(parsers.parse([buyer_mail(0)] * 3000,
                                                 **LIMITS))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(child.process.wait(), 5)
        assert await parsers.parse([buyer_mail(1)], **LIMITS) == parse_many(
            [buyer_mail(1)], **LIMITS)
    finally:
        await parsers.close()


def threaded_mail(n: int) -> bytes:
    """Twelve mails whose threads cross batches of three: by subject, by the buyer's own
    earlier ids, and not across senders."""
    sender, subject, headers = {
        0: ("buyer0", "Pedido 7", {}), 1: ("buyer1", "Cambio", {}),
        2: ("buyer0", "Otra cosa", {}), 3: ("buyer0", "Re: Pedido 7", {}),
        4: ("buyer1", "Talla", {"In-Reply-To": "<t-1@buyer.test>"}),
        5: ("buyer2", "Pedido 7", {}),
        6: ("buyer0", "Más", {"References": "<t-3@buyer.test>"}),
        7: ("buyer1", "Re: Cambio", {}),
        8: ("buyer2", "Hola", {"In-Reply-To": "<t-0@buyer.test>"}),
    }.get(n, (f"buyer{n % 3}", "Re: Otra cosa", {}))
    return mail(f"{sender}@buyer.test", subject, f"mensaje {n}", f"<t-{n}@buyer.test>",
                headers=headers)


async def test_memos_read_ahead_decide_a_backlog_as_one_batch_would(
        channel: Any, dovecot: Any, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """With thread memory, each next batch's memos are read while the batch before is
    stored (``_Reader.read_memos_ahead``); the threads come out as one batch of the whole
    backlog decides them."""
    for n in range(12):
        await dovecot.adeliver(threaded_mail(n))
    threads: dict[str, dict[str, str]] = {}
    read_ahead = 0
    for instance, limit in (("batched", 3), ("whole", 100)):
        monkeypatch.setattr(email_adapter, "FETCH_LIMIT", limit)
        adapter = channel(instance=instance, threads=RedisThreads(store))
        cursor, seen = None, threads.setdefault(instance, {})
        while len(seen) < 12:
            items, cursor = await adapter.poll("INBOX", cursor)
            seen.update((m.provider_message_id, m.thread_id) for m in items
                        if isinstance(m, InboundMessage))
            if adapter._reader is not None:
                read_ahead += len(adapter._reader._memos)
            await asyncio.sleep(0.2)  # the polling base would be storing the batch
    assert threads["batched"] == threads["whole"]
    assert read_ahead > 0  # some batch's memos were read ahead
    thread = [threads["batched"][f"<t-{n}@buyer.test>"] for n in range(12)]
    assert thread[3] == thread[6] == thread[0]  # subject, then a reference to a joined mail
    assert thread[4] == thread[7] == thread[1]  # the buyer's own id, then the subject
    assert thread[9] == thread[2]
    assert len({thread[0], thread[1], thread[2], thread[5], thread[8], thread[10],
                thread[11]}) == 7  # other senders never join
