"""The supervisors' view in one call: every queue step with its waiting count and oldest
wait, every agent with presence (online / away / offline, heartbeats applied), load and
capacity. SLA breaches arrive as they happen on the event stream (``sla_breach``)."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from hub import keys as K
from hub.api import json_response
from hub.auth import require_role
from hub.openapi import operation
from hub.query import Query
from hub.views import Presence, agent_state
from routing.config import DEFAULT_KINDS
from storage.supervision import oldest_enqueued

routes = web.RouteTableDef()
NO_PARAMETERS = Query(())


class QueueWatch(msgspec.Struct, frozen=True):
    """One queue step. ``oldest_wait_seconds``: how long its longest-waiting conversation
    has waited (null: nobody waits)."""

    queue: str
    step: int
    pool: str
    waiting: int
    waiting_by_kind: dict[str, int]
    oldest_wait_seconds: float | None
    online_agents: int
    available_agents: dict[str, int]


class AgentWatch(msgspec.Struct, frozen=True):
    """``status`` is effective presence (working hours and heartbeats applied);
    ``last_heartbeat_at`` the last sign of life from the agent's page (null: never)."""

    id: str
    name: str | None
    status: Presence
    desired_status: Presence
    load: dict[str, int]
    capacity: dict[str, int]
    last_heartbeat_at: float | None


class Supervision(msgspec.Struct, frozen=True):
    at: float
    queues: list[QueueWatch]
    agents: list[AgentWatch]


@routes.get("/api/v1/supervision")
@operation("Queues (waiting, oldest wait) and agents (presence, load, capacity) at a glance",
           {200: Supervision}, role="supervisor", tag="agents", query=NO_PARAMETERS)
async def supervision(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    NO_PARAMETERS.parse(request)
    engine = request.app[K.ROUTING]
    now = time.time()
    kinds = sorted(set(DEFAULT_KINDS.values()) | set(engine.cfg.channel_kinds.values()))
    queues = []
    for stats in await engine.queue_stats():
        oldest = await oldest_enqueued(engine.state.redis, stats["pool"], kinds)
        queues.append(QueueWatch(
            queue=stats["queue"], step=stats["step"], pool=stats["pool"],
            waiting=sum(stats["waiting"].values()), waiting_by_kind=stats["waiting"],
            oldest_wait_seconds=None if oldest is None else max(0.0, round(now - oldest, 3)),
            online_agents=stats["online_agents"], available_agents=stats["available_agents"]))
    beats = await engine.state.heartbeats()
    agents = []
    for agent in await engine.agents():
        state = agent_state(await engine.agent_state(agent.id))
        agents.append(AgentWatch(agent.id, agent.name or None, state.status,
                                 state.desired_status, state.load, state.capacity,
                                 beats.get(agent.id)))
    return json_response(Supervision(now, queues, agents))
