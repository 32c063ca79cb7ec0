"""Fetch after notify on the hub's Redis: the queue's rules (dedupe window, states, settlements
that lose a race, release of due retries and operator retries in bounded batches, keyset paging
by id), and the hub's wiring end to end: a configured fetching channel is fetched by the hub's
worker, shows in /metrics, and its failed fetches are listed and retried through the API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.fetching import FetchPolicy
from channels.secrets import Secret
from channels.services.fetches import FetchEntry, NotFailed, UnknownFetch
from channels.testing import IngestGate
from hub.config import LoadedConfig
from hub.fetcher import Fetcher
from storage import keys
from storage.fetches import RedisFetchQueue, dedupe_digest, parse_job_id
from storage.kit import StoreKit, StoreQuarantine
from storage.store import Store
from tests.channels.fetch_example import plugin
from tests.channels.fetch_example.adapter import ExampleFetchChannel, ExampleFetchSettings
from tests.channels.fetch_example.provider import FetchProviderFake, notification_body
from tests.channels.fetch_example.test_conformance import SECRET, TOKEN, buyer_message
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub

# -- the queue ----------------------------------------------------------------------------------


@pytest.fixture
def queue(redis: Redis) -> RedisFetchQueue:
    return RedisFetchQueue(redis, dedupe_ttl_seconds=3600)


async def queued(queue: RedisFetchQueue, instance: str, n: int) -> list[FetchEntry]:
    for i in range(n):
        assert await queue.notify(instance, f"r-{i}", dedupe_key=f"n-{i}")
    return list(reversed(await queue.entries(instance, "queued", limit=n)))


async def test_notify_deduplicates_within_the_window(queue: RedisFetchQueue,
                                                     redis: Redis) -> None:
    assert await queue.notify("shop", "m-1", dedupe_key="n-1")
    assert not await queue.notify("shop", "m-1", dedupe_key="n-1"), "a repeat was queued"
    assert await queue.notify("shop", "m-1", dedupe_key="n-2")  # another notification
    assert await queue.notify("other", "m-1", dedupe_key="n-1")  # another instance
    ttl = await redis.ttl(keys.fetch_seen("shop", dedupe_digest("n-1")))
    assert 3590 <= ttl <= 3600
    second, first = await queue.entries("shop")
    assert (first.resource, first.state, first.attempts) == ("m-1", "queued", 0)
    assert first.id < second.id, "ids are not in arrival order"
    assert parse_job_id(first.id) is not None and parse_job_id(first.id)[0] == "shop"  # type: ignore[index]
    assert abs(first.notified_at - time.time()) < 60
    assert await queue.instances() == ["other", "shop"]
    assert await redis.xlen(keys.fetch_stream("shop")) == 2


@pytest.mark.parametrize(("instance", "resource", "key"), [
    ("bad name", "m-1", "n-1"), ("", "m-1", "n-1"), ("shop", "", "n-1"),
    ("shop", "x" * 3000, "n-1"), ("shop", "m-1", ""), ("shop", "m\n1", "n-1"),
])
async def test_a_bad_instance_resource_or_key_is_refused(
    queue: RedisFetchQueue, redis: Redis, instance: str, resource: str, key: str
) -> None:
    with pytest.raises(ValueError):
        await queue.notify(instance, resource, dedupe_key=key)
    assert await redis.dbsize() == 0


async def test_settling_a_job_that_is_no_longer_queued_changes_nothing(
    queue: RedisFetchQueue
) -> None:
    [job] = await queued(queue, "shop", 1)
    await queue.fail(job, error="PermanentError: HTTP 404")
    # Another worker reclaimed the same job meanwhile and now settles its own attempt.
    await queue.done(job)
    await queue.retry_later(job, delay=0, error="RetryableError: late")
    await queue.fail(job, error="PermanentError: twice")
    found = await queue.get(job.id)
    assert found is not None
    assert (found.state, found.attempts, found.last_error) == \
        ("failed", 1, "PermanentError: HTTP 404")
    backlog = await queue.backlog("shop")
    assert (backlog.queued, backlog.retrying, backlog.failed) == (0, 0, 1)
    assert backlog.oldest_age_seconds is None


async def test_only_the_latest_start_settles_a_job(queue: RedisFetchQueue) -> None:
    """Worker A paused past its claim; B reclaimed the job, failed, and C now runs the retry.
    A's late outcome must not settle C's attempt (nor B's)."""
    [job] = await queued(queue, "shop", 1)
    run_a, _ = await queue.begin(job)
    run_b, starts = await queue.begin(job)  # B reclaimed it: a second start, no outcome yet
    assert (run_b, starts) == (run_a + 1, 2)
    a = msgspec.structs.replace(job, run=run_a)
    b = msgspec.structs.replace(job, run=run_b)
    await queue.retry_later(a, delay=0, error="RetryableError: A, late")  # refused
    await queue.fail(a, error="PermanentError: A, late")  # refused
    found = await queue.get(job.id)
    assert found is not None and (found.state, found.attempts) == ("queued", 0)
    await queue.retry_later(b, delay=0, error="RetryableError: HTTP 503")
    assert await queue.release_due(["shop"]) == 1
    run_c, starts = await queue.begin(job)
    assert starts == 1, "B's settled attempt still counted as interrupted"
    await queue.done(a)  # A again: nothing
    assert await queue.get(job.id) is not None
    await queue.done(msgspec.structs.replace(job, run=run_c))
    assert await queue.get(job.id) is None


async def test_failed_records_expire_after_their_retention(redis: Redis) -> None:
    queue = RedisFetchQueue(redis, failed_retention_seconds=1)
    kept, gone = await queued(queue, "shop", 2)
    await queue.fail(gone, error="AuthError: HTTP 401")
    await queue.fail(kept, error="AuthError: HTTP 401")
    await queue.retry(kept.id)  # an operator's retry keeps it, however long it then takes
    assert await redis.ttl(keys.fetch_job("shop", kept.id)) == -1
    assert 0 < await redis.ttl(keys.fetch_job("shop", gone.id)) <= 1
    await eventually(lambda: _gone(redis, keys.fetch_job("shop", gone.id)), timeout=5)
    assert (await queue.backlog("shop")).failed == 1  # the member outlives its record...
    assert await queue.forget_expired(["shop"]) == 1  # ...until the sweep drops it
    backlog = await queue.backlog("shop")
    assert (backlog.failed, backlog.queued) == (0, 1)
    assert await queue.entries("shop", "failed") == []


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_due_retries_are_released_in_bounded_batches(queue: RedisFetchQueue,
                                                           redis: Redis) -> None:
    jobs = await queued(queue, "shop", 450)
    for job in jobs[:440]:
        await queue.retry_later(job, delay=0, error="RetryableError: HTTP 503")
    for job in jobs[440:]:
        await queue.retry_later(job, delay=3600, error="RetryableError: HTTP 503")
    backlog = await queue.backlog("shop")
    assert (backlog.queued, backlog.retrying) == (0, 450)
    assert backlog.oldest_age_seconds is not None and backlog.oldest_age_seconds < 60
    entry = await queue.get(jobs[0].id)
    assert entry is not None and entry.state == "retrying" and entry.attempts == 1
    assert entry.next_attempt_at is not None and entry.last_error == "RetryableError: HTTP 503"
    before = await redis.xlen(keys.fetch_stream("shop"))
    assert await queue.release_due(["shop"]) == 440
    assert await queue.release_due(["shop"]) == 0
    assert await redis.xlen(keys.fetch_stream("shop")) == before + 440
    backlog = await queue.backlog("shop")
    assert (backlog.queued, backlog.retrying) == (440, 10)
    entry = await queue.get(jobs[0].id)
    assert entry is not None and (entry.state, entry.attempts, entry.next_attempt_at) == \
        ("queued", 1, None)


async def test_operator_retries(queue: RedisFetchQueue, redis: Redis) -> None:
    jobs = await queued(queue, "shop", 450)
    for job in jobs:
        await queue.fail(job, error="AuthError: HTTP 401")
    for bad in ("not-an-id", "0" * 24 + ".shop", "../x"):
        with pytest.raises(UnknownFetch):
            await queue.retry(bad)
    await queue.retry(jobs[0].id)
    with pytest.raises(NotFailed):
        await queue.retry(jobs[0].id)
    entry = await queue.get(jobs[0].id)
    assert entry is not None and (entry.state, entry.attempts, entry.failed_at) == \
        ("queued", 0, None)
    assert await queue.retry_all("shop") == 449
    assert await queue.retry_all("shop") == 0
    backlog = await queue.backlog("shop")
    assert (backlog.queued, backlog.failed) == (450, 0)
    assert await redis.xlen(keys.fetch_stream("shop")) == 900  # one new entry per retry


async def test_entries_page_by_id_across_instances(queue: RedisFetchQueue) -> None:
    for i in range(4):
        for instance in ("a", "b"):
            assert await queue.notify(instance, f"r-{i}", dedupe_key=f"{instance}-{i}")
    [failed] = await queue.entries("b", limit=1)
    await queue.fail(failed, error="PermanentError: HTTP 404")
    everything = await queue.entries(limit=100)
    assert len(everything) == 8
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    seen: list[str] = []
    after = None
    while True:
        page = await queue.entries(limit=3, after=after)
        if not page:
            break
        seen += [e.id for e in page]
        after = page[-1].id
    assert seen == [e.id for e in everything]
    assert [e.id for e in await queue.entries(state="failed")] == [failed.id]
    assert {e.instance for e in await queue.entries("a", "queued")} == {"a"}


# -- the hub -------------------------------------------------------------------------------------

FAST_FETCHES = """
[fetches]
max_attempts = 3
backoff_base_seconds = 0.02
backoff_max_seconds = 0.1
"""


@pytest.fixture
async def provider() -> AsyncIterator[FetchProviderFake]:
    async with FetchProviderFake(TOKEN, SECRET) as fake:
        yield fake


@pytest.fixture
def fetching_config(make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    provider: FetchProviderFake) -> LoadedConfig:
    monkeypatch.syspath_prepend(str(plugin.install(tmp_path / "site")))
    monkeypatch.setenv(plugin.TOKEN_ENV, TOKEN)
    monkeypatch.setenv(plugin.SECRET_ENV, SECRET)
    loaded: LoadedConfig = make_config(
        extra=FAST_FETCHES + plugin.channel_toml("market", provider.url))
    return loaded


async def notify(client: Any, provider: FetchProviderFake, n: int, number: int = 1) -> None:
    case = buyer_message(n)
    provider.publish(case)
    body = notification_body(case.provider_message_id, number)
    resp = await client.post("/webhooks/example-fetch/market", data=body,
                             headers=provider.signed_headers(body))
    assert resp.status == 200, await resp.text()


async def texts(client: Any) -> list[str]:
    resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    found: list[str] = []
    for conversation in (await resp.json())["conversations"]:
        detail = await client.get(f"/api/v1/conversations/{conversation['id']}",
                                  headers=auth(ADMIN_TOKEN))
        found += [m["text"] for m in (await detail.json())["messages"]]
    return sorted(found)


async def metric(client: Any, name: str, **labels: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return None


async def fetches(client: Any, query: str = "", token: str = ADMIN_TOKEN) -> Any:
    resp = await client.get(f"/api/v1/fetches{query}", headers=auth(token))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_the_hub_fetches_after_notify_and_shows_failures_until_retried(
    fetching_config: LoadedConfig, provider: FetchProviderFake
) -> None:
    async with running_hub(fetching_config) as client:
        await notify(client, provider, 1)
        assert await eventually(lambda: texts(client)) == [buyer_message(1).text]
        await eventually(lambda: metric(client, "inboxhub_fetches_total", instance="market",
                                        outcome="fetched"))
        assert await metric(client, "inboxhub_fetch_backlog", instance="market",
                            state="queued") == 0

        provider.fail_next_fetch("retryable")
        provider.fail_next_fetch("auth")  # the seller revoked the app's access
        await notify(client, provider, 2)

        async def failed() -> Any:
            data = await fetches(client, "?state=failed")
            return data if data["fetches"] else None

        data = await eventually(failed)
        [entry] = data["fetches"]
        assert (entry["instance"], entry["resource"], entry["state"], entry["attempts"]) == \
            ("market", "m-2", "failed", 2)
        assert entry["last_error"].startswith("AuthError: HTTP 401")
        assert data["backlog"] == [{"instance": "market", "queued": 0, "retrying": 0,
                                    "failed": 1, "oldest_age_seconds": None}]
        assert await metric(client, "inboxhub_fetch_backlog", instance="market",
                            state="failed") == 1
        resp = await client.get("/api/v1/channels/market", headers=auth(ADMIN_TOKEN))
        assert (await resp.json())["fetch_backlog"] == {
            "instance": "market", "queued": 0, "retrying": 0, "failed": 1,
            "oldest_age_seconds": None}  # channel health shows the same backlog
        assert await metric(client, "inboxhub_fetches_total", instance="market",
                            outcome="retrying") == 1
        assert await metric(client, "inboxhub_fetches_total", instance="market",
                            outcome="failed") == 1
        assert provider.fetch_requests == 3
        assert await texts(client) == [buyer_message(1).text]

        resp = await client.post(f"/api/v1/fetches/{entry['id']}/retry",
                                 headers=auth(ADMIN_TOKEN))
        assert resp.status == 202 and (await resp.json()) == {"status": "queued"}
        await eventually(lambda: _two(client))
        assert await texts(client) == sorted([buyer_message(1).text, buyer_message(2).text])
        resp = await client.post(f"/api/v1/fetches/{entry['id']}/retry",
                                 headers=auth(ADMIN_TOKEN))
        assert resp.status == 404  # fetched and gone
        assert (await fetches(client))["fetches"] == []


async def _two(client: Any) -> bool:
    return len(await texts(client)) == 2


async def test_the_fetches_api_pages_and_refuses_malformed_input(
    fetching_config: LoadedConfig, provider: FetchProviderFake
) -> None:
    async with running_hub(fetching_config) as client:
        for n in range(1, 6):
            provider.fail_next_fetch("permanent")
            await notify(client, provider, n)
            await eventually(lambda n=n: _failed_count(client, n))  # type: ignore[misc]
        seen: list[str] = []
        query = "?instance=market&state=failed&limit=2"
        while True:
            page = await fetches(client, query)
            assert len(page["fetches"]) <= 2
            seen += [e["id"] for e in page["fetches"]]
            if page["next_cursor"] is None:
                break
            query = f"?instance=market&state=failed&limit=2&cursor={page['next_cursor']}"
        assert len(seen) == len(set(seen)) == 5
        assert seen == sorted(seen, reverse=True), "not newest first"

        for bad in ("?limit=0", "?limit=201", "?limit=x", "?state=done", "?instance=a%20b",
                    "?instance=", "?cursor=garbage", "?cursor=eyJ0eXBlIjoiYyJ9",
                    "?other=1", "?state=failed&state=queued"):
            resp = await client.get(f"/api/v1/fetches{bad}", headers=auth(ADMIN_TOKEN))
            assert resp.status == 400, bad
            assert (await resp.json())["error"]["code"] in ("invalid_parameter",
                                                            "invalid_cursor"), bad
        conversation_cursor = (await (await client.get(
            "/api/v1/conversations?limit=1", headers=auth(ADMIN_TOKEN))).json())["next_cursor"]
        if conversation_cursor:
            resp = await client.get(f"/api/v1/fetches?cursor={conversation_cursor}",
                                    headers=auth(ADMIN_TOKEN))
            assert resp.status == 400
        resp = await client.get("/api/v1/fetches", headers=auth(AGENT_TOKEN))
        assert resp.status == 403
        resp = await client.post(f"/api/v1/fetches/{seen[0]}/retry", headers=auth(AGENT_TOKEN))
        assert resp.status == 403
        for bad_id in ("nope", "0" * 24 + ".market", seen[0] + "x"):
            resp = await client.post(f"/api/v1/fetches/{bad_id}/retry",
                                     headers=auth(ADMIN_TOKEN))
            assert resp.status == 404, bad_id
            assert (await resp.json())["error"]["code"] == "not_found"

        provider.hold_fetches()  # the retried fetch stays queued while we ask again
        resp = await client.post(f"/api/v1/fetches/{seen[0]}/retry", headers=auth(ADMIN_TOKEN))
        assert resp.status == 202
        resp = await client.post(f"/api/v1/fetches/{seen[0]}/retry", headers=auth(ADMIN_TOKEN))
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "not_retryable"
        provider.release_fetches()
        await eventually(lambda: _failed_count(client, 4))


async def _failed_count(client: Any, n: int) -> bool:
    return len((await fetches(client, "?state=failed"))["fetches"]) == n


# -- a fetch that keeps stopping the process -------------------------------------------------


async def test_a_fetch_interrupted_again_and_again_is_failed_not_reclaimed_forever(
    queue: RedisFetchQueue, redis: Redis, store: Store
) -> None:
    """Each start of an attempt that ends with the process (kill -9, OOM, a parser crash) is
    counted; after three, the next worker fails the job for an operator instead of fetching
    it and dying too. Two interrupted starts are ordinary restarts: fetched as usual."""
    async with FetchProviderFake(TOKEN, SECRET) as provider, aiohttp.ClientSession() as http:
        settings = ExampleFetchSettings(url=provider.url, token=Secret(TOKEN, "test"),
                                        secret=Secret(SECRET, "test"), timeout_seconds=5)
        adapter = ExampleFetchChannel("shop", settings, AdapterContext(
            http=http, quarantine=StoreQuarantine(store), spawn=_no_spawn, fetches=queue))
        await adapter.start(IngestGate(StoreKit(store)))
        fetcher = Fetcher(queue, {"shop": adapter}, FetchPolicy(), consumer="t",
                          claim_idle_ms=1000, concurrency=1)
        provider.publish(buyer_message(1))
        provider.publish(buyer_message(2))
        assert await queue.notify("shop", "m-1", dedupe_key="n-1")
        assert await queue.notify("shop", "m-2", dedupe_key="n-2")
        doomed, restarted = reversed(await queue.entries("shop", "queued"))
        for _ in range(3):  # three processes died during the first job's fetch
            assert (await queue.begin(doomed))[0] > 0
        for _ in range(2):  # two during the second's
            assert (await queue.begin(restarted))[0] > 0
        for _stream_id, fields in await redis.xrange(keys.fetch_stream("shop")):
            await fetcher.handle((keys.fetch_stream("shop"), "0-1", fields))
        failed = await queue.get(doomed.id)
        assert failed is not None and failed.state == "failed"
        assert failed.last_error is not None and "interrupted 3 times" in failed.last_error
        assert await queue.get(restarted.id) is None, "the restarted fetch was not done"
        assert provider.requests == 1, "the doomed fetch was tried again"
        await queue.retry(doomed.id)  # an operator's retry starts the count afresh
        again = await queue.get(doomed.id)
        assert again is not None and (await queue.begin(again))[1] == 1
        await adapter.stop()


async def _no_spawn(coro: Any, name: str) -> Any:
    raise AssertionError("the example adapter has no background tasks")
