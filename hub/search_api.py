"""Search and tags: ``GET /api/v1/search`` and ``POST /api/v1/conversations/{id}/tags``.

Search reads the inverted index the store writes at ingest (storage/search.py) through the
conversation list's own script: the query's terms are predicates that must all hold (AND), the
caller's visibility is one more, and the page is cut inside Redis in activity order with the
list's keyset cursor. So an agent never sees, nor learns the existence of, a conversation
outside their scope, and a page costs what a filtered list page costs.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from hub import keys as K
from hub import query as q
from hub.api import conversation_or_404, decode_body, json_response
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from hub.paging import conversation_cursor, conversation_position
from hub.scope import visibility
from hub.views import ConversationList, list_items
from storage import search
from storage.sla import deadlines_of
from storage.store import UnknownConversation
from storage.tags import MAX_TAGS, TooManyTags, change_tags, normalise_tag

routes = web.RouteTableDef()

MAX_QUERY = 256
SEARCH_QUERY = q.Query((
    q.text("q", "words to find in the buyer's name or handle, an order id or message text "
                "(all of them must match; accents and case are ignored; Chinese and "
                "Japanese match on any two adjacent characters, or one)", MAX_QUERY),
    q.integer("limit", "page size", 1, 100, 20),
    q.text("cursor", "the next_cursor of the previous page", 512),
))


class TagChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Tags to add and to remove (removal wins when a tag is in both); each is case-folded
    and trimmed, 1..32 characters of letters, digits, and space - _ . inside."""

    add: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]],
                   msgspec.Meta(max_length=MAX_TAGS)] = []
    remove: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]],
                      msgspec.Meta(max_length=MAX_TAGS)] = []


class TagsAnswer(msgspec.Struct, frozen=True):
    """The conversation's tags after the change, in the order they were added."""

    conversation_id: str
    tags: list[str]


def _terms(raw: str) -> list[str]:
    terms = search.query_terms(raw)
    if not terms:
        raise ApiError(400, "q: no word to search for (words of two or more letters or "
                            "digits, or Chinese/Japanese characters)", "invalid_parameter")
    if len(terms) > search.MAX_QUERY_TERMS:
        raise ApiError(400, f"q: at most {search.MAX_QUERY_TERMS} words (Chinese and "
                            "Japanese count each pair of characters)", "invalid_parameter")
    return terms


@routes.get("/api/v1/search")
@operation(
    "Search conversations",
    {200: ConversationList},
    description="By buyer name or handle, order id and message text, most recently active "
                "first, keyset-paged like the conversation list (pass next_cursor back as "
                "cursor). Every word must match. An agent finds only what they may see "
                "(api.agent_scope).",
    query=SEARCH_QUERY,
)
async def search_conversations(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    query = SEARCH_QUERY.parse(request)
    if "q" not in query:
        raise ApiError(400, "q: required", "invalid_parameter")
    terms = _terms(query["q"])
    after = conversation_position(query["cursor"]) if "cursor" in query else None
    seen_by = await visibility(request.app[K.ROUTING].state, principal,
                               request.app[K.CONFIG].config.api.agent_scope)
    store = request.app[K.STORE]
    page = await store.page_conversations(
        limit=query.get("limit", 20), after=after, visibility=seen_by,
        required=[(search.TERM_FIELD, t) for t in terms])
    deadlines = await deadlines_of(store, [c.id for c in page.conversations])
    return json_response(ConversationList(list_items(page.conversations, deadlines),
                                          conversation_cursor(page.next)))


@routes.post("/api/v1/conversations/{id}/tags")
@operation(
    "Add and remove tags",
    {200: TagsAnswer, 403: None, 404: None, 422: None},
    description="Tags are case-folded and trimmed; at most 20 per conversation (422 past "
                "that, nothing changed). The list filter tag= finds them. An agent tags only "
                "conversations in their scope.",
    body=TagChange, path_params={"id": "conversation id"},
)
async def post_tags(request: web.Request) -> web.Response:
    require_role(request, "agent")
    change = decode_body(await request.read(), TagChange)
    try:
        add = list(dict.fromkeys(normalise_tag(t) for t in change.add))
        remove = list(dict.fromkeys(normalise_tag(t) for t in change.remove))
    except ValueError as exc:
        raise ApiError(400, f"invalid request: {exc}", "invalid_body") from None
    conversation = await conversation_or_404(request, access="act")
    try:
        tags = await change_tags(request.app[K.STORE], conversation.id, add, remove)
    except UnknownConversation:
        raise ApiError(404, "no such conversation") from None
    except TooManyTags:
        raise ApiError(422, f"a conversation has at most {MAX_TAGS} tags; remove some "
                            "first", "too_many_tags") from None
    return json_response(TagsAnswer(conversation.id, tags))
