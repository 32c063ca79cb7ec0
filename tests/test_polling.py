"""The polling base (channels/polling.py) on real Redis and a real HTTP provider: stop during a
poll, renewal during a poll longer than the lease, a lost lease or a refused checkpoint stops
polling at once, provider errors back off (never a crash loop), unusable items are quarantined
without blocking, delivery updates are applied in order, one lease and cursor per account, and
the hub's wiring (AdapterContext services, /readyz, lease released on shutdown)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.base import AdapterContext
from channels.errors import AuthError, PermanentError, RateLimited, RetryableError
from channels.models import DeliveryUpdate, InboundMessage
from channels.polling import Polled, PollItem
from channels.secrets import Secret
from channels.services.cursors import cursor_lease_name
from channels.supervisor import Backoff, LoopHealth
from channels.testing import IngestGate, MemoryKitStore
from channels.testing.polling import (
    AdapterFactory,
    MemoryCursorStore,
    MemoryLeaseManager,
    PollingHarness,
    PollingKit,
)
from hub.config import LoadedConfig
from storage import keys
from storage.cursors import RedisCursorStore
from storage.kit import StoreKit
from storage.leases import RedisLeaseManager
from storage.store import Store
from tests.channels.polling_example import plugin
from tests.channels.polling_example.adapter import ExampleChannel, ExampleSettings
from tests.channels.polling_example.provider import ExampleProvider
from tests.channels.polling_example.test_conformance import TOKEN, buyer_message
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

NAME = cursor_lease_name("shop", "default")


@pytest.fixture
async def provider() -> AsyncIterator[ExampleProvider]:
    async with ExampleProvider(TOKEN) as fake:
        yield fake


@pytest.fixture
def kit(store: Store, redis: Redis) -> PollingKit:
    return PollingKit(IngestGate(StoreKit(store)), RedisCursorStore(redis),
                      RedisLeaseManager(redis, owner="test"))


def example(provider: ExampleProvider, *, lease_seconds: float = 1.0,
            timeout_seconds: float = 10.0, cls: type[ExampleChannel] = ExampleChannel,
            deliveries: Any = None) -> AdapterFactory:
    settings = ExampleSettings(url=provider.url, token=Secret(TOKEN, "test"),
                               poll_interval_seconds=0.02, lease_seconds=lease_seconds,
                               timeout_seconds=timeout_seconds)

    def build(context: AdapterContext) -> ExampleChannel:
        context.deliveries = deliveries
        return cls("shop", settings, context)

    return build


def loop_health(harness: PollingHarness, adapter_index: int = 0) -> dict[str, LoopHealth]:
    loops = harness.adapters[adapter_index].context.loops
    assert loops is not None
    return {state.name: state for state in loops.health.snapshot()}


async def steal(redis: Redis, name: str = NAME) -> Any:
    """What another process does once the holder's lease ran out (the holder was paused)."""
    await redis.delete(keys.lease(name))
    lease = await RedisLeaseManager(redis, owner="intruder").acquire(name, 30)
    assert lease is not None
    return lease


def test_backoff_honours_retry_after_and_waits_the_cap_after_a_permanent_error() -> None:
    backoff = Backoff(base=0.01, cap=2.0)
    assert 1.0 <= backoff.after(AuthError("HTTP 401"), 1) <= 2.0
    assert 1.0 <= backoff.after(PermanentError("HTTP 400"), 1) <= 2.0
    assert backoff.after(RateLimited("HTTP 429", retry_after=5.0), 1) >= 5.0
    assert backoff.after(RetryableError("HTTP 503"), 1) <= 0.01
    assert backoff.after(RedisConnectionError("reset"), 1) <= 0.01


async def test_stop_cancels_a_poll_in_flight_and_releases_the_lease(
    kit: PollingKit, provider: ExampleProvider, redis: Redis
) -> None:
    provider.poll_delay = 30.0  # a long poll that has not answered yet
    provider.publish(buyer_message(1))
    async with kit.run(provider, example(provider, timeout_seconds=60)) as harness:
        await harness.wait_until(lambda: provider.in_flight == 1)
        async with asyncio.timeout(5):  # not the 30 s the poll would have taken
            await harness.stop(harness.adapter)
        assert await kit.leases.holder(NAME) is None
        assert await kit.cursors.load("shop", "default") is None
        assert harness.stored() == []
        assert loop_health(harness)[NAME].status == "stopped"


async def test_the_lease_is_renewed_during_a_poll_longer_than_its_ttl(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    provider.poll_delay = 2.5  # longer than the 1 s lease
    async with kit.run(provider, example(provider, lease_seconds=1.0)) as harness:
        await harness.wait_until(lambda: provider.in_flight == 1)
        held = await kit.leases.holder(NAME)
        assert held is not None
        await harness.start_adapter()  # a standby that would poll if the lease lapsed
        provider.publish(buyer_message(1))
        await harness.wait_stored(["m-1"], timeout=15)
        still = await kit.leases.holder(NAME)
        assert still is not None and still.fence == held.fence
        assert provider.max_in_flight == 1
        assert {e.poller for e in harness.stored()} == {0}


async def test_a_lost_lease_stops_polling_until_it_is_acquired_again(
    kit: PollingKit, provider: ExampleProvider, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channels.polling")
    async with kit.run(provider, example(provider, lease_seconds=1.0)) as harness:
        assert await harness.deliver(buyer_message(1))
        intruder = await steal(redis)
        await harness.wait_until(lambda: "its lease was lost" in caplog.text,
                                 what="the poller did not notice the lost lease")
        provider.publish(buyer_message(2))
        polls = provider.polls
        await asyncio.sleep(1.0)  # dozens of poll intervals: the holder would have polled
        assert provider.polls == polls, "polled an account whose lease it lost"
        assert "m-2" not in {e.provider_message_id for e in harness.stored()}
        await intruder.release()
        await harness.wait_stored(["m-2"])
        held = await kit.leases.holder(NAME)
        assert held is not None and held.fence > intruder.fence
        assert not any(e.duplicate for e in harness.stored())


async def test_a_refused_checkpoint_stops_polling_and_the_cursor_stays(
    kit: PollingKit, provider: ExampleProvider, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The holder is paused mid-poll past its TTL; another process takes the account; the
    holder's checkpoint is refused by its fence and it goes back to acquiring."""
    caplog.set_level(logging.INFO, logger="channels.polling")
    provider.poll_delay = 0.5  # shorter than the next renewal (a third of 3 s)
    provider.publish(buyer_message(1))
    async with kit.run(provider, example(provider, lease_seconds=3.0)) as harness:
        await harness.wait_until(lambda: provider.in_flight == 1)
        intruder = await steal(redis)
        await harness.wait_until(lambda: "checkpoint was refused" in caplog.text,
                                 what="the stale checkpoint was not refused")
        assert [e.kind for e in harness.events if e.kind != "stored"] == ["refused"]
        assert await kit.cursors.load("shop", "default") is None
        # The new holder moves past m-1 (it was stored: the stale holder's ingest is kept,
        # and deduplicated if fetched again).
        assert await kit.cursors.save("shop", "default", b"1", fence=intruder.fence)
        provider.poll_delay = 0.0
        provider.publish(buyer_message(2))
        await intruder.release()
        await harness.wait_stored(["m-2"])
        assert [e.provider_message_id for e in harness.stored()] == ["m-1", "m-2"]
        assert await kit.cursors.load("shop", "default") == b"2"


async def test_auth_error_backs_off_visibly_and_recovers(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    provider.poll_failures = [(401, {})] * 3
    async with kit.run(provider, example(provider)) as harness:
        await harness.wait_until(
            lambda: (loop_health(harness)[NAME].last_error or "").startswith("AuthError"))
        state = loop_health(harness)[NAME]
        assert state.status in ("backing_off", "running")  # not "crashed": not a bug
        assert state.restarts >= 1
        assert await harness.deliver(buyer_message(1))
        # the loop reports "running" once the poll that stored it has returned
        await harness.wait_until(lambda: loop_health(harness)[NAME].status == "running",
                                 what="the loop did not report running after recovering")
        assert provider.poll_failures == []


async def test_retryable_provider_errors_back_off_and_lose_nothing(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    provider.poll_failures = [(503, {}), (429, {"Retry-After": "0.2"}), (500, {})]
    provider.publish(buyer_message(1))
    async with kit.run(provider, example(provider)) as harness:
        await harness.wait_stored(["m-1"])
        assert provider.poll_failures == []
        assert loop_health(harness)[NAME].restarts >= 3


async def test_an_unusable_item_is_quarantined_and_does_not_block(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    provider.publish_raw({"id": "", "from": "ana", "text": "empty id"})
    provider.publish_raw({"from": "ana"})
    provider.publish(buyer_message(3))
    async with kit.run(provider, example(provider)) as harness:
        await harness.wait_stored(["m-3"])
        polls = provider.polls
        await harness.wait_until(lambda: provider.polls >= polls + 3)
        assert len(harness.quarantined) == 2, "quarantined again: the cursor did not move"
        (raw, reason), _ = harness.quarantined
        assert b"empty id" in raw and reason.startswith("update 1:")
        assert await kit.cursors.load("shop", "default") == b"3"


class ReceiptsChannel(ExampleChannel):
    """The example, where a message whose text is ``<delivered>`` reports on our send ``id``."""

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        items, next_cursor = await super().poll(account, cursor)
        out: list[PollItem] = []
        for item in items:
            if isinstance(item, InboundMessage) and item.text == "<delivered>":
                out.append(DeliveryUpdate(self.instance, item.provider_message_id, "delivered"))
            else:
                out.append(item)
        return out, next_cursor


class RecordingDeliveries:
    """A ``DeliveryIndex`` that can be made to fail, as the hub's does when Redis fails."""

    def __init__(self) -> None:
        self.applied: list[DeliveryUpdate] = []
        self.fail = False

    async def apply(self, update: DeliveryUpdate) -> bool:
        if self.fail:
            raise RedisConnectionError("delivery index unavailable")
        self.applied.append(update)
        return True


async def test_delivery_updates_are_applied_before_the_cursor_moves(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    deliveries = RecordingDeliveries()
    deliveries.fail = True
    provider.publish_raw({"id": "s-1", "from": "provider", "text": "<delivered>"})
    provider.publish(buyer_message(2))
    factory = example(provider, cls=ReceiptsChannel, deliveries=deliveries)
    async with kit.run(provider, factory) as harness:
        await harness.wait_until(lambda: harness.adapter.context.loops is not None and
                                 loop_health(harness)[NAME].status == "backing_off")
        assert await kit.cursors.load("shop", "default") is None
        assert harness.stored() == []  # in provider order: nothing behind the receipt
        deliveries.fail = False
        await harness.wait_stored(["m-2"])
        assert [(u.provider_message_id, u.state) for u in deliveries.applied] == \
            [("s-1", "delivered")]


class TwoMailboxes(ExampleChannel):
    """Polls INBOX from the provider and a second mailbox that never has mail."""

    def accounts(self) -> Sequence[str]:
        return ("INBOX", "Archive/2026")

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        if account == "Archive/2026":
            return [], b"uidvalidity=7;uid=0"
        return await super().poll(account, cursor)


async def test_each_account_has_its_own_lease_cursor_and_loop(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    async with kit.run(provider, example(provider, cls=TwoMailboxes)) as harness:
        assert await harness.deliver(buyer_message(1))
        inbox, archive = (cursor_lease_name("shop", a) for a in ("INBOX", "Archive/2026"))
        assert await kit.cursors.load("shop", "INBOX") == b"1"
        # the archive's own loop checkpoints on its own schedule (a loaded machine: later)
        deadline = time.monotonic() + 10
        while await kit.cursors.load("shop", "Archive/2026") is None:
            assert time.monotonic() < deadline, "the second account's loop never polled"
            await asyncio.sleep(0.01)
        assert await kit.cursors.load("shop", "Archive/2026") == b"uidvalidity=7;uid=0"
        a, b = await kit.leases.holder(inbox), await kit.leases.holder(archive)
        assert a is not None and b is not None
        assert set(loop_health(harness)) == {inbox, archive}
        await harness.stop(harness.adapter)
        assert await kit.leases.holder(inbox) is None
        assert await kit.leases.holder(archive) is None


async def test_start_refuses_a_context_without_the_polling_services(
    provider: ExampleProvider
) -> None:
    leases = MemoryLeaseManager()
    async with aiohttp.ClientSession() as http:
        async def quarantine(*args: Any, **kwargs: Any) -> str:
            return "q"

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("not used")

        context = AdapterContext(http=http, quarantine=quarantine, spawn=spawn,
                                 cursors=MemoryCursorStore(leases), leases=leases)
        adapter = example(provider)(context)
        with pytest.raises(RuntimeError, match="needs the hub's loops, cursors and leases"):
            await adapter.start(IngestGate(MemoryKitStore()))


async def test_settings_validate_the_lease_and_the_account_names(
    kit: PollingKit, provider: ExampleProvider
) -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="lease_seconds"):
        msgspec.convert({"url": "http://x", "token": "t", "lease_seconds": 0.1},
                        ExampleSettings, dec_hook=lambda t, v: Secret(v, "test"))

    class Duplicated(ExampleChannel):
        def accounts(self) -> Sequence[str]:
            return ("INBOX", "INBOX")

    with pytest.raises(ValueError, match="each polled account once"):
        async with kit.run(provider, example(provider, cls=Duplicated)):
            pass


# -- the hub ------------------------------------------------------------------------------------


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(plugin.install(tmp_path / "site")))
    monkeypatch.setenv(plugin.TOKEN_ENV, TOKEN)


async def test_the_hub_polls_a_configured_channel_and_reports_it(
    make_config: Any, example_plugin: None, provider: ExampleProvider, store: Store,
    redis: Redis,
) -> None:
    loaded: LoadedConfig = make_config(extra=plugin.channel_toml("poller", provider.url))
    name = cursor_lease_name("poller", "default")
    provider.publish(buyer_message(1))
    async with running_hub(loaded) as client:
        async def conversations() -> list[dict[str, Any]]:
            resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            return list((await resp.json())["conversations"])

        [conversation] = await eventually(conversations)
        assert conversation["channel"] == "example-poll"
        assert conversation["channel_instance"] == "poller"
        assert await RedisCursorStore(redis).load("poller", "default") == b"1"
        holder = await RedisLeaseManager(redis, owner="test").holder(name)
        assert holder is not None and f"-{os.getpid()}-" in holder.owner
        assert (await client.get("/readyz")).status == 200

        provider.poll_failures = [(401, {})] * 1000  # the operator revoked the token

        async def not_ready() -> dict[str, Any] | None:
            resp = await client.get("/readyz")
            return await resp.json() if resp.status == 503 else None  # type: ignore[no-any-return]

        body = await eventually(not_ready)
        assert body["problems"][name].startswith("backing_off: AuthError")
    assert await RedisLeaseManager(redis, owner="test").holder(name) is None


async def test_an_http_role_hub_leaves_polling_to_a_workers_one(
    make_config: Any, example_plugin: None, provider: ExampleProvider, redis: Redis,
) -> None:
    """``serve --role http`` starts the polling adapter without its loop: no poll, no lease,
    nothing in /readyz; ``--role workers`` on the same config polls and stores."""
    from aiohttp.test_utils import TestClient, TestServer

    from hub.app import build_app

    loaded: LoadedConfig = make_config(extra=plugin.channel_toml("poller", provider.url))
    name = cursor_lease_name("poller", "default")
    provider.publish(buyer_message(1))
    front = TestClient(TestServer(build_app(loaded, role="http")))
    await front.start_server()
    try:
        await asyncio.sleep(0.5)  # ten poll intervals
        assert provider.polls == 0
        assert await RedisLeaseManager(redis, owner="test").holder(name) is None
        body = await (await front.get("/readyz")).json()
        assert body["role"] == "http" and name not in body["loops"], body
        back = TestClient(TestServer(build_app(loaded, role="workers")))
        await back.start_server()
        try:
            body = await (await back.get("/readyz")).json()
            assert body["role"] == "workers" and name in body["loops"], body

            async def stored() -> list[dict[str, Any]]:
                resp = await front.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
                return list((await resp.json())["conversations"])

            [conversation] = await eventually(stored)
            assert conversation["channel_instance"] == "poller"
        finally:
            await back.close()
    finally:
        await front.close()
