"""Liveness, readiness and metrics: what an orchestrator and Prometheus poll.

Ready means Redis answers *and* no background loop is backing off or crashed: a hub whose
router or sender is stuck must not be reported ready just because its HTTP side still answers.
The answer names the process's role, pid and loops (``serve --role``): a ``--role http``
process is ready with no router, and a probe can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub import keys as K
from hub.api import json_response
from hub.fetcher import export_backlog, fetching_instances
from hub.roles import role_of
from hub.service_metrics import export_service_metrics

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    problems: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[K.STORE].ping(), 2.0)
    except Exception as exc:
        problems["redis"] = type(exc).__name__
    health = request.app[K.HEALTH]
    for name, state in health.unhealthy().items():
        problems[name] = f"{state.status}: {state.last_error or ''}".rstrip(": ")
    # What this process runs (serve --role): a --role http process is ready without a router,
    # and says so, so that nobody mistakes it for a hub that routes.
    role = role_of(request.app)
    process: dict[str, object] = {
        "role": role, "pid": os.getpid(),
        "loops": sorted(s.name for s in health.snapshot() if s.status != "stopped")}
    if problems:
        body: dict[str, object] = {"status": "unavailable", "problems": problems, **process}
        if "redis" in problems:
            body["redis"] = problems["redis"]
        return json_response(body, 503)
    return json_response({"status": "ready", **process})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    app_metrics = request.app[K.METRICS]
    store = request.app[K.STORE]
    try:
        for name, streams in (("inbound", store.inbound_streams),
                              ("outbox", store.outbox_streams)):
            total = 0
            for stream in streams:
                total += int(await asyncio.wait_for(store.redis.xlen(stream), 2.0))
            app_metrics.stream_backlog.labels(name).set(total)
        await asyncio.wait_for(export_backlog(
            request.app[K.FETCHES], fetching_instances(request.app[K.CHANNELS].adapters),
            app_metrics), 2.0)
    except Exception:  # metrics must render even when Redis is down
        pass
    # The same: on a Redis error the last values stay and the scrape still answers.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(export_service_metrics(request.app), 2.0)
    body = generate_latest(app_metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
