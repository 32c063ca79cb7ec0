"""``GET /api/v1/conversations/{id}/survey-link``: the signed survey link of a conversation
whose channel cannot carry the survey, for the agent to paste where the buyer will see it (a
marketplace's own message form, a phone call's follow-up).

The link is computed again from what the survey sender recorded (round and expiry) rather than
stored: the same inputs sign to the same token (hub/survey_links.py).
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec
from aiohttp import web

from hub import keys as K
from hub.api import CID, conversation_or_404, json_response
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation

routes = web.RouteTableDef()


class SurveyLink(msgspec.Struct, frozen=True):
    """``state``: ``awaiting`` (the page takes an answer until ``expires_at``), ``answered``
    (``score`` is the answer), ``closed`` (expired unanswered). ``scale``: ``five`` or
    ``thumbs``."""

    url: str
    state: Literal["awaiting", "answered", "closed"]
    expires_at: float
    scale: str
    score: int | None = None


@routes.get("/api/v1/conversations/{id}/survey-link")
@operation(
    "The signed survey link of a conversation without a reply path",
    {200: SurveyLink, 404: None}, path_params=CID, tag="surveys",
    description="When a resolved conversation's channel cannot carry the survey (a no-reply "
                "sender, an unreachable buyer) and csat.link_secret and a public URL are "
                "configured, the survey is this link to the hub's page GET /survey/{token}, "
                "valid for csat.answer_hours and answerable once. 404: no such conversation "
                "(or not visible), links not configured, or its latest survey was not a link.")
async def survey_link(request: web.Request) -> web.Response:
    require_role(request, "agent")
    conversation = await conversation_or_404(request)
    signer = request.app.get(K.SURVEY_LINKS)
    if signer is None:
        raise ApiError(404, "survey links are not configured (csat.link_secret and "
                            "csat.public_url or hub.public_url)")
    store = request.app[K.STORE]
    k = store.keys_for(conversation.id)
    if k is None:
        raise ApiError(404, "no such conversation")
    values = await store.redis.hmget(k.conversation(conversation.id), "csat_via",
                                     "csat_round", "csat_until", "csat_state", "csat_scale",
                                     "csat_score")
    via, survey_round, until, state, scale, score = (
        v.decode() if isinstance(v, bytes) else v for v in values)
    if via != "link" or not survey_round or not until:
        raise ApiError(404, "this conversation has no survey link")
    expires_at = float(until)
    shown: Literal["awaiting", "answered", "closed"] = (
        "answered" if state == "answered"
        else "awaiting" if state == "sent" and expires_at >= time.time() else "closed")
    return json_response(SurveyLink(
        url=signer.url(conversation.id, survey_round, expires_at), state=shown,
        expires_at=expires_at, scale=scale or "five",
        score=int(score) if shown == "answered" and score and score.isdigit() else None))
