"""Which conversations a principal may see and act on (``api.agent_scope``).

Supervisors and admins see everything. An agent sees the conversations assigned to them and,
with ``"pools"`` (the default), those waiting in a pool (a queue's step) they are eligible for;
``"own"`` narrows that to their own, ``"all"`` lifts the limit. Out of scope, a read answers 404
exactly like an unknown id, so ids cannot be probed; an action answers 403.

A single conversation is judged on its routing state (``rc:<c>`` under the ``{r}`` tag, the
source of truth, written atomically by routing.lua); lists are filtered inside Redis on the
conversation records, which the mirror keeps in step with it within milliseconds.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from hub.auth import Principal
from hub.errors import ApiError
from storage import keys as storage_keys
from storage.store import Visibility

AgentScope = Literal["own", "pools", "all"]


class RoutingFacts(msgspec.Struct, frozen=True):
    """The routing facts a scope decision needs, read in one round trip."""

    status: str | None
    assignee: str | None
    pool: str | None
    agent_pools: frozenset[str]


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None


async def routing_facts(redis: Any, conversation_id: str, agent_id: str) -> RoutingFacts:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(storage_keys.routing_conversation(conversation_id),
                   "status", "assignee", "pool")
        pipe.hkeys(storage_keys.routing_agent_pools(agent_id))
        (status, assignee, pool), pools = await pipe.execute()
    return RoutingFacts(_text(status), _text(assignee), _text(pool),
                        frozenset(p.decode() for p in pools))


async def agent_pools(redis: Any, agent_id: str) -> tuple[str, ...]:
    return tuple(sorted(p.decode() for p in
                        await redis.hkeys(storage_keys.routing_agent_pools(agent_id))))


def unlimited(principal: Principal, scope: AgentScope) -> bool:
    return principal.at_least("supervisor") or scope == "all"


def in_scope(principal: Principal, scope: AgentScope, facts: RoutingFacts) -> bool:
    if unlimited(principal, scope):
        return True
    if facts.status == "assigned" and facts.assignee == principal.name:
        return True
    return (scope == "pools" and facts.status == "waiting" and facts.pool is not None
            and facts.pool in facts.agent_pools)


def owns(principal: Principal, facts: RoutingFacts) -> bool:
    """Assigned to this principal right now (what an agent needs to transfer)."""
    return facts.status == "assigned" and facts.assignee == principal.name


async def visibility(redis: Any, principal: Principal, scope: AgentScope) -> Visibility | None:
    """The list filter for this principal; None = everything."""
    if unlimited(principal, scope):
        return None
    pools = await agent_pools(redis, principal.name) if scope == "pools" else ()
    return Visibility(principal.name, pools)


class Gate:
    """Scope checks for one request; raises the 404/403 the API answers with."""

    def __init__(self, redis: Any, principal: Principal, scope: AgentScope) -> None:
        self.redis = redis
        self.principal = principal
        self.scope = scope

    async def facts(self, conversation_id: str) -> RoutingFacts:
        return await routing_facts(self.redis, conversation_id, self.principal.name)

    async def read(self, conversation_id: str) -> None:
        if unlimited(self.principal, self.scope):
            return
        if not in_scope(self.principal, self.scope, await self.facts(conversation_id)):
            raise ApiError(404, "no such conversation")

    async def act(self, conversation_id: str) -> None:
        if unlimited(self.principal, self.scope):
            return
        if not in_scope(self.principal, self.scope, await self.facts(conversation_id)):
            raise ApiError(403, "this conversation is not assigned to you nor waiting in a "
                                "queue you serve", "out_of_scope")

    async def transfer(self, conversation_id: str) -> str | None:
        """Agents may transfer only what is assigned to them: returns the assignee the
        transfer must still find (checked again inside the atomic step), None for anyone."""
        if self.principal.at_least("supervisor"):
            return None
        if not owns(self.principal, await self.facts(conversation_id)):
            raise ApiError(403, "agents may transfer only conversations assigned to them",
                           "not_assigned_to_you")
        return self.principal.name
