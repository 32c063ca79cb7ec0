"""Channel health over several hub processes: two real ``inboxhub serve`` children share one
Redis, each counts its own webhook answers and flushes them, and the API of either process and
``inboxhub channels status`` (another process again) show the sum. The store underneath: counts
add up, timestamps keep the latest, the per-minute window is trimmed after 6 h, and of several
evaluators exactly one sees each alert state change."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from channels.services.health import WINDOW_SECONDS
from hub.cli import main
from storage import keys
from storage.health import HealthCounters, RedisChannelHealth
from tests.conftest import ADMIN_TOKEN, RedisServer
from tests.helpers import auth, eventually, signed_post_args
from tests.test_crash_recovery import hub_processes, make_hub

FAST = {"hub": {"health_flush_seconds": 0.2, "health_evaluate_seconds": 0.2}}


async def test_counts_of_two_hub_processes_add_up_in_api_and_cli(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with hub_processes() as hubs, aiohttp.ClientSession() as http:
        for name in ("hub0", "hub1"):
            hub = make_hub(tmp_path, name, redis_server.url, overrides=FAST)
            hubs.append(hub)
            hub.start()
        await asyncio.gather(*(hub.wait_ready(http) for hub in hubs))

        async def post(hub: int, i: int, signed: bool = True) -> int:
            args = signed_post_args({"id": f"p-{hub}-{i}", "sender": f"b-{i}", "text": "hola"})
            if not signed:
                del args["headers"]["X-Inboxhub-Signature"]
            async with http.post(hubs[hub].base + "/webhooks/api/shop", **args) as resp:
                return resp.status

        assert [await post(0, i) for i in range(5)] == [200] * 5
        assert [await post(1, i) for i in range(3)] == [200] * 3
        assert [await post(1, i, signed=False) for i in range(2)] == [401] * 2

        async def summed(hub: int) -> dict[str, Any] | None:
            async with http.get(hubs[hub].base + "/api/v1/channels/shop",
                                headers=auth(ADMIN_TOKEN)) as resp:
                record = await resp.json()
            webhook = record["webhook"]
            return record if (webhook["accepted"], webhook["rejected"]["signature"]) == (8, 2) \
                else None

        record = await eventually(lambda: summed(0), timeout=20)
        assert record["webhook"]["pushes_6h"] == 10
        assert record["webhook"]["success_rate_6h"] == pytest.approx(0.8)
        other = await eventually(lambda: summed(1))
        assert other["webhook"] == record["webhook"]
        assert other["last_inbound_at"] == record["last_inbound_at"]

        # Each process exports its own answers; Prometheus adds them up.
        for hub, accepted in ((0, 5), (1, 3)):
            async with http.get(hubs[hub].base + "/metrics") as resp:
                text = await resp.text()
            assert (f'inboxhub_webhook_requests_total{{instance="shop",outcome="accepted"}} '
                    f"{accepted}.0") in text

        capsys.readouterr()
        code = await asyncio.to_thread(main, ["channels", "status", "shop", "--json",
                                              "--config", str(hubs[0].config)])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out)["webhook"] == record["webhook"]


async def test_the_store_sums_processes_and_keeps_the_latest_times(redis: Redis) -> None:
    now = 1_800_000_000.0
    store = RedisChannelHealth(redis)
    a, b = HealthCounters(clock=lambda: now), HealthCounters(clock=lambda: now - 50)
    for _ in range(3):
        a.webhook("shop", "accepted", 0.01)
    b.webhook("shop", "accepted", 0.01)
    b.webhook("shop", "malformed", 0.01)
    a.send_failed("shop", "RetryableError: HTTP 503\nsecond line is dropped")
    b.send_failed("shop", "PermanentError: HTTP 400")  # older: does not replace a's
    await store.flush(a.take(), now)
    await store.flush(b.take(), now - 50)
    stored = (await store.read(["shop"]))["shop"]
    assert stored.webhooks == {"accepted": 4, "malformed": 1}
    assert stored.inbound_at == now  # the later of the two
    assert stored.send_error is not None
    assert (stored.send_error.at, stored.send_error.error) == (now, "RetryableError: HTTP 503")
    assert sum(bucket.ok for bucket in stored.buckets) == 4
    assert sum(bucket.failed for bucket in stored.buckets) == 1
    assert a.take() == {}  # taken once

    # Six hours on, the next flush in a new minute trims those minutes away.
    later = now + WINDOW_SECONDS + 120
    c = HealthCounters(clock=lambda: later)
    c.webhook("shop", "signature", 0.01)
    await store.flush(c.take(), later)
    stored = (await store.read(["shop"]))["shop"]
    assert [(b.ok, b.failed) for b in stored.buckets] == [(0, 1)]
    assert stored.webhooks["accepted"] == 4  # lifetime counts stay
    assert await redis.ttl(keys.channel_health_window("shop")) > WINDOW_SECONDS


async def test_exactly_one_evaluator_sees_each_change_and_stale_ones_change_nothing(
    redis: Redis,
) -> None:
    first, second = RedisChannelHealth(redis), RedisChannelHealth(redis)
    assert await first.set_alerts("shop", 100.0, {"silent": "1"}) == {"silent": ""}
    assert await second.set_alerts("shop", 101.0, {"silent": "1"}) == {}
    # A process that read the figures before the newest evaluation cannot undo it.
    assert await first.set_alerts("shop", 100.5, {"silent": "0"}) == {}
    assert await second.set_alerts("shop", 102.0, {"silent": "0"}) == {"silent": "1"}
    stored = (await first.read(["shop"]))["shop"]
    assert stored.alerts["silent"] == "0" and stored.alerts["silent:since"] == "102.000"
