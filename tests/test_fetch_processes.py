"""Fetch after notify across real hub processes on one Redis (invariant 5): a hub killed with
SIGKILL while it fetches a notified resource loses nothing. The webhook was answered before the
fetch began; the entry stays pending under the dead consumer; another hub process reclaims it
once it has been idle for ``claim_idle_seconds`` (1 s here), fetches the resource and stores
one message, and a repeat of the same notification afterwards is acknowledged and not fetched
again.

The children load the example fetching channel (tests/channels/fetch_example) through the real
plugin mechanism: an ``inboxhub.channels`` entry point in a dist-info directory on their
PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from storage import keys
from tests.channels.fetch_example import plugin
from tests.channels.fetch_example.provider import FetchProviderFake, notification_body
from tests.channels.fetch_example.test_conformance import SECRET, TOKEN, buyer_message
from tests.conftest import RedisServer
from tests.helpers import eventually
from tests.test_crash_recovery import HubProcess, get_json, hub_processes, make_hub

ROOT = Path(__file__).resolve().parents[1]
STREAM = keys.fetch_stream("market")


def fetching_hub(tmp_path: Path, name: str, redis_url: str, url: str) -> HubProcess:
    site = plugin.install(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), plugin.TOKEN_ENV: TOKEN,
           plugin.SECRET_ENV: SECRET}
    return make_hub(tmp_path, name, redis_url, env=env,
                    extra=plugin.channel_toml("market", url))


async def post(http: aiohttp.ClientSession, hub: HubProcess, body: bytes,
               provider: FetchProviderFake) -> int:
    async with http.post(hub.base + "/webhooks/example-fetch/market", data=body,
                         headers=provider.signed_headers(body),
                         timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status


async def messages(http: aiohttp.ClientSession, hub: HubProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for conversation in (await get_json(http, hub.base + "/api/v1/conversations"))[
            "conversations"]:
        detail = await get_json(http, f"{hub.base}/api/v1/conversations/{conversation['id']}")
        found += detail["messages"]
    return found


async def test_a_hub_killed_mid_fetch_is_taken_over_and_stores_one_message(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None
) -> None:
    case = buyer_message(1)
    async with FetchProviderFake(TOKEN, SECRET) as provider, hub_processes() as hubs, \
            aiohttp.ClientSession() as http:
        a = fetching_hub(tmp_path, "a", redis_server.url, provider.url)
        hubs.append(a)
        a.start()
        await a.wait_ready(http)

        provider.publish(case)
        provider.hold_fetches()
        body = notification_body(case.provider_message_id, 1)
        # Answered while the resource cannot be fetched: the answer came first.
        assert await post(http, a, body, provider) == 200
        await eventually(lambda: _true(provider.in_flight == 1), timeout=15)
        info = await redis.xpending(STREAM, keys.FETCH_GROUP)
        assert info["pending"] == 1, info
        [consumer] = [c["name"].decode() for c in info["consumers"]]
        assert a.proc is not None and f"-{a.proc.pid}-" in consumer, consumer

        os.kill(a.proc.pid, signal.SIGKILL)
        assert await a.wait_exit(10) == -signal.SIGKILL
        await eventually(lambda: _true(provider.in_flight == 0))
        assert await messages_in_redis(redis) == 0
        provider.release_fetches()

        b = fetching_hub(tmp_path, "b", redis_server.url, provider.url)
        hubs.append(b)
        b.start()
        await b.wait_ready(http)

        async def stored() -> list[dict[str, Any]]:
            return await messages(http, b)

        [message] = await eventually(stored, timeout=20)
        assert message["text"] == case.text
        assert message["provider_message_id"] == case.provider_message_id
        assert provider.fetch_requests == 2, "fetched by the dead hub, then by the survivor"

        async def drained() -> bool:
            pending = (await redis.xpending(STREAM, keys.FETCH_GROUP))["pending"]
            return pending == 0 and await redis.xlen(STREAM) == 0

        await eventually(drained, timeout=10)
        # The provider sends the same notification again (it never saw the first answer
        # arrive, say): acknowledged, and neither fetched nor stored again.
        assert await post(http, b, body, provider) == 200
        backlog = await get_json(http, b.base + "/api/v1/fetches?instance=market")
        assert backlog["fetches"] == []
        assert backlog["backlog"][0]["queued"] == 0
        assert provider.fetch_requests == 2
        assert len(await messages(http, b)) == 1


async def _true(value: bool) -> bool:
    return value


async def messages_in_redis(redis: Redis) -> int:
    found = 0
    async for _key in redis.scan_iter(match="ih:*:msg:*", count=1000):
        found += 1
    return found
