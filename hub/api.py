"""The agent-facing REST API (``/api/v1``); health, readiness and metrics are in ``hub.health``."""

from __future__ import annotations

import time
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web

from channels.errors import ReplyRejected
from hub import keys as K
from hub.auth import require_role
from hub.models import Conversation, OutboundReply
from hub.openapi import build_openapi
from storage import keys as storage_keys
from storage.store import NotRetryable, UnknownConversation, UnknownMessage

routes = web.RouteTableDef()


class ReplyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    author: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    client_key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


_encoder = msgspec.json.Encoder()
T = TypeVar("T")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status,
                        content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _http_error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=_encoder.encode({"error": message}).decode(),
                content_type="application/json")


def decode_body(body: bytes, type_: type[T]) -> T:
    """The request body as ``type_``, or a 400 naming what is wrong."""
    try:
        return msgspec.json.decode(body, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _http_error(web.HTTPBadRequest, f"invalid request: {exc}") from None


async def conversation_or_404(request: web.Request) -> Conversation:
    conversation = await request.app[K.STORE].get_conversation(request.match_info["id"])
    if conversation is None:
        raise _http_error(web.HTTPNotFound, "no such conversation")
    return conversation


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi())


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f'{{"error": "{name} must be an integer"}}',
                                 content_type="application/json") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f'{{"error": "{name} must be in {low}..{high}"}}',
                                 content_type="application/json")
    return value


@routes.get("/api/v1/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    require_role(request, "agent")
    limit = _int_param(request, "limit", 50, 1, 200)
    status = request.query.get("status")
    channel = request.query.get("channel")
    before_raw = request.query.get("before")
    try:
        before = float(before_raw) if before_raw is not None else None
    except ValueError:
        return error(400, "before must be a UNIX timestamp")
    store = request.app[K.STORE]
    filtered = bool(status or channel)
    rows = await store.list_conversations(limit=limit * 4 if filtered else limit, before=before)
    if status:
        rows = [c for c in rows if c.status == status]
    if channel:
        rows = [c for c in rows if channel in (c.channel, c.channel_instance)]
    return json_response({"conversations": rows[:limit]})


@routes.get("/api/v1/conversations/{id}")
async def get_conversation(request: web.Request) -> web.Response:
    require_role(request, "agent")
    conversation = await conversation_or_404(request)
    messages = await request.app[K.STORE].get_messages(conversation.id)
    return json_response({"conversation": conversation, "messages": messages})


@routes.post("/api/v1/conversations/{id}/replies")
async def post_reply(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    store = request.app[K.STORE]
    req = decode_body(await request.read(), ReplyRequest)
    conversation = await conversation_or_404(request)
    adapter = request.app[K.CHANNELS].get(conversation.channel_instance)
    if adapter is None:
        return error(409, f"channel instance {conversation.channel_instance} is not configured")
    reply_id = storage_keys.new_id(int(conversation.id.split(".", 1)[0]))
    reply = OutboundReply(
        reply_id=reply_id,
        conversation_id=conversation.id,
        channel_type=conversation.channel,
        channel_instance=conversation.channel_instance,
        thread_id=conversation.thread_id,
        recipient_handle=conversation.contact_handle,
        text=req.text,
        author=req.author or principal.name,
        in_reply_to=conversation.last_inbound_provider_id,
        last_inbound_at=conversation.last_inbound_at,
    )
    try:
        adapter.check_reply(reply, now=time.time())
    except ReplyRejected as exc:
        return error(422, str(exc))
    client_key = req.client_key or request.headers.get("Idempotency-Key")
    try:
        message_id, duplicate = await store.enqueue_reply(reply, client_key=client_key)
    except UnknownConversation:
        return error(404, "no such conversation")
    if not duplicate:
        await request.app[K.ROUTING].agent_replied(conversation.id)
    view = await store.get_message(message_id)
    return json_response({"message": view, "duplicate": duplicate}, 200 if duplicate else 202)


@routes.get("/api/v1/quarantine")
async def list_quarantine(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    limit = _int_param(request, "limit", 100, 1, 1000)
    return json_response({"entries": await request.app[K.STORE].list_quarantine(limit)})


@routes.get("/api/v1/dlq")
async def list_dlq(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    limit = _int_param(request, "limit", 100, 1, 1000)
    return json_response({"entries": await request.app[K.STORE].list_dead_letters(limit)})


@routes.post("/api/v1/dlq/{message_id}/retry")
async def retry_dlq(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    try:
        await request.app[K.STORE].retry_dead_letter(request.match_info["message_id"])
    except UnknownMessage:
        return error(404, "no such message")
    except NotRetryable:
        return error(409, "only a failed outbound reply can be retried")
    return json_response({"status": "queued"}, 202)
