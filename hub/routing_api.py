"""API for agents, supervisors and operators to work with routing: presence, agents, queues,
transfer, resolve, language correction and the explain record of a decision."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from hub import keys as K
from hub.api import conversation_or_404, decode_body, gate, json_response
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from hub.views import (
    AgentEntry,
    AgentList,
    AgentSaved,
    HeartbeatAck,
    PoolList,
    Resolved,
    RoutingChanged,
    RoutingExplain,
    StatusChanged,
    agent_state,
    pool_stats,
    routing_state,
)
from routing.codes import ISO_639_1
from routing.config import AgentConfig, validate_routing
from routing.engine import RoutingError, TransferRefused
from storage.records import MessageView
from storage.store import Store

routes = web.RouteTableDef()

CID = {"id": "conversation id"}
AID = {"id": "agent id"}

# TransferRefused.code -> HTTP status: the caller's fault in the body (422), the
# conversation's or the target's current state (409), or not the caller's to move (403).
_TRANSFER_STATUS = {"unknown_agent": 422, "language_floor": 409, "not_routed": 409,
                    "resolved": 409, "not_assigned_to_you": 403, "agent_offline": 409,
                    "agent_full": 409, "not_waiting": 409, "not_eligible": 403}


class StatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Literal["online", "away", "offline"]


class TransferRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exactly one of ``agent`` (an agent id) or ``queue`` (a queue name)."""

    agent: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    queue: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class LanguageRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A code outside routing.languages is kept (the buyer's language is a fact worth
    recording) and routes to the default queue; a code that is no language is refused."""

    language: Annotated[str, msgspec.Meta(pattern="^[a-z]{2}$")]

    def __post_init__(self) -> None:
        if self.language not in ISO_639_1:
            raise ValueError(f"unknown language {self.language!r}, expected an ISO 639-1 code "
                             f"such as 'es' or 'pt'")


async def _known_agent(request: web.Request) -> str:
    agent_id = request.match_info["id"]
    if await request.app[K.ROUTING].agent(agent_id) is None:
        raise ApiError(404, f"no agent {agent_id!r}")
    return agent_id


@routes.get("/api/v1/agents")
@operation("Agents with their current state (load per kind, presence)", {200: AgentList},
           role="supervisor", tag="agents")
async def list_agents(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    engine = request.app[K.ROUTING]
    agents = await engine.agents()
    return json_response(AgentList([
        AgentEntry(a, agent_state(await engine.agent_state(a.id))) for a in agents]))


@routes.put("/api/v1/agents/{id}")
@operation("Create or update an agent", {200: AgentSaved, 403: None}, role="supervisor",
           tag="agents",
           description="The body is an agent as in [[routing.agents]] (id from the path). "
                       "Supervisors edit existing agents' profiles (languages, markets, "
                       "skills, capacity, hours); creating an agent takes an admin (403).",
           body=AgentConfig, path_params=AID)
async def put_agent(request: web.Request) -> web.Response:
    principal = require_role(request, "supervisor")
    body = await request.read()
    engine = request.app[K.ROUTING]
    if not principal.at_least("admin") and await engine.agent(request.match_info["id"]) is None:
        raise ApiError(403, "creating an agent requires role admin; supervisors edit "
                            "existing agents")
    try:
        data = msgspec.json.decode(body)
        if not isinstance(data, dict):
            raise ApiError(400, "invalid agent: expected an object", "invalid_body")
        data["id"] = request.match_info["id"]
        agent = msgspec.convert(data, AgentConfig)
        validate_routing(msgspec.structs.replace(engine.cfg, agents=[agent]), "agent")
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
            ValueError) as exc:
        raise ApiError(400, f"invalid agent: {exc}", "invalid_body") from None
    assigned = await engine.put_agent(agent)
    return json_response(AgentSaved(agent, assigned))


@routes.post("/api/v1/agents/{id}/status")
@operation("Set an agent's presence", {200: StatusChanged, 403: None, 404: None},
           tag="agents", description="Agents set their own; supervisors anyone's.",
           body=StatusRequest, path_params=AID)
async def set_status(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    agent_id = request.match_info["id"]
    if principal.name != agent_id and not principal.at_least("supervisor"):
        raise ApiError(403, "agents may only change their own status")
    req = decode_body(await request.read(), StatusRequest)
    try:
        changes = await request.app[K.ROUTING].set_status(agent_id, req.status)
    except RoutingError as exc:
        raise ApiError(404, str(exc)) from None
    return json_response(StatusChanged(req.status, changes))


@routes.post("/api/v1/agents/{id}/heartbeat")
@operation("Keep an agent online (when hub.agent_heartbeat_grace_seconds is set)",
           {200: HeartbeatAck, 403: None, 404: None}, tag="agents", path_params=AID)
async def heartbeat(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    if principal.name != request.match_info["id"] and not principal.at_least("supervisor"):
        raise ApiError(403, "agents may only send their own heartbeat")
    await request.app[K.ROUTING].heartbeat(await _known_agent(request))
    return json_response(HeartbeatAck(True))


@routes.get("/api/v1/queues")
@operation("Queue steps (pools) with waiting conversations and available agents",
           {200: PoolList}, role="supervisor", tag="agents")
async def queues(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    stats = await request.app[K.ROUTING].queue_stats()
    return json_response(PoolList([pool_stats(s) for s in stats]))


@routes.get("/api/v1/conversations/{id}/routing")
@operation("Routing state and the explain record of every decision",
           {200: RoutingExplain, 404: None}, path_params=CID)
async def explain(request: web.Request) -> web.Response:
    require_role(request, "agent")
    engine = request.app[K.ROUTING]
    cid = (await conversation_or_404(request)).id
    return json_response(RoutingExplain(routing_state(await engine.routing_state(cid)),
                                        await engine.explain(cid)))


@routes.post("/api/v1/conversations/{id}/transfer")
@operation(
    "Transfer to an agent or to a queue",
    {200: RoutingChanged, 403: None, 404: None, 409: None, 422: None},
    description="Agents transfer only conversations assigned to them. To an agent: the "
                "target must be online with free capacity (weight 0 agents take transfers) "
                "and meet the language floor (every language the first step of the "
                "conversation's queue requires, at its level, and the buyer's language); "
                "409 says which rule refused. A resolved conversation is never reopened "
                "(409 resolved).",
    body=TransferRequest, path_params=CID,
)
async def transfer(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), TransferRequest)
    if (req.agent is None) == (req.queue is None):
        raise ApiError(400, "give exactly one of 'agent' or 'queue'", "invalid_body")
    conversation = await conversation_or_404(request, access="act")
    only_from = await gate(request).transfer(conversation.id)
    engine = request.app[K.ROUTING]
    try:
        if req.agent is not None:
            await engine.transfer_to_agent(conversation.id, req.agent,
                                           conversation=conversation, only_from=only_from)
        else:
            state = routing_state(await engine.routing_state(conversation.id))
            if state.status is not None and state.status not in ("assigned", "waiting"):
                raise ApiError(409, "conversation is resolved; a transfer does not reopen it",
                               "resolved")
            await engine.transfer_to_queue(conversation, req.queue or "")
    except TransferRefused as exc:
        raise ApiError(_TRANSFER_STATUS.get(exc.code, 409), str(exc), exc.code) from None
    except RoutingError as exc:
        raise ApiError(422, str(exc), "unknown_queue") from None
    return json_response(RoutingChanged(routing_state(
        await engine.routing_state(conversation.id))))


@routes.post("/api/v1/conversations/{id}/take")
@operation(
    "Assign a waiting conversation to yourself",
    {200: RoutingChanged, 403: None, 404: None, 409: None, 422: None},
    description="From a queue step you are eligible for (supervisors and admins: any, if "
                "they are a routing agent). You must be online with free capacity and meet "
                "the language floor, as for a transfer. 409 not_waiting when someone else "
                "got it first (decided in one atomic step).",
    path_params=CID,
)
async def take(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    conversation = await conversation_or_404(request, access="act")
    facts = await gate(request).facts(conversation.id)
    if facts.status != "waiting":
        raise ApiError(409, "conversation is not waiting in a queue", "not_waiting")
    if not principal.at_least("supervisor") and facts.pool not in facts.agent_pools:
        raise ApiError(403, "you are not eligible for the queue step it waits in",
                       "not_eligible")
    engine = request.app[K.ROUTING]
    try:
        await engine.transfer_to_agent(conversation.id, principal.name,
                                       conversation=conversation, only_waiting=True)
    except TransferRefused as exc:
        raise ApiError(_TRANSFER_STATUS.get(exc.code, 409), str(exc), exc.code) from None
    return json_response(RoutingChanged(routing_state(
        await engine.routing_state(conversation.id))))


@routes.post("/api/v1/conversations/{id}/resolve")
@operation("Resolve: frees the agent's capacity", {200: Resolved, 403: None, 404: None},
           path_params=CID)
async def resolve(request: web.Request) -> web.Response:
    require_role(request, "agent")
    store = request.app[K.STORE]
    conversation = await conversation_or_404(request, access="act")
    await request.app[K.ROUTING].release(conversation.id, "closed")
    await store.update_conversation(conversation.id, {"status": "resolved", "assignee": "",
                                                      "pool": ""})
    return json_response(Resolved("resolved"))


async def _last_inbound(store: Store, conversation_id: str) -> MessageView | None:
    """The buyer's latest message, newest first a page at a time (replies may follow it)."""
    after: int | None = None
    while True:
        page = await store.page_messages(conversation_id, limit=50, after_seq=after,
                                         descending=True)
        for message in page.messages:
            if message.direction == "in":
                return message
        if page.next_seq is None:
            return None
        after = page.next_seq


@routes.post("/api/v1/conversations/{id}/language")
@operation("Correct the language and route again",
           {200: RoutingChanged, 403: None, 404: None, 409: None},
           body=LanguageRequest, path_params=CID)
async def correct_language(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), LanguageRequest)
    store = request.app[K.STORE]
    conversation = await conversation_or_404(request, access="act")
    last_inbound = await _last_inbound(store, conversation.id)
    message = await store.load_inbound(last_inbound.id) if last_inbound else None
    if message is None:
        raise ApiError(409, "conversation has no inbound message to route", "no_inbound")
    await request.app[K.ROUTING].correct_language(conversation, req.language, message)
    return json_response(RoutingChanged(routing_state(
        await request.app[K.ROUTING].routing_state(conversation.id))))
