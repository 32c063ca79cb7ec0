"""The aiohttp application: start-up and shutdown read top to bottom in ``cleanup_ctx``.

Order matters: Redis first (everything needs it), then the shared HTTP session, then channels
(they may start pollers), then the workers. Shutdown runs in reverse: workers drain their
in-flight entries within the deadline, channels stop, the session closes, and the embedded
Redis (if we started it) stops last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from channels.base import AdapterContext
from hub import keys as K
from hub.admin_api import routes as admin_routes
from hub.api import routes
from hub.auth import TokenIndex, make_auth_middleware
from hub.channel_manager import ChannelManager
from hub.config import ConfigError, LoadedConfig, load_config
from hub.ingest import Ingestor
from hub.metrics import Metrics
from hub.redis_connection import open_redis
from hub.router import Router
from hub.routing_api import routes as routing_routes
from hub.sender import Sender, release_retries_forever
from hub.tasks import TaskOwner
from hub.worker import StreamWorker
from routing.engine import reload_engine
from routing.runtime import build_engine
from storage import keys as storage_keys
from storage.store import Store
from storage.streams import Entry, StreamGroup, consumer_name

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[K.CONFIG].config
    async with open_redis(config) as (client, _embedded):
        app[K.REDIS] = client
        app[K.STORE] = Store(client, partitions=config.storage.partitions,
                             dedupe_ttl=config.storage.dedupe_ttl_seconds)
        await client.ping()
        yield


async def channels_ctx(app: web.Application) -> AsyncIterator[None]:
    loaded = app[K.CONFIG]
    ingestor = Ingestor(app[K.STORE], app[K.METRICS])
    app[K.INGESTOR] = ingestor
    owner = TaskOwner("channels")
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30, connect=10),
        headers={"User-Agent": "inboxhub/0.1"},
    ) as http:
        context = AdapterContext(
            http=http, quarantine=ingestor.quarantine, spawn=owner.spawn,
            max_body_bytes=loaded.config.hub.max_body_bytes,
        )
        manager = ChannelManager(loaded, context)
        app[K.CHANNELS] = manager
        await manager.start_all(ingestor)
        try:
            yield
        finally:
            await manager.stop_all()
            await owner.cancel_all()


async def routing_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[K.CONFIG].config
    engine = await asyncio.to_thread(build_engine, app[K.STORE], config.routing)
    await engine.sync()
    app[K.ROUTING] = engine
    stop = asyncio.Event()
    owner = TaskOwner("routing")
    owner.spawn(listen_for_reload(app, stop), "reload-listener")
    try:
        yield
    finally:
        stop.set()
        await owner.cancel_all()


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


async def listen_for_reload(app: web.Application, stop: asyncio.Event) -> None:
    """``inboxhub routing reload`` publishes on this channel; every hub process reloads."""
    pubsub = app[K.STORE].redis.pubsub()
    await pubsub.subscribe(storage_keys.ROUTING_RELOAD_CHANNEL)
    try:
        while not stop.is_set():
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (ConnectionError, OSError):
                await asyncio.sleep(1.0)
                continue
            if message is not None:
                await reload_routing(app)
    finally:
        await pubsub.aclose()


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[K.CONFIG].config
    store = app[K.STORE]
    metrics = app[K.METRICS]
    stop = asyncio.Event()
    app[K.STOP] = stop
    owner = TaskOwner("workers")
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
    router = Router(store, engine, metrics)
    sender = Sender(store, app[K.CHANNELS], config.outbox, metrics)

    async def mirror(entry: Entry) -> None:
        conversation_id = entry[2].get(b"conv", b"").decode()
        if conversation_id:
            await engine.mirror_event(conversation_id)

    workers = [
        StreamWorker("router", StreamGroup(store.redis, store.inbound_streams,
                                           storage_keys.ROUTER_GROUP, consumer,
                                           claim_idle_ms=idle_ms),
                     router.handle, quarantine_entry, stop),
        StreamWorker("sender", StreamGroup(store.redis, store.outbox_streams,
                                           storage_keys.SENDER_GROUP, consumer,
                                           claim_idle_ms=idle_ms),
                     sender.handle, quarantine_entry, stop, batch=20),
        StreamWorker("mirror", StreamGroup(store.redis, [storage_keys.ROUTING_BASE + "events"],
                                           storage_keys.MIRROR_GROUP, consumer,
                                           claim_idle_ms=idle_ms),
                     mirror, quarantine_entry, stop),
    ]
    for worker in workers:
        owner.spawn(worker.run(), worker.name)
    owner.spawn(release_retries_forever(store, stop), "retry-release")
    owner.spawn(engine.run_timers(stop, heartbeat_grace=config.hub.agent_heartbeat_grace_seconds),
                "routing-timers")
    try:
        yield
    finally:
        stop.set()
        deadline = config.hub.shutdown_timeout_seconds
        if not await owner.wait(deadline):
            log.warning("workers did not drain within %.1fs; cancelling "
                        "(unfinished entries stay pending and are reclaimed)", deadline)
        await owner.cancel_all()


def build_app(
    loaded: LoadedConfig, *, extra_ctx: list[CleanupCtx] | None = None
) -> web.Application:
    config = loaded.config
    tokens = TokenIndex(config.api.tokens)
    app = web.Application(
        client_max_size=config.hub.max_body_bytes,
        middlewares=[make_auth_middleware(tokens)],
    )
    app[K.CONFIG] = loaded
    app[K.METRICS] = Metrics()
    app[K.TOKENS] = tokens
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(channels_ctx)
    app.cleanup_ctx.append(routing_ctx)
    app.cleanup_ctx.append(workers_ctx)
    for ctx in extra_ctx or []:
        app.cleanup_ctx.append(ctx)
    app.add_routes(routes)
    app.add_routes(routing_routes)
    app.add_routes(admin_routes)

    async def webhook(request: web.Request) -> web.StreamResponse:
        return await request.app[K.CHANNELS].webhook(request)

    app.router.add_route("*", "/webhooks/{type}/{instance}", webhook)
    return app


def describe(app: web.Application) -> dict[str, Any]:
    """Start-up summary for the log (no secrets)."""
    config = app[K.CONFIG].config
    return {
        "channels": [c.name for c in config.channels if c.enabled],
        "redis": config.storage.redis_url or f"embedded ({config.data_dir}/redis.sock)",
    }
