"""API for agents, supervisors and operators to work with routing: presence, agents, queues,
transfer, resolve, language correction and the explain record of a decision."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from hub import keys as K
from hub.api import conversation_or_404, decode_body, error, json_response
from hub.auth import ROLE_RANK, require_role
from routing.codes import ISO_639_1
from routing.config import AgentConfig, validate_routing
from routing.engine import RoutingError

routes = web.RouteTableDef()


class StatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Literal["online", "away", "offline"]


class TransferRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agent: str | None = None
    queue: str | None = None


class LanguageRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A code outside routing.languages is kept (the buyer's language is a fact worth
    recording) and routes to the default queue; a code that is no language is refused."""

    language: Annotated[str, msgspec.Meta(pattern="^[a-z]{2}$")]

    def __post_init__(self) -> None:
        if self.language not in ISO_639_1:
            raise ValueError(f"unknown language {self.language!r}, expected an ISO 639-1 code "
                             f"such as 'es' or 'pt'")


@routes.get("/api/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    engine = request.app[K.ROUTING]
    agents = await engine.agents()
    return json_response({"agents": [
        {"profile": a, "state": await engine.agent_state(a.id)} for a in agents]})


@routes.put("/api/v1/agents/{id}")
async def put_agent(request: web.Request) -> web.Response:
    require_role(request, "admin")
    body = await request.read()
    try:
        data = msgspec.json.decode(body)
        if not isinstance(data, dict):
            return error(400, "invalid request: expected an object")
        data["id"] = request.match_info["id"]
        agent = msgspec.convert(data, AgentConfig)
        engine = request.app[K.ROUTING]
        validate_routing(msgspec.structs.replace(engine.cfg, agents=[agent]), "agent")
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
            ValueError) as exc:
        return error(400, f"invalid agent: {exc}")
    assigned = await engine.put_agent(agent)
    return json_response({"agent": agent, "assigned": assigned})


@routes.post("/api/v1/agents/{id}/status")
async def set_status(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    agent_id = request.match_info["id"]
    if principal.name != agent_id and ROLE_RANK[principal.role] < ROLE_RANK["supervisor"]:
        return error(403, "agents may only change their own status")
    req = decode_body(await request.read(), StatusRequest)
    try:
        changes = await request.app[K.ROUTING].set_status(agent_id, req.status)
    except RoutingError as exc:
        return error(404, str(exc))
    return json_response({"status": req.status, "changes": changes})


@routes.post("/api/v1/agents/{id}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    if principal.name != request.match_info["id"] and principal.role == "agent":
        return error(403, "agents may only send their own heartbeat")
    await request.app[K.ROUTING].heartbeat(request.match_info["id"])
    return json_response({"ok": True})


@routes.get("/api/v1/queues")
async def queues(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    return json_response({"pools": await request.app[K.ROUTING].queue_stats()})


@routes.get("/api/v1/conversations/{id}/routing")
async def explain(request: web.Request) -> web.Response:
    require_role(request, "agent")
    engine = request.app[K.ROUTING]
    cid = (await conversation_or_404(request)).id
    return json_response({"state": await engine.routing_state(cid),
                          "log": await engine.explain(cid)})


@routes.post("/api/v1/conversations/{id}/transfer")
async def transfer(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), TransferRequest)
    if (req.agent is None) == (req.queue is None):
        return error(400, "give exactly one of 'agent' or 'queue'")
    conversation = await conversation_or_404(request)
    engine = request.app[K.ROUTING]
    try:
        if req.agent is not None:
            await engine.transfer_to_agent(conversation.id, req.agent)
        else:
            await engine.transfer_to_queue(conversation, req.queue or "")
    except RoutingError as exc:
        return error(409, str(exc))
    return json_response({"state": await engine.routing_state(conversation.id)})


@routes.post("/api/v1/conversations/{id}/resolve")
async def resolve(request: web.Request) -> web.Response:
    require_role(request, "agent")
    store = request.app[K.STORE]
    conversation = await conversation_or_404(request)
    await request.app[K.ROUTING].release(conversation.id, "closed")
    await store.update_conversation(conversation.id, {"status": "resolved", "assignee": ""})
    return json_response({"status": "resolved"})


@routes.post("/api/v1/conversations/{id}/language")
async def correct_language(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), LanguageRequest)
    store = request.app[K.STORE]
    conversation = await conversation_or_404(request)
    messages = await store.get_messages(conversation.id)
    inbound = [m for m in messages if m.direction == "in"]
    if not inbound:
        return error(409, "conversation has no inbound message to route")
    message = await store.load_inbound(inbound[-1].id)
    assert message is not None
    await request.app[K.ROUTING].correct_language(conversation, req.language, message)
    return json_response({"state": await request.app[K.ROUTING].routing_state(conversation.id)})
