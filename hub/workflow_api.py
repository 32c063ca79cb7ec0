"""The work an agent does on a conversation beside replying: private notes, priority, the work
status (open / pending / snoozed until / resolved), spam and blocked senders, bulk actions.

Resolving reuses routing's release (as ``POST .../resolve`` does), and every conversation is
judged by hub/scope.py: out of scope a read answers 404, an action 403. Pending and snoozed
change no routing: the conversation keeps its agent, capacity and SLA clocks; the buyer's next
message makes it open again (ingest.lua), and a snoozed one wakes at its time (the
``snooze-wake`` loop below, supervised like every background loop).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from channels.supervisor import Supervisor
from hub import keys as K
from hub import query as q
from hub.api import conversation_or_404, decode_body, gate, json_response
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from hub.roles import role_of, runs_workers
from hub.routing_api import _TRANSFER_STATUS
from routing.engine import RoutingError, TransferRefused
from routing.priority import WORKFLOW_PRIORITY_OFFSET
from storage.records import Conversation, Priority
from storage.store import UnknownConversation
from storage.tags import MAX_TAGS, TooManyTags, change_tags, normalise_tag
from storage.workflow import (
    NOTE_MAX_CHARS,
    ConversationFull,
    Note,
    Resolved,
    UnknownContact,
    Workflow,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
WORKFLOW = web.AppKey("workflow", Workflow)

CID = {"id": "conversation id"}
MAX_SNOOZE_SECONDS = 366 * 86400
BULK_MAX = 100
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


# -- bodies and answers ----------------------------------------------------------------------

class NoteRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A private note: never sent to the buyer; the author is the caller."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=NOTE_MAX_CHARS)]


class NoteList(msgspec.Struct, frozen=True):
    """Oldest first; pass ``next_offset`` as ``offset`` for more (null: no more)."""

    notes: list[Note]
    next_offset: int | None


class PriorityRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    priority: Priority


class WorkStatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``snooze_until`` (UNIX seconds, in the future, at most a year ahead) only with
    ``snoozed``, and required there."""

    status: Literal["open", "pending", "snoozed", "resolved"]
    snooze_until: float | None = None


class SpamRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``spam: false`` undoes a mark (supervisors): the flags go and the sender is unblocked."""

    spam: bool = True


class BulkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``agent`` with ``assign`` (the rules of a transfer to an agent apply to each id);
    ``priority`` with ``priority``; ``tags`` with ``tag`` (added to each conversation as
    ``POST .../tags`` adds them: one over the 20-tag limit fails alone, unchanged)."""

    action: Literal["resolve", "assign", "priority", "tag"]
    ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=BULK_MAX)]
    agent: Id | None = None
    priority: Priority | None = None
    tags: Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]],
                    msgspec.Meta(min_length=1, max_length=MAX_TAGS)] | None = None


class WorkChanged(msgspec.Struct, frozen=True):
    """The conversation record after the change."""

    conversation: Conversation


class ContactBlocked(msgspec.Struct, frozen=True):
    """``conversations``: how many of the sender's conversations carry the flag now (or no
    longer)."""

    contact_id: str
    blocked: bool
    conversations: int


class BulkItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One id's outcome: ``status`` is what the single route would have answered."""

    id: str
    ok: bool
    status: int
    code: str | None = None
    message: str | None = None


class BulkResult(msgspec.Struct, frozen=True):
    """One entry per distinct id, in the order given; some may fail while others succeed."""

    action: str
    results: list[BulkItem]
    succeeded: int
    failed: int


# -- shared steps ----------------------------------------------------------------------------

def workflow(request: web.Request) -> Workflow:
    return request.app[WORKFLOW]


async def _reloaded(request: web.Request, conversation_id: str) -> Conversation:
    conversation = await request.app[K.STORE].get_conversation(conversation_id)
    if conversation is None:
        raise ApiError(404, "no such conversation")
    return conversation


async def _in_scope(request: web.Request, conversation_id: str) -> Conversation:
    """``conversation_or_404`` for an id from a body (bulk): unknown 404, out of scope 403."""
    store = request.app[K.STORE]
    conversation = (await store.get_conversation(conversation_id)
                    if store.keys_for(conversation_id) is not None else None)
    if conversation is None:
        raise ApiError(404, "no such conversation")
    await gate(request).act(conversation.id)
    return conversation


async def resolve_conversation(request: web.Request, conversation: Conversation) -> None:
    """What ``POST .../resolve`` does (routing frees the agent), and the work status ends."""
    await request.app[K.ROUTING].release(conversation.id, "closed")
    await request.app[K.STORE].update_conversation(conversation.id, {
        "status": "resolved", "assignee": "", "pool": "", "work_status": "",
        "snoozed_until": ""})


async def _set_priority(request: web.Request, conversation: Conversation,
                        priority: str) -> None:
    try:
        await workflow(request).set_priority(conversation.id, priority)
    except UnknownConversation:
        raise ApiError(404, "no such conversation") from None
    # The record holds the level; routing takes it at once (a waiting conversation moves in
    # its queue in one atomic step) and every later enqueue reads it from the record again.
    await request.app[K.ROUTING].set_workflow_priority(conversation.id, priority)


async def _assign(request: web.Request, conversation: Conversation, agent: str) -> None:
    only_from = await gate(request).transfer(conversation.id)
    try:
        await request.app[K.ROUTING].transfer_to_agent(
            conversation.id, agent, conversation=conversation, only_from=only_from)
    except TransferRefused as exc:
        raise ApiError(_TRANSFER_STATUS.get(exc.code, 409), str(exc), exc.code) from None
    except RoutingError as exc:
        raise ApiError(409, str(exc), "routing_refused") from None


# -- notes -----------------------------------------------------------------------------------

NOTES_QUERY = q.Query((
    q.integer("limit", "notes per page", 1, 500, 100),
    q.integer("offset", "the next_offset of the previous page", 0, 1_000_000, 0),
))


@routes.post("/api/v1/conversations/{id}/notes")
@operation(
    "Add a private note",
    {201: Note, 403: None, 404: None, 409: None},
    description="Seen by agents and supervisors only, never sent to any channel: notes are "
                "kept apart from the messages the sender reads. The author is the caller. "
                "409 when the conversation already keeps 1,000 notes.",
    body=NoteRequest, path_params=CID,
)
async def add_note(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    req = decode_body(await request.read(), NoteRequest)
    if not req.text.strip():
        raise ApiError(400, "invalid request: text is blank", "invalid_body")
    conversation = await conversation_or_404(request, access="act")
    try:
        note = await workflow(request).add_note(conversation.id, principal.name, req.text)
    except UnknownConversation:
        raise ApiError(404, "no such conversation") from None
    except ConversationFull:
        raise ApiError(409, "this conversation keeps the most notes it may (1000)",
                       "too_many_notes") from None
    return json_response(note, 201)


@routes.get("/api/v1/conversations/{id}/notes")
@operation("A conversation's private notes, oldest first", {200: NoteList, 404: None},
           query=NOTES_QUERY, path_params=CID)
async def list_notes(request: web.Request) -> web.Response:
    require_role(request, "agent")
    query = NOTES_QUERY.parse(request)
    conversation = await conversation_or_404(request)
    notes, next_offset = await workflow(request).notes(
        conversation.id, offset=query.get("offset", 0), limit=query.get("limit", 100))
    return json_response(NoteList(notes, next_offset))


# -- priority and status ---------------------------------------------------------------------

_OFFSETS = ", ".join(f"{level} {offset:+d}" for level, offset in WORKFLOW_PRIORITY_OFFSET.items())


@routes.post("/api/v1/conversations/{id}/priority")
@operation("Set the priority (low, normal, high, urgent)",
           {200: WorkChanged, 403: None, 404: None},
           description="Shown on the conversation (priority) and counted by routing: the "
                       f"level adds an offset to the routing priority ({_OFFSETS}) on top "
                       "of the queue's or rule's priority and the "
                       "requeue and SLA-breach boosts. A waiting conversation moves in its "
                       "queue at once (the next free agent takes the most urgent first); "
                       "requeues, escalations, transfers and the buyer's next message keep "
                       "using the level.",
           body=PriorityRequest, path_params=CID)
async def set_priority(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), PriorityRequest)
    conversation = await conversation_or_404(request, access="act")
    await _set_priority(request, conversation, req.priority)
    return json_response(WorkChanged(await _reloaded(request, conversation.id)))


@routes.post("/api/v1/conversations/{id}/status")
@operation(
    "Set the work status: open, pending, snoozed (until a time) or resolved",
    {200: WorkChanged, 403: None, 404: None, 409: None},
    description="resolved does what POST .../resolve does (the agent's capacity is freed). "
                "pending and snoozed keep the agent and the routing as they are; the buyer's "
                "next message makes the conversation open again, and a snoozed one opens by "
                "itself at snooze_until (within about a second). A resolved conversation is "
                "reopened only by the buyer's next message: 409 resolved for anything but "
                "resolved.",
    body=WorkStatusRequest, path_params=CID,
)
async def set_status(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), WorkStatusRequest)
    now = time.time()
    if req.status == "snoozed":
        until = req.snooze_until
        if until is None or not math.isfinite(until):
            raise ApiError(400, "invalid request: snoozed needs snooze_until (UNIX seconds)",
                           "invalid_body")
        if not now < until <= now + MAX_SNOOZE_SECONDS:
            raise ApiError(400, "invalid request: snooze_until must be in the future and at "
                                "most a year ahead", "invalid_body")
    elif req.snooze_until is not None:
        raise ApiError(400, "invalid request: snooze_until goes only with status snoozed",
                       "invalid_body")
    conversation = await conversation_or_404(request, access="act")
    if req.status == "resolved":
        await resolve_conversation(request, conversation)
    else:
        try:
            await workflow(request).set_status(conversation.id, req.status, req.snooze_until)
        except UnknownConversation:
            raise ApiError(404, "no such conversation") from None
        except Resolved:
            raise ApiError(409, "conversation is resolved; only the buyer's next message "
                                "reopens it", "resolved") from None
    return json_response(WorkChanged(await _reloaded(request, conversation.id)))


# -- spam and blocked senders ----------------------------------------------------------------

@routes.post("/api/v1/conversations/{id}/spam")
@operation(
    "Mark as spam: flag it, block its sender and resolve it",
    {200: WorkChanged, 403: None, 404: None},
    description="The sender's later messages are stored, flagged and not routed (see "
                "POST /api/v1/contacts/{id}/block); KPIs leave spam and blocked "
                "conversations out. The body may be left out. {\"spam\": false} "
                "(supervisors) takes the mark and the block away; it does not reopen.",
    body=SpamRequest, path_params=CID,
)
async def mark_spam(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    body = await request.read()
    req = decode_body(body, SpamRequest) if body.strip() else SpamRequest()
    if not req.spam:
        require_role(request, "supervisor")
    conversation = await conversation_or_404(request, access="act")
    flow = workflow(request)
    try:
        await flow.mark_spam(conversation.id, req.spam)
        await flow.block_contact(conversation.contact_id, req.spam, by=principal.name)
    except UnknownConversation:
        raise ApiError(404, "no such conversation") from None
    except UnknownContact:
        pass  # the contact was erased: the conversation's flags are what is left to set
    if req.spam and conversation.status != "resolved":
        await resolve_conversation(request, conversation)
    return json_response(WorkChanged(await _reloaded(request, conversation.id)))


async def _block(request: web.Request, blocked: bool) -> web.Response:
    principal = require_role(request, "supervisor")
    contact_id = request.match_info["id"]
    try:
        flagged = await workflow(request).block_contact(contact_id, blocked, by=principal.name)
    except UnknownContact:
        raise ApiError(404, "no such contact") from None
    return json_response(ContactBlocked(contact_id, blocked, flagged))


@routes.post("/api/v1/contacts/{id}/block")
@operation(
    "Block a sender: their later messages are stored but not routed",
    {200: ContactBlocked, 404: None}, role="supervisor", tag="contacts",
    description="Every conversation of the sender is flagged blocked (KPIs leave them "
                "out); a new one they open is recorded as resolved, never as new work. "
                "Conversations already assigned stay with their agent.",
    path_params={"id": "contact id"},
)
async def block_contact(request: web.Request) -> web.Response:
    return await _block(request, True)


@routes.post("/api/v1/contacts/{id}/unblock")
@operation("Unblock a sender: their next message is routed again",
           {200: ContactBlocked, 404: None}, role="supervisor", tag="contacts",
           path_params={"id": "contact id"})
async def unblock_contact(request: web.Request) -> web.Response:
    return await _block(request, False)


# -- bulk ------------------------------------------------------------------------------------

@routes.post("/api/v1/conversations/bulk")
@operation(
    "Resolve, assign, tag or set the priority of up to 100 conversations",
    {200: BulkResult},
    description="Each id is judged on its own, by the rules of the single route (scope: an "
                "agent's out-of-scope id fails with 403 out_of_scope, an unknown one with "
                "404); the others go ahead. Repeated ids count once.",
    body=BulkRequest,
)
async def bulk(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), BulkRequest)
    if req.action == "assign" and req.agent is None:
        raise ApiError(400, "invalid request: assign needs agent", "invalid_body")
    if req.action == "priority" and req.priority is None:
        raise ApiError(400, "invalid request: priority needs priority", "invalid_body")
    if req.action == "tag" and req.tags is None:
        raise ApiError(400, "invalid request: tag needs tags", "invalid_body")
    if (req.action != "assign" and req.agent is not None) or \
            (req.action != "priority" and req.priority is not None) or \
            (req.action != "tag" and req.tags is not None):
        raise ApiError(400, f"invalid request: {req.action} takes only ids",
                       "invalid_body")
    try:
        tags = list(dict.fromkeys(normalise_tag(t) for t in req.tags or ()))
    except ValueError as exc:
        raise ApiError(400, f"invalid request: {exc}", "invalid_body") from None
    results: list[BulkItem] = []
    for cid in dict.fromkeys(req.ids):
        try:
            conversation = await _in_scope(request, cid)
            if req.action == "resolve":
                await resolve_conversation(request, conversation)
            elif req.action == "priority":
                await _set_priority(request, conversation, req.priority or "normal")
            elif req.action == "tag":
                await _add_tags(request, conversation, tags)
            else:
                await _assign(request, conversation, req.agent or "")
        except ApiError as exc:
            results.append(BulkItem(cid, False, exc.status, exc.code, exc.message))
            continue
        results.append(BulkItem(cid, True, 200))
    ok = sum(1 for r in results if r.ok)
    return json_response(BulkResult(req.action, results, ok, len(results) - ok))


async def _add_tags(request: web.Request, conversation: Conversation, tags: list[str]) -> None:
    """One id of a bulk ``tag``: the answers ``POST .../tags`` would give."""
    try:
        await change_tags(request.app[K.STORE], conversation.id, tags, [])
    except UnknownConversation:
        raise ApiError(404, "no such conversation") from None
    except TooManyTags:
        raise ApiError(422, f"a conversation has at most {MAX_TAGS} tags; remove some "
                            "first", "too_many_tags") from None


# -- the snooze alarm ------------------------------------------------------------------------

class SnoozeWake:
    """Opens snoozed conversations when their time comes (one pass a second; Redis errors
    back off in the supervisor and the next pass catches up)."""

    def __init__(self, flow: Workflow) -> None:
        self.flow = flow

    async def iteration(self) -> bool:
        woken = await self.flow.wake_due()
        if woken:
            log.info("woke %d snoozed conversations", len(woken))
        return False


async def workflow_ctx(app: web.Application) -> AsyncIterator[None]:
    """The workflow store and its one loop, owned here and stopped on shutdown."""
    app[WORKFLOW] = Workflow(app[K.STORE])
    supervisor = Supervisor("workflow", app[K.HEALTH])
    if runs_workers(role_of(app)):  # the store serves the API in every role
        supervisor.loop("snooze-wake", SnoozeWake(app[WORKFLOW]).iteration, idle_seconds=1.0)
    try:
        yield
    finally:
        supervisor.stop.set()
        await supervisor.wait(2.0)
        await supervisor.cancel_all()

