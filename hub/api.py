"""The agent-facing REST API (``/api/v1``); health, readiness and metrics are in ``hub.health``.

Every handler states its contract with ``@operation`` (hub/openapi.py builds the published
document from them), reads its query through a ``Query`` (hub/query.py: strict, 400 on bad
input), answers with Structs (hub/views.py) and raises ``ApiError`` for the one error shape.
What an agent may see and do is decided in hub/scope.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

import msgspec
import phonenumbers
from aiohttp import web

from channels.attachments import AttachmentPolicy
from channels.errors import ChannelError, ReplyRejected
from channels.models import OutboundReply, TemplateRef
from channels.windows import (
    TemplateSpec,
    WindowClosed,
    check_template,
    render_template,
    template_language,
    templates_for,
)
from hub import keys as K
from hub import query as q
from hub.auth import PRINCIPAL, Principal, require_role
from hub.errors import ApiError
from hub.history import INCLUDE_NOTES, HistoryList, as_item, history_page, history_position
from hub.openapi import build_openapi, operation
from hub.paging import (
    conversation_cursor,
    conversation_position,
    deadline_cursor,
    deadline_position,
    message_cursor,
    message_position,
)
from hub.scope import Gate, visibility
from hub.sla_api import SLA_PARAMS, due_by, sla_order
from hub.uploads import uploaded_attachments
from hub.views import (
    ConversationDetail,
    ConversationList,
    DeadLetterList,
    DraftAnswer,
    QuarantineList,
    ReplyAccepted,
    RetryQueued,
    list_items,
)
from routing.config import RoutingConfig
from storage import keys as storage_keys
from storage.history import order_reference
from storage.records import Conversation
from storage.sla import deadlines_of, page_by_deadline
from storage.store import (
    ConversationFilter,
    NotRetryable,
    Position,
    UnknownConversation,
    UnknownMessage,
)
from storage.tags import normalise_tag

if TYPE_CHECKING:
    from channels.base import ChannelAdapter

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
# A conversation opens with its templates; a provider that lists them per conversation gets
# this long before the declared ones are shown instead.
TEMPLATES_TIMEOUT_SECONDS: Final = 3.0


class TemplateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An approved template: its name, language and positional parameters."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] | None = None
    parameters: Annotated[list[Annotated[str, msgspec.Meta(max_length=1024)]],
                          msgspec.Meta(max_length=100)] = []


class ReplyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``author`` is optional and, when given, must be the caller: a reply is always
    authored by the token's principal. ``client_key`` = ``Idempotency-Key``. ``template``:
    send an approved template (outside the reply window, or to write first); ``text`` may
    then be left out (the conversation shows the template). ``tag``: open one of the
    channel's extended windows (Messenger's HUMAN_AGENT). ``attachments``: upload ids;
    ``text`` may be left out when files are sent."""

    text: Annotated[str, msgspec.Meta(max_length=100_000)] = ""
    author: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    client_key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    template: TemplateRequest | None = None
    tag: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    # Upload ids (POST .../attachments) of files to send with the reply.
    attachments: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
                           msgspec.Meta(max_length=20)] = []


_encoder = msgspec.json.Encoder()
T = TypeVar("T")

CID = {"id": "conversation id"}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "a retried request with the same key returns the first reply (24 h)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"},
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status,
                        content_type="application/json")


def decode_body(body: bytes, type_: type[T]) -> T:
    """The request body as ``type_``, or a 400 naming what is wrong."""
    try:
        return msgspec.json.decode(body, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid request: {exc}", "invalid_body") from None


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def gate(request: web.Request) -> Gate:
    return Gate(request.app[K.ROUTING].state, principal_of(request),
                request.app[K.CONFIG].config.api.agent_scope)


async def conversation_or_404(request: web.Request, *,
                              access: Literal["read", "act"] = "read") -> Conversation:
    """The conversation named in the path, if it exists and the caller may see it (reads:
    404 otherwise, like an unknown id) or act on it (actions: 403)."""
    conversation = await request.app[K.STORE].get_conversation(request.match_info["id"])
    if conversation is None:
        raise ApiError(404, "no such conversation")
    checks = gate(request)
    if access == "read":
        await checks.read(conversation.id)
    else:
        await checks.act(conversation.id)
    return conversation


@routes.get("/api/v1/openapi.json")
@operation("This document (OpenAPI 3.1)", {200: dict}, role=None, tag="meta")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(request.app))


LIST_QUERY = q.Query((
    q.integer("limit", "page size", 1, 200, 50),
    q.text("cursor", "the next_cursor of the previous page", 512),
    q.timestamp("before", "only conversations last active before this UNIX time (the older "
                          "way to page; cannot be combined with cursor)"),
    q.value_list("status", "conversation status", "(new|queued|assigned|resolved)"),
    q.value_list("channel", "channel type (api, telegram, ...) or channel instance name",
                 "[A-Za-z0-9_-]{1,64}"),
    q.value_list("language", "ISO 639-1 language of routing.languages", "[A-Za-z]{2}",
                 fold=str.lower),
    q.value_list("market", "ISO 3166-1 alpha-2 market", "[A-Za-z]{2}", fold=str.upper),
    q.value_list("assignee", "agent id", "[A-Za-z0-9_.-]{1,64}"),
    q.value_list("queue", "routing queue name", "[A-Za-z0-9_.-]{1,64}"),
    q.boolean("mine", "only conversations assigned to the caller"),
    q.boolean("unassigned", "only conversations nobody is assigned to (status new or queued)"),
    q.value_list("tag", "tag (POST .../tags; case is ignored)", r"[^,\x00-\x1f]{1,64}",
                 fold=normalise_tag),
    *SLA_PARAMS,
))


def _known(what: str, values: tuple[str, ...], known: set[str]) -> tuple[str, ...]:
    unknown = [v for v in values if v not in known]
    if unknown:
        listed = ", ".join(sorted(known)[:30]) or "none configured"
        raise ApiError(400, f"{what}: unknown value {unknown[0]!r} (known: {listed})",
                       "unknown_filter_value")
    return values


def _markets(cfg: RoutingConfig) -> set[str]:
    """ISO regions plus every market the routing config names."""
    known = set(phonenumbers.SUPPORTED_REGIONS) | set(cfg.channel_markets.values())
    known.update(m.upper() for a in cfg.agents for m in a.markets)
    known.update(m.upper() for queue in cfg.queues for step in queue.steps for m in step.markets)
    return known


UNASSIGNED = ("new", "queued")


class NothingMatches(Exception):
    """The filters contradict each other (``mine=true`` with someone else's ``assignee``)."""


async def _filters(request: web.Request, query: dict[str, Any]) -> ConversationFilter:
    """Filter values checked against what this hub knows: a typo is a 400, not a silently
    empty list."""
    config = request.app[K.CONFIG].config
    engine = request.app[K.ROUTING]
    channels = {c.name for c in config.channels} | {c.type for c in config.channels}
    assignees: tuple[str, ...] = query.get("assignee", ())
    if assignees:
        _known("assignee", assignees, {a.id for a in await engine.agents()})
    if query.get("mine"):
        me = principal_of(request).name
        if assignees and me not in assignees:
            raise NothingMatches
        assignees = (me,)
    statuses: tuple[str, ...] = query.get("status", ())
    if query.get("unassigned"):
        if assignees:
            raise NothingMatches
        statuses = tuple(s for s in statuses or UNASSIGNED if s in UNASSIGNED)
        if not statuses:
            raise NothingMatches
    return ConversationFilter(
        status=statuses,
        tag=query.get("tag", ()),
        channel=_known("channel", query.get("channel", ()), channels),
        language=_known("language", query.get("language", ()), set(engine.cfg.languages)),
        market=_known("market", query.get("market", ()), _markets(engine.cfg)),
        assignee=assignees,
        queue=_known("queue", query.get("queue", ()), {x.name for x in engine.queues}),
    )


@routes.get("/api/v1/conversations")
@operation(
    "Conversations, most recently active first (or soonest SLA deadline first)",
    {200: ConversationList},
    description="Keyset-paged: pass next_cursor back as cursor. Filters are applied inside "
                "Redis before the page is cut, so a page is short only when it is the last. "
                "An agent sees what api.agent_scope allows (their own, and with \"pools\" "
                "those waiting in queues they are eligible for). With sla or "
                "sla_due_within the list holds only conversations with a running SLA clock, "
                "soonest deadline first (a breached one stays until its clock stops: an "
                "agent's answer, resolve); GET .../routing shows the deadlines.",
    query=LIST_QUERY,
)
async def list_conversations(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    query = LIST_QUERY.parse(request)
    if "cursor" in query and "before" in query:
        raise ApiError(400, "give cursor or before, not both", "invalid_parameter")
    by_deadline = sla_order(query)
    after: Position | None = None
    if by_deadline is not None:
        after = deadline_position(query["cursor"]) if "cursor" in query else None
    elif "cursor" in query:
        after = conversation_position(query["cursor"])
    elif "before" in query:
        after = Position(repr(query["before"]))
    try:
        filters = await _filters(request, query)
    except NothingMatches:
        return json_response(ConversationList([], None))
    store = request.app[K.STORE]
    seen_by = await visibility(request.app[K.ROUTING].state, principal,
                               request.app[K.CONFIG].config.api.agent_scope)
    if by_deadline is not None:
        due = await page_by_deadline(store, limit=query.get("limit", 50), after=after,
                                     due_by=due_by(by_deadline), filters=filters,
                                     visibility=seen_by)
        return json_response(ConversationList(list_items(due.conversations, due.deadlines),
                                              deadline_cursor(due.next)))
    page = await store.page_conversations(limit=query.get("limit", 50), after=after,
                                          filters=filters, visibility=seen_by)
    deadlines = await deadlines_of(store, [c.id for c in page.conversations])
    return json_response(ConversationList(list_items(page.conversations, deadlines),
                                          conversation_cursor(page.next)))


def _messages_query(default: int) -> q.Query:
    return q.Query((
        q.integer("limit", "messages per page", 1, 500, default),
        q.text("cursor", "the next_cursor of the previous page", 512),
        q.choice("order", "asc: oldest first (default); desc: newest first", ("asc", "desc")),
    ))


DETAIL_QUERY = _messages_query(500)
MESSAGES_QUERY = q.Query((*_messages_query(100).params, INCLUDE_NOTES))


async def _message_page(request: web.Request, conversation: Conversation,
                        query: dict[str, Any], default: int) -> tuple[Any, str | None]:
    order = query.get("order", "asc")
    after = (message_position(query["cursor"], conversation.id, order)
             if "cursor" in query else None)
    page = await request.app[K.STORE].page_messages(
        conversation.id, limit=query.get("limit", default), after_seq=after,
        descending=order == "desc")
    return page.messages, message_cursor(conversation.id, page.next_seq, order)


@routes.get("/api/v1/conversations/{id}")
@operation(
    "A conversation with its first page of messages",
    {200: ConversationDetail, 404: None},
    description="messages are in sequence order (order=desc: newest first); next_cursor "
                "continues them here or at .../messages.",
    query=DETAIL_QUERY, path_params=CID,
)
async def get_conversation(request: web.Request) -> web.Response:
    require_role(request, "agent")
    query = DETAIL_QUERY.parse(request)
    conversation = await conversation_or_404(request)
    messages, cursor = await _message_page(request, conversation, query, 500)
    adapter = request.app[K.CHANNELS].get(conversation.channel_instance)
    window = (None if adapter is None
              else adapter.reply_window(conversation.last_inbound_at, time.time()))
    templates = [] if adapter is None else await _templates(adapter, conversation)
    order_id = await order_reference(request.app[K.STORE], conversation.id)
    policy = None
    if adapter is not None:
        policy = (adapter.attachment_policy if adapter.capabilities.attachments
                  else AttachmentPolicy(max_bytes=0, max_count=0))
    return json_response(ConversationDetail(conversation, messages, cursor, window, templates,
                                            order_id, policy))


async def _templates(adapter: ChannelAdapter, conversation: Conversation) -> list[TemplateSpec]:
    """What the agent can send as a template here; the declared ones when the provider cannot
    say in time (a marketplace's per-order reasons come from its API)."""
    try:
        async with asyncio.timeout(TEMPLATES_TIMEOUT_SECONDS):
            return list(await adapter.templates_for_thread(conversation.thread_id,
                                                           conversation.language))
    except (ChannelError, TimeoutError) as exc:
        log.warning("channel %s: templates not read (%s); showing the declared ones",
                    conversation.channel_instance, type(exc).__name__)
        return list(templates_for(adapter.capabilities, conversation.language))


@routes.get("/api/v1/conversations/{id}/messages")
@operation(
    "A conversation's messages, paged",
    {200: HistoryList, 404: None},
    description="Keyset-paged on the per-conversation sequence: the 10,000th message costs "
                "what the first does. Each item has a kind: \"message\", or with "
                "include=notes also \"note\", the private notes interleaved by time (never "
                "sent; the cursor of such a page continues only such pages).",
    query=MESSAGES_QUERY, path_params=CID,
)
async def list_messages(request: web.Request) -> web.Response:
    require_role(request, "agent")
    query = MESSAGES_QUERY.parse(request)
    conversation = await conversation_or_404(request)
    if query.get("include") == "notes":
        order = query.get("order", "asc")
        at = (history_position(query["cursor"], conversation.id, order)
              if "cursor" in query else None)
        return json_response(await history_page(
            request.app[K.STORE], conversation.id, limit=query.get("limit", 100),
            order=order, cursor=at))
    messages, cursor = await _message_page(request, conversation, query, 100)
    return json_response(HistoryList([as_item(m) for m in messages], cursor))


def _idempotency_key(request: web.Request, body_key: str | None) -> str | None:
    header = request.headers.get("Idempotency-Key")
    if header is not None and (not 1 <= len(header) <= 128
                               or not all("!" <= ch <= "~" for ch in header)):
        raise ApiError(400, "Idempotency-Key: expected 1..128 printable ASCII characters",
                       "invalid_header")
    return body_key or header


@routes.post("/api/v1/conversations/{id}/replies")
@operation(
    "Reply through the conversation's channel",
    {202: ReplyAccepted, 200: ReplyAccepted, 403: None, 404: None, 409: None, 422: None},
    description="202 queued for sending; 200 when the idempotency key was seen (the first "
                "reply is returned). The author is always the caller. 422: over the "
                "channel's length limit, outside its reply window (the message says "
                "whether a template or a tag can go instead; GET the conversation for "
                "reply_window before typing), a template the channel does not take, or "
                "attachments it does not take or an upload id that is unknown or expired.",
    body=ReplyRequest, headers=(IDEMPOTENCY_HEADER,), path_params=CID,
)
async def post_reply(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    store = request.app[K.STORE]
    req = decode_body(await request.read(), ReplyRequest)
    if not req.text and req.template is None and not req.attachments:
        raise ApiError(400, "invalid request: text is required (it may be left out only "
                            "with a template or attachments)", "invalid_body")
    client_key = _idempotency_key(request, req.client_key)
    if req.author is not None and req.author != principal.name:
        raise ApiError(403, f"a reply is authored by the caller ({principal.name}); author "
                            "may not name anyone else", "author_mismatch")
    conversation = await conversation_or_404(request, access="act")
    adapter = request.app[K.CHANNELS].get(conversation.channel_instance)
    if adapter is None:
        raise ApiError(409, f"channel instance {conversation.channel_instance} is not "
                            "configured", "channel_unavailable")
    reply_id = storage_keys.new_id(int(conversation.id.split(".", 1)[0]))
    files = (await uploaded_attachments(request, conversation.id, req.attachments,
                                        principal.name) if req.attachments else ())
    template = None if req.template is None else TemplateRef(
        req.template.name,
        # left out: the one approved in the conversation's language (es -> es_MX)
        req.template.language or template_language(
            adapter.capabilities, req.template.name, conversation.language),
        tuple(req.template.parameters))
    text = req.text
    if template is not None and not text.strip():
        try:
            spec = check_template(adapter.capabilities, template, adapter.type_name)
        except ReplyRejected as exc:
            raise ApiError(422, str(exc), "reply_rejected") from None
        text = render_template(spec, template)
    reply = OutboundReply(
        reply_id=reply_id,
        conversation_id=conversation.id,
        channel_type=conversation.channel,
        channel_instance=conversation.channel_instance,
        thread_id=conversation.thread_id,
        recipient_handle=conversation.contact_handle,
        text=text,
        author=principal.name,
        in_reply_to=conversation.last_inbound_provider_id,
        last_inbound_at=conversation.last_inbound_at,
        template=template,
        tag=req.tag,
        attachments=files,
    )
    if conversation.unreachable:
        raise ApiError(422, f"the buyer cannot be reached on this channel until they write "
                       f"again: {conversation.unreachable}", "reply_rejected")
    if conversation.replies_disabled:  # the channel said so when the buyer wrote
        where = f" at {conversation.answer_url}" if conversation.answer_url else ""
        raise ApiError(422, f"replying is disabled: {conversation.replies_disabled}{where}",
                       "reply_rejected")
    try:
        adapter.check_reply(reply, now=time.time())
    except WindowClosed as exc:
        path = (f"; POST /api/v1/conversations/{conversation.id}/replies with "
                '{"template": {"name", "language", "parameters"}}'
                if adapter.capabilities.templates else "")
        raise ApiError(422, f"{exc}{path}", "reply_rejected") from None
    except ReplyRejected as exc:
        raise ApiError(422, str(exc), "reply_rejected") from None
    try:
        message_id, duplicate = await store.enqueue_reply(reply, client_key=client_key)
    except UnknownConversation:
        raise ApiError(404, "no such conversation") from None
    if not duplicate:
        await request.app[K.ROUTING].agent_replied(conversation.id)
    view = await store.get_message(message_id)
    if view is None:
        raise ApiError(409, "the reply for this idempotency key is gone", "conflict")
    return json_response(ReplyAccepted(view, duplicate), 200 if duplicate else 202)


class DraftRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The text in the reply box (and the tag the agent chose, if any)."""

    text: Annotated[str, msgspec.Meta(max_length=100_000)] = ""
    tag: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


@routes.post("/api/v1/conversations/{id}/draft")
@operation(
    "Check a draft reply before sending it",
    {200: DraftAnswer, 403: None, 404: None},
    description="Nothing is stored or sent. check: the draft's length as the channel counts "
                "it (UTF-16 units on Telegram and SMS), its limit, whether it fits and the "
                "refusal the channel would give (a link to Amazon, over the limit), the "
                "messages a long Telegram reply goes out as (parts) and, for SMS, the "
                "segments Twilio bills with their encoding (GSM-7 or UCS-2) and the "
                "characters that forced UCS-2. reply_window: what a reply may be now. "
                "refused: the conversation takes no reply at all (answer_url: where to "
                "answer instead).",
    body=DraftRequest, path_params=CID,
)
async def check_draft(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), DraftRequest)
    conversation = await conversation_or_404(request, access="act")
    adapter = request.app[K.CHANNELS].get(conversation.channel_instance)
    refused = None
    if conversation.unreachable:
        refused = (f"the buyer cannot be reached on this channel until they write again: "
                   f"{conversation.unreachable}")
    elif conversation.replies_disabled:
        refused = f"replying is disabled: {conversation.replies_disabled}"
    if adapter is None:
        return json_response(DraftAnswer(None, None, refused, conversation.answer_url))
    now = time.time()
    draft = OutboundReply(
        reply_id="draft", conversation_id=conversation.id,
        channel_type=conversation.channel, channel_instance=conversation.channel_instance,
        thread_id=conversation.thread_id, recipient_handle=conversation.contact_handle,
        text=req.text, in_reply_to=conversation.last_inbound_provider_id,
        last_inbound_at=conversation.last_inbound_at, tag=req.tag)
    return json_response(DraftAnswer(
        adapter.check_draft(draft, now=now),
        adapter.reply_window(conversation.last_inbound_at, now), refused,
        conversation.answer_url))


OPERATOR_QUERY = q.Query((q.integer("limit", "entries, newest first", 1, 1000, 100),))


@routes.get("/api/v1/quarantine")
@operation("Inputs that could not be normalized", {200: QuarantineList}, role="supervisor",
           tag="operations", query=OPERATOR_QUERY)
async def list_quarantine(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    limit = OPERATOR_QUERY.parse(request).get("limit", 100)
    return json_response(QuarantineList(await request.app[K.STORE].list_quarantine(limit)))


@routes.get("/api/v1/dlq")
@operation("Replies that failed for good", {200: DeadLetterList}, role="supervisor",
           tag="operations", query=OPERATOR_QUERY)
async def list_dlq(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    limit = OPERATOR_QUERY.parse(request).get("limit", 100)
    return json_response(DeadLetterList(await request.app[K.STORE].list_dead_letters(limit)))


@routes.post("/api/v1/dlq/{message_id}/retry")
@operation("Send a failed reply again", {202: RetryQueued, 404: None, 409: None},
           role="supervisor", tag="operations", path_params={"message_id": "message id"})
async def retry_dlq(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    try:
        await request.app[K.STORE].retry_dead_letter(request.match_info["message_id"])
    except UnknownMessage:
        raise ApiError(404, "no such message") from None
    except NotRetryable:
        raise ApiError(409, "only a failed outbound reply can be retried",
                       "not_retryable") from None
    return json_response(RetryQueued("queued"), 202)
