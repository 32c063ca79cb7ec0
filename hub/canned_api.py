"""Canned replies: supervisors manage them, agents list them and pick them on a conversation,
in its language and with its variables filled (storage/canned.py)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from hub import keys as K
from hub import query as q
from hub.api import conversation_or_404, decode_body, json_response, principal_of
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from storage.canned import (
    VARIABLES,
    CannedReplies,
    CannedReply,
    Language,
    Name,
    Shortcut,
    ShortcutTaken,
    Text,
    TooMany,
    UnknownVariable,
    fill,
)
from storage.records import Conversation

routes = web.RouteTableDef()
RID = {"id": "canned reply id"}
# How far back the newest order id the channel gave is looked for.
ORDER_LOOKBACK_MESSAGES = 200


class CannedRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``text`` may use {buyer_name}, {order_id}, {tracking_number} and {agent_name}; any
    other {name} is refused."""

    name: Name
    language: Language
    text: Text
    shortcut: Shortcut | None = None


class CannedList(msgspec.Struct, frozen=True):
    replies: list[CannedReply]
    variables: list[str]


class CannedDeleted(msgspec.Struct, frozen=True):
    deleted: bool


class FilledReply(msgspec.Struct, frozen=True):
    """``text`` ready to send; ``missing``: variables with no value here, left in the text as
    ``[[name]]`` for the agent to complete; ``template`` the text as saved."""

    id: str
    name: str
    language: str
    shortcut: str | None
    text: str
    missing: list[str]
    template: str


class FilledList(msgspec.Struct, frozen=True):
    """``language``: the conversation's; ``fallback``: the default language used for a name
    with no text in it."""

    language: str | None
    fallback: str
    replies: list[FilledReply]


def canned(request: web.Request) -> CannedReplies:
    return CannedReplies(request.app[K.STORE].redis)


LIST_QUERY = q.Query((q.value_list("language", "only these languages (ISO 639-1)",
                                   "[a-z]{2}"),))


@routes.get("/api/v1/canned-replies")
@operation("Canned replies, by name and language", {200: CannedList}, tag="canned replies",
           query=LIST_QUERY)
async def list_canned(request: web.Request) -> web.Response:
    require_role(request, "agent")
    languages = set(LIST_QUERY.parse(request).get("language", ()))
    replies = [c for c in await canned(request).all()
               if not languages or c.language in languages]
    return json_response(CannedList(replies, list(VARIABLES)))


async def _save(request: web.Request, reply_id: str | None) -> CannedReply:
    principal = require_role(request, "supervisor")
    req = decode_body(await request.read(), CannedRequest)
    if not req.text.strip() or not req.name.strip():
        raise ApiError(400, "invalid request: name and text may not be blank", "invalid_body")
    try:
        return await canned(request).save(name=req.name, language=req.language, text=req.text,
                                          shortcut=req.shortcut, by=principal.name,
                                          reply_id=reply_id)
    except UnknownVariable as exc:
        raise ApiError(400, f"invalid request: {exc}", "unknown_variable") from None
    except ShortcutTaken as exc:
        raise ApiError(409, str(exc), "shortcut_taken") from None
    except TooMany as exc:
        raise ApiError(409, str(exc), "too_many") from None


@routes.post("/api/v1/canned-replies")
@operation("Create a canned reply", {201: CannedReply, 409: None}, role="supervisor",
           tag="canned replies", body=CannedRequest,
           description="400 unknown_variable for a {name} the inbox cannot fill; 409 when the "
                       "shortcut is taken in that language.")
async def create_canned(request: web.Request) -> web.Response:
    return json_response(await _save(request, None), 201)


async def _existing(request: web.Request) -> str:
    reply_id = request.match_info["id"]
    if len(reply_id) > 64 or await canned(request).get(reply_id) is None:
        raise ApiError(404, "no such canned reply")
    return reply_id


@routes.put("/api/v1/canned-replies/{id}")
@operation("Replace a canned reply", {200: CannedReply, 404: None, 409: None},
           role="supervisor", tag="canned replies", body=CannedRequest, path_params=RID)
async def replace_canned(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    return json_response(await _save(request, await _existing(request)))


@routes.delete("/api/v1/canned-replies/{id}")
@operation("Delete a canned reply", {200: CannedDeleted, 404: None}, role="supervisor",
           tag="canned replies", path_params=RID)
async def delete_canned(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    reply_id = await _existing(request)
    return json_response(CannedDeleted(await canned(request).delete(reply_id)))


async def _order_id(request: web.Request, conversation: Conversation) -> str | None:
    """The newest order id a channel gave with the buyer's messages (marketplaces do)."""
    store = request.app[K.STORE]
    page = await store.page_messages(conversation.id, limit=ORDER_LOOKBACK_MESSAGES,
                                     descending=True)
    for message in page.messages:
        if message.direction != "in":
            continue
        inbound = await store.load_inbound(message.id)
        if inbound is not None and inbound.hints.order_id:
            return inbound.hints.order_id
    return None


@routes.get("/api/v1/conversations/{id}/canned-replies")
@operation(
    "Canned replies for this conversation, in its language, variables filled",
    {200: FilledList, 404: None}, tag="canned replies", path_params={"id": "conversation id"},
    description="Each name in the conversation's language, else in the default language "
                "(routing.default_language, else en). {buyer_name} is the buyer's name, "
                "{order_id} the newest order id the channel gave, {agent_name} the caller's "
                "name; the hub stores no tracking numbers, so {tracking_number} is always "
                "left as the [[tracking_number]] marker and listed in missing.",
)
async def conversation_canned(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    conversation = await conversation_or_404(request)
    engine = request.app[K.ROUTING]
    fallback = engine.cfg.default_language or "en"
    language = conversation.language
    chosen: dict[str, CannedReply] = {}
    replies = await canned(request).all()
    # The default language first, so the conversation's own language overwrites it per name.
    for wanted in (fallback, language):
        chosen.update({r.name: r for r in replies if r.language == wanted})
    if not chosen:
        return json_response(FilledList(language, fallback, []))
    agent = await engine.agent(principal_of(request).name)
    values = {"buyer_name": conversation.contact_name,
              "order_id": await _order_id(request, conversation),
              "tracking_number": None,
              "agent_name": (agent.name if agent is not None and agent.name
                             else principal.name)}
    out = []
    for reply in sorted(chosen.values(), key=lambda c: c.name):
        text, missing = fill(reply.text, values)
        out.append(FilledReply(reply.id, reply.name, reply.language, reply.shortcut, text,
                               missing, reply.text))
    return json_response(FilledList(language, fallback, out))

