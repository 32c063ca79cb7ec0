"""The aiohttp application: start-up and shutdown read top to bottom in ``cleanup_ctx``.

Order matters: Redis first (everything needs it), then the shared HTTP session, then channels
(they may start pollers), then the workers. Shutdown runs in reverse: workers drain their
in-flight entries within the deadline, channels stop, the session closes, and the embedded
Redis (if we started it) stops last.

``build_app(role=...)`` (``serve --role``, hub/roles.py) leaves out the workers' contexts and
loops for ``http`` and the public routes for ``workers``; every other context runs in both,
since the API and the workers read the same stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from channels.base import AdapterContext
from channels.registry import load_adapter_class
from channels.supervisor import Supervisor, TaskHealth
from hub import keys as K
from hub.accounts_api import accounts_ctx
from hub.accounts_api import routes as account_routes
from hub.admin_api import routes as admin_routes
from hub.api import routes
from hub.attachments_api import routes as attachment_routes
from hub.auth import TokenIndex, make_auth_middleware
from hub.canned_api import routes as canned_routes
from hub.channel_auth import routes as channel_auth_routes
from hub.channel_health import HealthEvaluator, HealthFlush, health_service
from hub.channel_manager import ChannelManager
from hub.channels_api import routes as channel_routes
from hub.config import ConfigError, LoadedConfig, load_config
from hub.contacts_api import people_ctx
from hub.contacts_api import routes as contacts_routes
from hub.crashpoints import crash_before_checkpoint, crash_point
from hub.csat import SurveyAnswers, csat_ctx
from hub.events_api import close_streams, events_ctx
from hub.events_api import routes as event_routes
from hub.export_api import routes as export_routes
from hub.fetcher import Fetcher, policy_of
from hub.fetches_api import routes as fetch_routes
from hub.health import routes as health_routes
from hub.ingest import Ingestor
from hub.kpis import kpis_ctx
from hub.metrics import Metrics
from hub.outbound_api import routes as outbound_routes
from hub.redis_connection import durability_warnings, open_redis, replica_acks, replica_shortfalls
from hub.reports_api import routes as report_routes
from hub.roles import Role, role_of, runs_http, runs_workers
from hub.router import Router
from hub.routing_api import routes as routing_routes
from hub.search_api import routes as search_routes
from hub.sender import RetryRelease, Sender
from hub.supervision_api import routes as supervision_routes
from hub.survey_api import routes as survey_api_routes
from hub.survey_page import routes as survey_page_routes
from hub.survey_page import survey_ctx
from hub.tasks import TaskOwner
from hub.web.routes import routes as web_routes
from hub.worker import StreamWorker
from hub.workflow_api import routes as workflow_routes
from hub.workflow_api import workflow_ctx
from routing.engine import reload_engine
from routing.runtime import build_engine
from storage import keys as storage_keys
from storage.attachments import AttachmentService, FileBlobStore
from storage.cursors import RedisCursorStore
from storage.deliveries import RedisDeliveries
from storage.edits import RedisEdits
from storage.fetches import RedisFetchQueue
from storage.health import HealthCounters
from storage.leases import RedisLeaseManager
from storage.lifecycle import purge_expired
from storage.limiter import RedisLimiter
from storage.people import People
from storage.schema import ensure_schema
from storage.store import Store
from storage.streams import Entry, StreamGroup, consumer_name
from storage.threads import RedisThreads
from storage.tokens import KEY_ENV, KEY_FILE, RedisTokenStore, TokenCipher, load_token_cipher

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[K.CONFIG].config
    async with open_redis(config) as (client, _embedded):
        app[K.REDIS] = client
        app[K.STORE] = Store(client, partitions=config.storage.partitions,
                             dedupe_ttl=config.storage.dedupe_ttl_seconds,
                             quarantine_max_entries=config.storage.quarantine_max_entries,
                             quarantine_max_bytes=config.storage.quarantine_max_bytes,
                             replica_acks=replica_acks(config))
        app[K.STORE].attachments = AttachmentService(
            client, FileBlobStore(config.attachments_dir), app[K.STORE].partition_keys(),
            grace_seconds=config.attachments.orphan_grace_seconds)
        await client.ping()
        # Refuses data written by a newer release (SchemaTooNew) before anything touches it.
        await ensure_schema(client, partitions=config.storage.partitions)
        if config.storage.redis_url:
            for warning in await durability_warnings(client):
                log.warning("%s", warning)
            for problem in await replica_shortfalls(client, config.storage.replica_acks):
                log.error("%s", problem)
        yield


async def channel_health_ctx(app: web.Application) -> AsyncIterator[None]:
    """Channel health (hub/channel_health.py): the counters adapters and the sender report
    to, flushed to Redis and evaluated by two supervised loops. Set up before the channels
    and torn down after them and the workers, so the last flush has everything."""
    config = app[K.CONFIG].config
    counters = app[K.HEALTH_COUNTERS] = HealthCounters()
    # In a thread: it looks up adapter classes (entry points read package metadata).
    # The OAuth token store is made here, before the channels, so health shows token state.
    app[K.OAUTH] = await oauth_token_store(app[K.CONFIG], app[K.REDIS])
    service = app[K.CHANNEL_HEALTH] = await asyncio.to_thread(
        health_service, app[K.CONFIG], app[K.REDIS], metrics=app[K.METRICS],
        tokens=app[K.OAUTH])
    flush = HealthFlush(counters, service.store, app[K.METRICS])
    evaluator = HealthEvaluator(service)
    supervisor = Supervisor("channel-health", app[K.HEALTH])
    supervisor.loop("health-flush", flush.iteration, idle_seconds=config.hub.health_flush_seconds,
                    on_stop=flush.flush)
    supervisor.loop("health-alerts", evaluator.iteration,
                    idle_seconds=config.hub.health_evaluate_seconds, prepare=evaluator.prepare)
    try:
        yield
    finally:
        supervisor.stop.set()
        await supervisor.wait(config.hub.shutdown_timeout_seconds)
        await supervisor.cancel_all()


async def channels_ctx(app: web.Application) -> AsyncIterator[None]:
    loaded = app[K.CONFIG]
    ingestor = Ingestor(app[K.STORE], app[K.METRICS])
    app[K.INGESTOR] = ingestor
    owner = TaskOwner("channels")
    # Pollers' loops (one per polled account) report in /readyz like the workers'.
    loops = Supervisor("channels", app[K.HEALTH])
    redis = app[K.REDIS]
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30, connect=10),
        headers={"User-Agent": "inboxhub/0.1"},
    ) as http:
        app[K.LIMITER] = RedisLimiter(app[K.REDIS])
        app[K.FETCHES] = RedisFetchQueue(
            redis, dedupe_ttl_seconds=loaded.config.fetches.dedupe_ttl_seconds,
            failed_retention_seconds=loaded.config.fetches.failed_retention_days * 86400)
        context = AdapterContext(
            http=http, quarantine=ingestor.quarantine, spawn=owner.spawn,
            max_body_bytes=loaded.config.hub.max_body_bytes,
            loops=loops, cursors=crash_before_checkpoint(RedisCursorStore(redis)),
            leases=RedisLeaseManager(redis, owner=consumer_name()),
            public_url=loaded.config.hub.public_url,
            attachments=app[K.STORE].attachments,
            max_attachment_bytes=loaded.config.attachments.max_bytes,
            limiter=app[K.LIMITER], deliveries=RedisDeliveries(app[K.STORE]),
            tokens=app[K.OAUTH],
            fetches=app[K.FETCHES],
            threads=RedisThreads(app[K.STORE]),
            edits=RedisEdits(app[K.STORE]),
            health=app[K.HEALTH_COUNTERS],
        )
        manager = ChannelManager(loaded, context)
        app[K.CHANNELS] = manager
        app[K.CHANNEL_HEALTH].use_adapters(manager.adapters, app[K.HEALTH_COUNTERS])
        try:
            # Pollers are background loops: a --role http process leaves them to the workers.
            # Inside: a failed start still stops the rest.
            await manager.start_all(ingestor, pollers=runs_workers(role_of(app)))
            yield
        finally:
            # Adapters first: pollers store the batch in hand and release their leases.
            await manager.stop_all()
            await ingestor.close(loaded.config.hub.shutdown_timeout_seconds)
            loops.stop.set()
            await loops.wait(loaded.config.hub.shutdown_timeout_seconds)
            await loops.cancel_all()
            await owner.cancel_all()
            # A refresh whose caller was cancelled above still commits the rotated tokens.
            await app[K.OAUTH].drain(loaded.config.hub.shutdown_timeout_seconds)


async def oauth_token_store(loaded: LoadedConfig, redis: Any, *,
                            create_key: bool = True) -> RedisTokenStore:
    """The OAuth token store, its key from ``INBOXHUB_TOKEN_KEY`` or the data directory's key
    file (``storage.tokens``); a bad key stops start-up with what to fix. ``create_key``
    false: a missing key file is an error, not made (the CLI against an external Redis).
    A hub with no OAuth channel seals nothing, so it makes no key file either: it opens with
    the key it has, if any, else with one that lives in memory only."""
    config = loaded.config
    # In a thread: adapter classes are looked up through entry points (package metadata).
    oauth = await asyncio.to_thread(
        lambda: [c.name for c in config.channels
                 if c.enabled and load_adapter_class(c.type).oauth_for(c.settings)])
    env_key = os.environ.get(KEY_ENV)
    if not oauth and not env_key and not (config.data_dir / KEY_FILE).exists():
        return RedisTokenStore(redis, TokenCipher([secrets.token_bytes(32)],
                                                  source="none (no OAuth channel)"))
    cipher = await asyncio.to_thread(load_token_cipher, config.data_dir, env_key,
                                     create=create_key)
    if oauth and config.storage.redis_url and cipher.source != KEY_ENV:
        log.warning("OAuth tokens are encrypted with the key file %s; hub processes on other "
                    "hosts sharing this Redis need the same key: set %s on every one",
                    cipher.source, KEY_ENV)
    return RedisTokenStore(redis, cipher)


async def routing_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[K.CONFIG].config
    engine = await asyncio.to_thread(build_engine, app[K.STORE], config.routing)
    engine.checkpoint = crash_point
    await engine.sync()
    app[K.ROUTING] = engine
    supervisor = Supervisor("routing", app[K.HEALTH])
    listener = ReloadListener(app)
    supervisor.loop("reload-listener", listener.iteration, idle_seconds=0,
                    on_stop=listener.close)
    try:
        yield
    finally:
        supervisor.stop.set()
        await supervisor.wait(2.0)
        await supervisor.cancel_all()
        await listener.close()


async def reload_routing(app: web.Application) -> int:
    """Re-read the config file and apply its [routing] section (SIGHUP, ``routing reload``).

    The file is validated first; a broken file leaves the running rules untouched.
    """
    path = app[K.CONFIG].path
    try:
        loaded = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        log.error("routing reload rejected: %s", exc)
        return -1
    fresh = await asyncio.to_thread(build_engine, app[K.STORE], loaded.config.routing)
    engine = app[K.ROUTING]
    engine.identifier, engine.skills = fresh.identifier, fresh.skills
    engine.team_calendar = fresh.team_calendar
    return await reload_engine(engine, loaded.config.routing)


class RetentionSweep:
    """Deletes resolved conversations past ``storage.resolved_retention_days``: a pass every
    15 minutes (more often for a retention shorter than an hour), and again a second later
    while passes still find conversations to delete."""

    EVERY_SECONDS = 900.0

    def __init__(self, store: Store, retention_seconds: float) -> None:
        self.store = store
        self.retention_seconds = retention_seconds
        self.every = min(self.EVERY_SECONDS, max(retention_seconds / 4, 1.0))
        self._next = 0.0

    async def iteration(self) -> bool:
        if self.retention_seconds <= 0 or time.monotonic() < self._next:
            return False
        deleted = await purge_expired(self.store, time.time(),
                                      retention_seconds=self.retention_seconds)
        self._next = time.monotonic() + (1.0 if deleted else self.every)
        return False


class AttachmentSweep:
    """Deletes attachment files nothing references (a crash between storing the bytes and
    the message, an upload never sent): a pass every ``grace`` / 4, at most hourly."""

    def __init__(self, attachments: AttachmentService | None, grace_seconds: float) -> None:
        self.attachments = attachments
        self.every = min(3600.0, max(grace_seconds / 4, 15.0))
        self._next = time.monotonic() + self.every

    async def iteration(self) -> bool:
        if self.attachments is None or time.monotonic() < self._next:
            return False
        deleted = await self.attachments.sweep()
        self._next = time.monotonic() + (1.0 if deleted else self.every)
        return False


class ReloadListener:
    """``inboxhub routing reload`` publishes on a channel; every hub process reloads.

    A supervised loop's body: a Redis error drops the subscription, and the next iteration
    subscribes afresh (a message published while Redis was unreachable is lost with it, which
    is why ``routing reload`` reports how many processes received it).
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.pubsub: Any = None

    async def iteration(self) -> bool:
        if self.pubsub is None:
            pubsub = self.app[K.STORE].redis.pubsub()
            try:
                await pubsub.subscribe(storage_keys.ROUTING_RELOAD_CHANNEL)
            except BaseException:
                await pubsub.aclose()
                raise
            self.pubsub = pubsub
        try:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        except BaseException:
            await self.close()
            raise
        if message is not None:
            await reload_routing(self.app)
        return True

    async def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[K.CONFIG].config
    store = app[K.STORE]
    metrics = app[K.METRICS]
    supervisor = Supervisor("workers", app[K.HEALTH])
    app[K.STOP] = supervisor.stop
    consumer = consumer_name()
    idle_ms = int(config.storage.claim_idle_seconds * 1000)
    ingestor = app[K.INGESTOR]

    async def quarantine_entry(entry: Entry, exc: BaseException) -> None:
        stream, entry_id, fields = entry
        raw = repr({k.decode(errors="replace"): v.decode(errors="replace")
                    for k, v in fields.items()}).encode()
        await ingestor.quarantine(f"stream:{stream}", raw,
                                  f"entry {entry_id}: {type(exc).__name__}: {exc}")

    engine = app[K.ROUTING]
    answers = SurveyAnswers(store, metrics=metrics) if config.csat.enabled else None
    router = Router(store, engine, metrics, people=People(store), answers=answers)
    sender = Sender(store, app[K.CHANNELS], config.outbox, metrics, owner=consumer,
                    limiter=app[K.LIMITER], health=app[K.HEALTH_COUNTERS])

    async def mirror(entry: Entry) -> None:
        conversation_id = entry[2].get(b"conv", b"").decode()
        if conversation_id:
            await engine.mirror_event(conversation_id)
            if store.events is not None:  # the live event log's copy (storage/events.py)
                await store.events.from_routing(entry[1], entry[2])

    def group(streams: list[str], name: str) -> StreamGroup:
        return StreamGroup(store.redis, streams, name, consumer, claim_idle_ms=idle_ms)

    workers = [
        StreamWorker("router", group(store.inbound_streams, storage_keys.ROUTER_GROUP),
                     router.handle, quarantine_entry),
        StreamWorker("sender", group(store.outbox_streams, storage_keys.SENDER_GROUP),
                     sender.handle, quarantine_entry, concurrency=config.outbox.concurrency),
        StreamWorker("mirror", group([storage_keys.ROUTING_BASE + "events"],
                                     storage_keys.MIRROR_GROUP),
                     mirror, quarantine_entry),
    ]
    for worker in workers:
        supervisor.loop(worker.name, worker.iteration, idle_seconds=0,
                        prepare=worker.prepare, on_stop=worker.drain)
    supervisor.loop("retry-release", RetryRelease(store).iteration, idle_seconds=0.1)
    retention = RetentionSweep(store, config.storage.resolved_retention_days * 86400)
    supervisor.loop("retention", retention.iteration, idle_seconds=1.0)
    files = AttachmentSweep(store.attachments, config.attachments.orphan_grace_seconds)
    supervisor.loop("attachment-sweep", files.iteration, idle_seconds=1.0)
    # Fetch after notify: the webhook stored the notification and answered; fetched here.
    fetcher = Fetcher(app[K.FETCHES], app[K.CHANNELS].adapters, policy_of(config.fetches),
                      consumer=consumer, claim_idle_ms=idle_ms,
                      concurrency=config.fetches.concurrency, metrics=metrics)
    fetcher.start(supervisor)
    grace = config.hub.agent_heartbeat_grace_seconds
    supervisor.loop("routing-timers", lambda: engine.tick_timers(heartbeat_grace=grace),
                    idle_seconds=0.1)
    try:
        yield
    finally:
        supervisor.stop.set()
        deadline = config.hub.shutdown_timeout_seconds
        if not await supervisor.wait(deadline):
            log.warning("workers did not drain within %.1fs; cancelling "
                        "(unfinished entries stay pending and are reclaimed)", deadline)
        await supervisor.cancel_all()
        for worker in workers:
            await worker.cancel()
        await fetcher.cancel()


def build_app(
    loaded: LoadedConfig, *, role: Role = "all", extra_ctx: list[CleanupCtx] | None = None
) -> web.Application:
    """The app of one process. ``role`` (hub/roles.py) decides which side it runs: ``http``
    adds no loop that consumes work, ``workers`` serves no route but health and metrics."""
    config = loaded.config
    tokens = TokenIndex(config.api.tokens)
    app = web.Application(
        client_max_size=config.hub.max_body_bytes,
        middlewares=[make_auth_middleware(tokens)],
    )
    app[K.CONFIG] = loaded
    app[K.ROLE] = role
    app[K.METRICS] = Metrics()
    app[K.METRICS].process_info(role, os.getpid())
    app[K.HEALTH] = TaskHealth(app[K.METRICS])
    app[K.TOKENS] = tokens
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(events_ctx)
    app.on_shutdown.append(close_streams)
    app.cleanup_ctx.append(accounts_ctx)
    app.cleanup_ctx.append(channel_health_ctx)
    app.cleanup_ctx.append(channels_ctx)
    app.cleanup_ctx.append(routing_ctx)
    if runs_workers(role):
        app.cleanup_ctx.append(workers_ctx)
    app.cleanup_ctx.append(workflow_ctx)
    app.cleanup_ctx.append(people_ctx)
    app.cleanup_ctx.append(kpis_ctx)
    if runs_workers(role):
        app.cleanup_ctx.append(csat_ctx)
    app.cleanup_ctx.append(survey_ctx)
    for ctx in extra_ctx or []:
        app.cleanup_ctx.append(ctx)
    app.add_routes(health_routes)
    if runs_http(role):
        add_public_routes(app)
    return app


def add_public_routes(app: web.Application) -> None:
    """Everything but health and metrics: the API, the web inbox, the webhooks."""
    app.add_routes(routes)
    app.add_routes(routing_routes)
    app.add_routes(admin_routes)
    app.add_routes(attachment_routes)
    app.add_routes(channel_auth_routes)
    app.add_routes(fetch_routes)
    app.add_routes(channel_routes)
    app.add_routes(account_routes)
    app.add_routes(workflow_routes)
    app.add_routes(outbound_routes)
    app.add_routes(export_routes)
    app.add_routes(canned_routes)
    app.add_routes(event_routes)
    app.add_routes(supervision_routes)
    app.add_routes(search_routes)
    app.add_routes(contacts_routes)
    app.add_routes(report_routes)
    app.add_routes(survey_api_routes)
    app.add_routes(survey_page_routes)
    app.add_routes(web_routes)

    async def webhook(request: web.Request) -> web.StreamResponse:
        return await request.app[K.CHANNELS].webhook(request)

    app.router.add_route("*", "/webhooks/{type}/{instance}", webhook)
    # A second URL of the same instance (Twilio's StatusCallback): WebhookAdapter.subpaths.
    app.router.add_route("*", "/webhooks/{type}/{instance}/{path}", webhook)


def describe(app: web.Application) -> dict[str, Any]:
    """Start-up summary for the log (no secrets)."""
    config = app[K.CONFIG].config
    return {
        "channels": [c.name for c in config.channels if c.enabled],
        "redis": config.storage.redis_url or f"embedded ({config.data_dir}/redis.sock)",
        "role": role_of(app),
    }
