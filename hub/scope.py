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

from typing import Literal

import msgspec

from hub.auth import Principal
from hub.errors import ApiError
from storage.routing_store import RoutingStore
from storage.store import Visibility

AgentScope = Literal["own", "pools", "all"]


class RoutingFacts(msgspec.Struct, frozen=True):
    """The routing facts a scope decision needs, read in one round trip."""

    status: str | None
    assignee: str | None
    pool: str | None
    agent_pools: frozenset[str]


async def routing_facts(state: RoutingStore, conversation_id: str,
                        agent_id: str) -> RoutingFacts:
    (status, assignee, pool), pools = await state.scope_facts(conversation_id, agent_id)
    return RoutingFacts(status, assignee, pool, pools)


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


async def visibility(state: RoutingStore, principal: Principal,
                     scope: AgentScope) -> Visibility | None:
    """The list filter for this principal; None = everything."""
    if unlimited(principal, scope):
        return None
    pools = await state.agent_pool_ids(principal.name) if scope == "pools" else ()
    return Visibility(principal.name, pools)


class Gate:
    """Scope checks for one request; raises the 404/403 the API answers with."""

    def __init__(self, state: RoutingStore, principal: Principal, scope: AgentScope) -> None:
        self.state = state
        self.principal = principal
        self.scope = scope

    async def facts(self, conversation_id: str) -> RoutingFacts:
        return await routing_facts(self.state, conversation_id, self.principal.name)

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
