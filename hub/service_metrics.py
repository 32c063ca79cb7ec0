"""Gauges read from the routing state when Prometheus scrapes ``/metrics``: queue depth and
oldest wait per queue, agents online per language. Counters and histograms that follow the
event log (SLA breaches, first response) are fed by the KPI aggregator (hub/kpis.py)."""

from __future__ import annotations

import time
from collections import Counter

from aiohttp import web

from hub import keys as K
from hub.metrics import Metrics
from hub.views import agent_state
from routing.config import DEFAULT_KINDS
from storage.kpis import Batch
from storage.supervision import oldest_enqueued


async def export_service_metrics(app: web.Application) -> None:
    engine = app.get(K.ROUTING)
    if engine is None:
        return
    metrics = app[K.METRICS]
    now = time.time()
    kinds = sorted(set(DEFAULT_KINDS.values()) | set(engine.cfg.channel_kinds.values()))
    waiting: Counter[str] = Counter()
    oldest: dict[str, float] = {}
    for stats in await engine.queue_stats():
        queue = stats["queue"]
        waiting[queue] += sum(stats["waiting"].values())
        first = await oldest_enqueued(engine.state.redis, stats["pool"], kinds)
        if first is not None:
            oldest[queue] = min(oldest.get(queue, first), first)
    for queue in {q.name for q in engine.cfg.effective_queues()} | set(waiting):
        metrics.queue_waiting.labels(queue).set(waiting[queue])
        metrics.queue_oldest_wait.labels(queue).set(
            max(0.0, now - oldest[queue]) if queue in oldest else 0.0)
    online: Counter[str] = Counter()
    for agent in await engine.agents():
        if agent_state(await engine.agent_state(agent.id)).status == "online":
            online.update(agent.languages.keys())  # keys: the values are levels
    for language in engine.cfg.languages:
        metrics.agents_online.labels(language).set(online[language])


def observe_batch(app_metrics: Metrics, batch: Batch) -> None:
    """An applied batch's first responses and SLA breaches, for this process's counters
    (only once applied: a batch another process counted is not observed twice)."""
    for sample in batch.samples:
        if sample.measure == "first_response" and sample.seconds is not None:
            app_metrics.first_response.labels(sample.dims.get("channel") or "unknown").observe(
                sample.seconds)
        elif sample.measure == "sla_breaches":
            app_metrics.sla_breaches.labels(sample.dims.get("queue") or "none").inc()
