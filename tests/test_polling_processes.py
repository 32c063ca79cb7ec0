"""Pollers across real hub processes on one Redis (invariant 5): two ``python -m hub serve``
children configured with the same polling channel poll its account one at a time, and when the
holder is killed with SIGKILL the other takes over within the lease's TTL, stores nothing twice,
and the dead holder's fence can no longer move the cursor.

The children load the example channel (tests/channels/polling_example) through the real plugin
mechanism: an ``inboxhub.channels`` entry point in a dist-info directory on their PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from channels.services.cursors import cursor_lease_name
from channels.services.leases import LeaseInfo
from storage.cursors import RedisCursorStore
from storage.leases import RedisLeaseManager
from tests.channels.polling_example import plugin
from tests.channels.polling_example.provider import ExampleProvider
from tests.channels.polling_example.test_conformance import TOKEN, buyer_message
from tests.conftest import RedisServer
from tests.helpers import eventually
from tests.test_crash_recovery import HubProcess, get_json, hub_processes, make_hub

ROOT = Path(__file__).resolve().parents[1]
LEASE_SECONDS = 2.0
NAME = cursor_lease_name("poller", "default")


def poller_hub(tmp_path: Path, name: str, redis_url: str, url: str) -> HubProcess:
    site = plugin.install(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), plugin.TOKEN_ENV: TOKEN}
    return make_hub(tmp_path, name, redis_url, env=env,
                    extra=plugin.channel_toml("poller", url, interval=0.05,
                                              lease_seconds=LEASE_SECONDS))


async def ingested(http: aiohttp.ClientSession, hub: HubProcess) -> dict[str, float]:
    """This process's ``inboxhub_ingested_messages`` for the poller, by outcome."""
    async with http.get(hub.base + "/metrics") as resp:
        text = await resp.text()
    counts = {"stored": 0.0, "duplicate": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "inboxhub_ingested_messages_total" and \
                    sample.labels.get("instance") == "poller":
                counts[sample.labels["outcome"]] = sample.value
    return counts


async def stored_texts(http: aiohttp.ClientSession, hub: HubProcess) -> list[str]:
    data = await get_json(http, hub.base + "/api/v1/conversations")
    texts: list[str] = []
    for conversation in data["conversations"]:
        detail = await get_json(http, f"{hub.base}/api/v1/conversations/{conversation['id']}")
        texts += [m["text"] for m in detail["messages"]]
    return texts


async def holder(redis: Redis) -> LeaseInfo | None:
    return await RedisLeaseManager(redis, owner="test").holder(NAME)


def pid_of(hub: HubProcess) -> int:
    assert hub.proc is not None
    return hub.proc.pid


async def test_two_hub_processes_poll_one_account_exclusively(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None
) -> None:
    async with ExampleProvider(TOKEN) as provider, hub_processes() as hubs, \
            aiohttp.ClientSession() as http:
        provider.poll_delay = 0.02  # overlapping polls would show in max_in_flight
        a = poller_hub(tmp_path / "a", "a", redis_server.url, provider.url)
        b = poller_hub(tmp_path / "b", "b", redis_server.url, provider.url)
        hubs += [a, b]
        for hub in hubs:
            hub.start()
        for hub in hubs:
            await hub.wait_ready(http)
        cases = [buyer_message(n) for n in range(1, 21)]
        for batch in range(4):  # spread over time, while both processes run
            for case in cases[batch * 5:(batch + 1) * 5]:
                provider.publish(case)
            await asyncio.sleep(0.3)

        async def all_stored() -> bool:
            return len(await stored_texts(http, a)) == len(cases)

        await eventually(all_stored, timeout=20)
        counts = {hub.base: await ingested(http, hub) for hub in hubs}
        assert sum(c["stored"] for c in counts.values()) == len(cases)
        assert sum(c["duplicate"] for c in counts.values()) == 0, counts
        [(polling, _)] = [(base, c) for base, c in counts.items() if c["stored"]]
        assert provider.max_in_flight == 1, "two processes polled the account at once"
        lease = await holder(redis)
        assert lease is not None
        assert f"-{pid_of(a if polling == a.base else b)}-" in lease.owner
        assert sorted(await stored_texts(http, b)) == sorted(c.text for c in cases)


async def test_kill_9_of_the_holder_is_taken_over_within_the_lease_ttl(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None
) -> None:
    async with ExampleProvider(TOKEN) as provider, hub_processes() as hubs, \
            aiohttp.ClientSession() as http:
        a = poller_hub(tmp_path / "a", "a", redis_server.url, provider.url)
        hubs.append(a)
        a.start()
        await a.wait_ready(http)
        before = [buyer_message(n) for n in range(1, 6)]
        for case in before:
            provider.publish(case)

        async def stored(hub: HubProcess, count: int) -> bool:
            return len(await stored_texts(http, hub)) == count

        await eventually(lambda: stored(a, 5), timeout=15)
        await eventually(lambda: _cursor_is(redis, b"5"))
        dead = await holder(redis)
        assert dead is not None and f"-{pid_of(a)}-" in dead.owner

        b = poller_hub(tmp_path / "b", "b", redis_server.url, provider.url)
        hubs.append(b)
        b.start()
        await b.wait_ready(http)
        assert (await ingested(http, b))["stored"] == 0  # standing by

        os.kill(pid_of(a), signal.SIGKILL)
        killed_at = time.monotonic()
        assert await a.wait_exit(10) == -signal.SIGKILL
        after = [buyer_message(n) for n in range(6, 11)]
        for case in after:
            provider.publish(case)

        async def taken_over() -> LeaseInfo | None:
            lease = await holder(redis)
            return lease if lease is not None and f"-{pid_of(b)}-" in lease.owner else None

        taken = await eventually(taken_over, timeout=LEASE_SECONDS + 10, interval=0.02)
        takeover = time.monotonic() - killed_at
        print(f"takeover after SIGKILL: {takeover:.2f} s (lease TTL {LEASE_SECONDS} s)")
        # Renewed every TTL/3, so the lease ran out at most a TTL after the kill; the standby
        # tries again right then. The margin is for a loaded test machine.
        assert takeover < LEASE_SECONDS + 2.0, f"takeover took {takeover:.2f} s"
        assert taken.fence > dead.fence

        await eventually(lambda: stored(b, 10), timeout=15)
        texts = await stored_texts(http, b)
        assert sorted(texts) == sorted(c.text for c in before + after), "lost or doubled"
        assert (await ingested(http, b))["stored"] == len(after)
        # The dead holder's fence can no longer move the cursor.
        cursors = RedisCursorStore(redis)
        await eventually(lambda: _cursor_is(redis, b"10"))
        assert not await cursors.save("poller", "default", b"3", fence=dead.fence)
        assert await cursors.load("poller", "default") == b"10"


async def _cursor_is(redis: Redis, value: bytes) -> bool:
    return await RedisCursorStore(redis).load("poller", "default") == value
