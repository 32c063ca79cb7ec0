"""A buyer's history across channels: people, their contacts and conversations, and the
supervisor's manual merge and unmerge (``storage/people.py`` holds the layer).

Scope (hub/scope.py): supervisors and admins see every conversation of a person; an agent sees
only those in their own visibility, and a person of whom they see no conversation answers 404
like an unknown id, so neither people nor their channels can be probed. The conversation a
request names is judged as every conversation read is (out of scope: 404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import msgspec
from aiohttp import web

from hub import keys as K
from hub import query as q
from hub.api import conversation_or_404, decode_body, json_response, principal_of
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from hub.paging import conversation_cursor, conversation_position
from hub.scope import RoutingFacts, in_scope, unlimited
from storage import keys as storage_keys
from storage.people import (
    Alone,
    NotLinked,
    People,
    Person,
    SamePerson,
    UnknownPerson,
    is_person_id,
)
from storage.records import Conversation

routes = web.RouteTableDef()
PEOPLE = web.AppKey("people", People)

PID = {"id": "person id (pe.<hex>; a merged person's id names the one it was merged into)"}
HISTORY_QUERY = q.Query((
    q.integer("limit", "page size", 1, 100, 20),
    q.text("cursor", "the next_cursor of the previous page", 512),
))
PersonId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class MergeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``person``: the person merged into the one in the path (it then names that one)."""

    person: PersonId


class PersonHistory(msgspec.Struct, frozen=True):
    """The person and the first page of their conversations on every channel, most recently
    active first; pass ``next_cursor`` as ``cursor`` to ``/api/v1/people/{id}/conversations``
    (null: last page). A page is short only when it is the last, or for an agent after 1000
    conversations out of their scope (then ``next_cursor`` goes on)."""

    person: Person
    conversations: list[Conversation]
    next_cursor: str | None


class PersonConversations(msgspec.Struct, frozen=True):
    """One page of a person's conversations, most recently active first (as PersonHistory)."""

    person_id: str
    conversations: list[Conversation]
    next_cursor: str | None


def people(request: web.Request) -> People:
    return request.app[PEOPLE]


def _visible(request: web.Request) -> Any:
    """The agent's scope as a filter over conversations (None: a supervisor sees all). One
    round trip for the agent's pools and one for the routing state of a batch, the source
    of truth ``Gate.read`` judges a single conversation by."""
    principal = principal_of(request)
    scope = request.app[K.CONFIG].config.api.agent_scope
    if unlimited(principal, scope):
        return None
    state = request.app[K.ROUTING].state

    async def visible(conversations: Sequence[Conversation]) -> set[str]:
        if not conversations:
            return set()
        pools = frozenset(await state.agent_pool_ids(principal.name)) \
            if scope == "pools" else frozenset()
        async with state.redis.pipeline(transaction=False) as pipe:
            for c in conversations:
                pipe.hmget(storage_keys.routing_state(c.id), "status", "assignee", "pool")
            rows = await pipe.execute()
        out: set[str] = set()
        for c, row in zip(conversations, rows, strict=True):
            status, assignee, pool = (v.decode() if isinstance(v, bytes) else v for v in row)
            if in_scope(principal, scope, RoutingFacts(status, assignee, pool, pools)):
                out.add(c.id)
        return out

    return visible


async def _person_or_404(request: web.Request, person_id: str) -> Person:
    """The person, if it exists and the caller sees at least one of its conversations."""
    if not is_person_id(person_id):
        raise ApiError(404, "no such person")
    try:
        person = await people(request).get(person_id)
        visible = _visible(request)
        if visible is not None and not (await people(request).page(
                person.id, limit=1, visible=visible)).conversations:
            raise ApiError(404, "no such person")
    except UnknownPerson:
        raise ApiError(404, "no such person") from None
    return person


@routes.get("/api/v1/conversations/{id}/contact")
@operation(
    "The buyer of a conversation across channels: their person and conversations",
    {200: PersonHistory, 404: None}, tag="contacts",
    description="Contacts are linked into one person by the same sender identity: an email "
                "address, a phone number (E.164: SMS and WhatsApp senders), a marketplace's "
                "buyer id (per marketplace), never by what a buyer typed. Supervisors merge "
                "and unmerge people by hand. An agent sees only the person's conversations "
                "in their own scope.",
    query=HISTORY_QUERY, path_params={"id": "conversation id"},
)
async def conversation_contact(request: web.Request) -> web.Response:
    require_role(request, "agent")
    query = HISTORY_QUERY.parse(request)
    conversation = await conversation_or_404(request)
    after = conversation_position(query["cursor"]) if "cursor" in query else None
    # Linked when routed; a conversation stored before people existed is linked now.
    person_id = await people(request).person_of_contact(conversation.contact_id) or \
        await people(request).link_conversation(conversation)
    try:
        person = await people(request).get(person_id)
        page = await people(request).page(person.id, limit=query.get("limit", 20),
                                          after=after, visible=_visible(request))
    except UnknownPerson:  # erased while we read
        raise ApiError(404, "no such conversation") from None
    return json_response(PersonHistory(person, page.conversations,
                                       conversation_cursor(page.next)))


@routes.get("/api/v1/people/{id}")
@operation("A person: their contacts on every channel, identifiers and merge history",
           {200: Person, 404: None}, tag="contacts", path_params=PID)
async def get_person(request: web.Request) -> web.Response:
    require_role(request, "agent")
    return json_response(await _person_or_404(request, request.match_info["id"]))


@routes.get("/api/v1/people/{id}/conversations")
@operation(
    "A person's conversations on every channel, most recently active first",
    {200: PersonConversations, 404: None}, tag="contacts",
    description="Keyset-paged: pass next_cursor back as cursor. An agent sees only those in "
                "their own scope.",
    query=HISTORY_QUERY, path_params=PID,
)
async def person_conversations(request: web.Request) -> web.Response:
    require_role(request, "agent")
    query = HISTORY_QUERY.parse(request)
    after = conversation_position(query["cursor"]) if "cursor" in query else None
    person = await _person_or_404(request, request.match_info["id"])
    try:
        page = await people(request).page(person.id, limit=query.get("limit", 20),
                                          after=after, visible=_visible(request))
    except UnknownPerson:
        raise ApiError(404, "no such person") from None
    return json_response(PersonConversations(person.id, page.conversations,
                                             conversation_cursor(page.next)))


@routes.post("/api/v1/people/{id}/merge")
@operation(
    "Merge another person into this one (the same buyer, linked by nothing automatic)",
    {200: Person, 400: None, 404: None}, role="supervisor", tag="contacts",
    description="Every contact and conversation of `person` moves here; its id then names "
                "this person. Who merged and when is in both people's history. Undo with "
                "POST /api/v1/contacts/{id}/unmerge.",
    body=MergeRequest, path_params=PID,
)
async def merge_people(request: web.Request) -> web.Response:
    principal = require_role(request, "supervisor")
    req = decode_body(await request.read(), MergeRequest)
    into = request.match_info["id"]
    if not is_person_id(into):
        raise ApiError(404, "no such person")
    if not is_person_id(req.person):
        raise ApiError(404, "no such person: person")
    try:
        survivor = await people(request).merge(into, req.person, by=principal.name)
    except UnknownPerson:
        raise ApiError(404, "no such person") from None
    except SamePerson:
        raise ApiError(400, "cannot merge a person into itself", "same_person") from None
    return json_response(await people(request).get(survivor))


@routes.post("/api/v1/contacts/{id}/unmerge")
@operation(
    "Split a contact out of its person into a person of its own (undo a wrong merge)",
    {200: Person, 404: None, 409: None}, role="supervisor", tag="contacts",
    description="The contact leaves with the same sender's contacts in other partitions, and "
                "with each identifier no remaining contact carries. Automatic linking never "
                "merges people, so the split stays: the sender's later conversations join the "
                "new person. Answers the new person; who split and when is in both histories.",
    path_params={"id": "contact id"},
)
async def unmerge_contact(request: web.Request) -> web.Response:
    principal = require_role(request, "supervisor")
    contact_id = request.match_info["id"]
    if request.app[K.STORE].keys_for(contact_id) is None:
        raise ApiError(404, "no such contact")
    try:
        fresh = await people(request).unmerge(contact_id, by=principal.name)
    except NotLinked:
        raise ApiError(404, "no such contact (or none of its messages is linked yet)") from None
    except Alone:
        raise ApiError(409, "the contact is its person's only sender: nothing to split",
                       "nothing_to_split") from None
    return json_response(await people(request).get(fresh))


async def people_ctx(app: web.Application) -> AsyncIterator[None]:
    """The person layer for the API (the router links with its own, see hub/app.py)."""
    app[PEOPLE] = People(app[K.STORE])
    yield
