"""Operators' API for data lifecycle: parse a quarantined input again, replay every dead
letter, erase a buyer (GDPR / LGPD). Registered in ``hub.app.build_app``."""

from __future__ import annotations

from aiohttp import web

from hub import keys as K
from hub.api import error, json_response
from hub.auth import require_role
from hub.erasure import UnknownContact, erase_contact
from hub.replay import NotRetryable, UnknownEntry, retry_quarantined
from storage.dead_letters import retry_all_dead_letters

routes = web.RouteTableDef()


@routes.post("/api/v1/quarantine/{id}/retry")
async def retry_quarantine_entry(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    store = request.app[K.STORE]
    try:
        result = await retry_quarantined(store.quarantine_log, request.app[K.CHANNELS].adapters,
                                         request.app[K.INGESTOR], request.match_info["id"])
    except UnknownEntry:
        return error(404, "no such quarantine entry")
    except NotRetryable as exc:
        return error(409, exc.reason)
    if result.outcome == "failed":
        return json_response({"error": f"still cannot be parsed: {result.error}",
                              "result": result}, 422)
    return json_response({"result": result})


@routes.post("/api/v1/dlq/retry-all")
async def retry_all_dlq(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    result = await retry_all_dead_letters(request.app[K.STORE])
    return json_response(result, 202)


@routes.delete("/api/v1/contacts/{id}")
async def erase(request: web.Request) -> web.Response:
    """Erase a buyer: contact, conversations, messages; an audit entry without personal data."""
    principal = require_role(request, "admin")
    try:
        report = await erase_contact(request.app[K.STORE], request.app[K.ROUTING],
                                     request.match_info["id"], actor=principal.name)
    except UnknownContact:
        return error(404, "no such contact")
    return json_response({"erased": report})
