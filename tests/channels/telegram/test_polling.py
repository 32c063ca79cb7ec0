"""Polling mode beyond the kit: the getUpdates offset is confirmed to Telegram only by the poll
after the store, a webhook is deleted first, conflicts are named, and Telegram's errors on
getUpdates are retried with its retry_after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from channels.base import AdapterContext
from channels.errors import AuthError, RateLimited, RetryableError
from channels.models import InboundMessage
from channels.polling import Unusable
from channels.telegram.adapter import TelegramChannel, TelegramPollingChannel
from channels.testing import IngestGate, MemoryKitStore
from channels.testing.polling import MemoryCursorStore, MemoryLeaseManager, PollingKit
from tests.channels.telegram import updates
from tests.channels.telegram.bot_api import FakeBotApi, error
from tests.channels.telegram.test_conformance import TOKEN, settings


class Poller:
    def __init__(self, api: FakeBotApi, session: aiohttp.ClientSession) -> None:
        self.api = api
        self.session = session

    def adapter(self, **overrides: Any) -> TelegramPollingChannel:
        async def quarantine(*args: Any, **kwargs: Any) -> str:
            return "q-1"

        context = AdapterContext(http=self.session, quarantine=quarantine,
                                 spawn=lambda coro, name: None)  # type: ignore[arg-type,return-value]
        fields: dict[str, Any] = {"mode": "polling", "webhook_secret": None,
                                  "long_poll_seconds": 0, **overrides}
        adapter = TelegramChannel("shop", settings(self.api, **fields), context)
        assert isinstance(adapter, TelegramPollingChannel)
        return adapter


@pytest.fixture
async def poller() -> AsyncIterator[Poller]:
    async with FakeBotApi(TOKEN) as api, aiohttp.ClientSession() as session:
        yield Poller(api, session)


def texts(items: Any) -> list[str]:
    return [i.text for i in items if isinstance(i, InboundMessage)]


async def test_polling_mode_builds_a_poller_that_serves_no_webhook(poller: Poller) -> None:
    adapter = poller.adapter()
    assert adapter.webhook_methods == frozenset()
    assert adapter.schedule.interval_seconds == 1.0  # no long poll: wait between polls
    assert poller.adapter(long_poll_seconds=25).schedule.interval_seconds == 0.0


async def test_the_offset_is_confirmed_only_by_the_next_poll(poller: Poller) -> None:
    adapter = poller.adapter()
    first = poller.api.publish_update(updates.case(1).payload)
    poller.api.publish_update(updates.case(2).payload)
    items, cursor = await adapter.poll("default", None)
    assert texts(items) == [updates.case(1).text, updates.case(2).text]
    assert cursor == str(first + 2).encode()
    assert poller.api.confirmed == 0, "nothing is confirmed before the items are stored"
    items, same = await adapter.poll("default", cursor)  # the poll after the checkpoint
    assert items == [] and same == cursor
    assert poller.api.confirmed == first + 2 and poller.api.pending() == []


async def test_a_restart_resumes_from_the_stored_offset(poller: Poller) -> None:
    """A process that stored an update but died before checkpointing gets it again (and the
    store drops the repeat by its id); one that checkpointed never sees it again."""
    poller.api.publish_update(updates.case(1).payload)
    items, cursor = await poller.adapter().poll("default", None)
    assert len(items) == 1
    again, _ = await poller.adapter().poll("default", None)  # died before the checkpoint
    assert [i.provider_message_id for i in again] == [i.provider_message_id for i in items]
    poller.api.publish_update(updates.case(2).payload)
    after, _ = await poller.adapter().poll("default", cursor)  # checkpointed: only news
    assert texts(after) == [updates.case(2).text]


async def test_a_webhook_is_deleted_before_the_first_poll(poller: Poller) -> None:
    poller.api.webhook = {"url": "https://old.example.com/hook"}
    poller.api.publish_update(updates.case(1).payload)
    adapter = poller.adapter()
    items, _ = await adapter.poll("default", None)
    assert poller.api.webhook is None and len(items) == 1
    assert poller.api.calls[:2] == ["deleteWebhook", "getUpdates"]
    await adapter.poll("default", None)
    assert poller.api.calls.count("deleteWebhook") == 1, "deleted once per start"


async def test_a_webhook_set_later_is_reported_as_a_conflict(poller: Poller) -> None:
    adapter = poller.adapter()
    await adapter.poll("default", None)
    poller.api.webhook = {"url": "https://other-deployment.example.com/hook"}
    with pytest.raises(RetryableError, match=r"409 Conflict.*webhook.*only one may read"):
        await adapter.poll("default", None)
    assert poller.api.webhook is not None, "not taken back from another deployment silently"


async def test_another_poller_outside_the_lease_is_named(poller: Poller) -> None:
    poller.api.fail_next("getUpdates", error(409, description="Conflict: terminated by other "
                                             "getUpdates request; make sure that only one bot "
                                             "instance is running"))
    with pytest.raises(RetryableError, match="terminated by other getUpdates"):
        await poller.adapter().poll("default", None)


async def test_get_updates_errors_are_classified(poller: Poller) -> None:
    adapter = poller.adapter()
    poller.api.fail_next("getUpdates", error(429, retry_after=4))
    with pytest.raises(RateLimited) as info:
        await adapter.poll("default", None)
    assert info.value.retry_after == 4.0
    poller.api.fail_next("getUpdates", error(502))
    with pytest.raises(RetryableError):
        await adapter.poll("default", None)
    poller.api.fail_next("getUpdates", error(401))
    with pytest.raises(AuthError):
        await adapter.poll("default", None)


async def test_unusable_and_skipped_updates_move_the_offset(poller: Poller) -> None:
    adapter = poller.adapter()
    bad = {"update_id": 0, "message": {"message_id": "x", "chat": {}}}
    poller.api.publish_update(bad)
    poller.api.publish_update(updates.blocked_update(0))
    last = poller.api.publish_update(updates.case(3).payload)
    items, cursor = await adapter.poll("default", None)
    assert isinstance(items[0], Unusable) and "not a Bot API Update" in items[0].reason
    assert texts(items[1:]) == [updates.case(3).text]
    assert cursor == str(last + 1).encode()
    assert adapter.skipped["my_chat_member"] == 1 and adapter.blocked_chats


async def test_a_file_outage_keeps_the_offset(poller: Poller) -> None:
    adapter = poller.adapter()
    poller.api.files["p"] = ("photos/p.jpg", b"\xff\xd8\xff" + bytes(100))
    poller.api.file_failures = [503]
    poller.api.publish_update(updates.photo_update(0, 5, "mira", [("p", 800, 103)]))
    with pytest.raises(RetryableError, match=r"not acknowledged"):
        await adapter.poll("default", None)
    items, _ = await adapter.poll("default", None)  # the same update again, file served
    assert texts(items) == ["mira"]


async def test_the_supervised_poller_retries_telegram_errors_without_loss() -> None:
    leases = MemoryLeaseManager()
    gate = IngestGate(MemoryKitStore())
    kit = PollingKit(gate, MemoryCursorStore(leases), leases)
    async with FakeBotApi(TOKEN) as api:
        api.fail_next("getUpdates", error(502))
        api.fail_next("getUpdates", error(429, retry_after=1))
        cases = [updates.case(n) for n in range(1, 4)]
        for case in cases:
            api.publish(case)
        config = settings(api, mode="polling", webhook_secret=None, long_poll_seconds=1)
        async with kit.run(api, lambda context: TelegramChannel("shop", config,
                                                                 context)) as harness:
            await harness.wait_stored([c.provider_message_id for c in cases], timeout=10)
            assert [e.provider_message_id for e in harness.stored()] == \
                [c.provider_message_id for c in cases]
            assert not any(e.duplicate for e in harness.stored())
        assert api.calls.count("getUpdates") >= 3


async def test_a_slow_batch_stops_early_and_resumes_where_it_stopped(
        poller: Poller, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = poller.adapter()
    adapter.schedule = msgspec.structs.replace(adapter.schedule, timeout_seconds=0.2)
    original = adapter.items

    async def slow(data: Any) -> list[InboundMessage]:
        await asyncio.sleep(0.06)  # a file download each
        return await original(data)

    monkeypatch.setattr(adapter, "items", slow)
    for n in range(1, 6):
        poller.api.publish_update(updates.case(n).payload)
    items, cursor = await adapter.poll("default", None)
    assert 1 <= len(items) < 5
    seen = texts(items)
    for _ in range(5):
        more, cursor = await adapter.poll("default", cursor)
        seen += texts(more)
    assert seen == [updates.case(n).text for n in range(1, 6)], "lost or repeated"


async def test_a_redelivery_storm_in_polling_stores_one_message() -> None:
    """The same update_id 50 times (a Bot API that repeats itself) is one message."""
    leases = MemoryLeaseManager()
    gate = IngestGate(MemoryKitStore())
    kit = PollingKit(gate, MemoryCursorStore(leases), leases)
    async with FakeBotApi(TOKEN) as api:
        case = updates.case(1)
        for _ in range(50):
            api.publish_update(case.payload, keep_id=True)
        config = settings(api, mode="polling", webhook_secret=None, long_poll_seconds=1)
        async with kit.run(api, lambda context: TelegramChannel("shop", config,
                                                                 context)) as harness:
            await harness.wait_stored([case.provider_message_id])
            await harness.wait_until(lambda: api.pending() == [],
                                     what="the updates were not confirmed")
        assert sum(not r.duplicate for r in gate.results) == 1
        assert len(gate.results) == 1, "the repeats after the first were skipped by offset"
