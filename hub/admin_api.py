"""Operators' API for data lifecycle: parse a quarantined input again, replay every dead
letter, erase a buyer (GDPR / LGPD). Registered in ``hub.app.build_app``."""

from __future__ import annotations

import msgspec
from aiohttp import web

from hub import keys as K
from hub.api import json_response
from hub.auth import require_role
from hub.erasure import ErasureReport, UnknownContact, erase_contact
from hub.errors import ApiError, ErrorDetail
from hub.openapi import operation
from hub.replay import NotRetryable, RetryResult, UnknownEntry, retry_quarantined
from storage.dead_letters import RetryAllResult, retry_all_dead_letters

routes = web.RouteTableDef()


class QuarantineRetried(msgspec.Struct, frozen=True):
    result: RetryResult


class QuarantineStillFailing(msgspec.Struct, frozen=True):
    """The error shape plus what happened: the input is kept under ``result.kept_as``."""

    error: ErrorDetail
    result: RetryResult


class Erased(msgspec.Struct, frozen=True):
    erased: ErasureReport


@routes.post("/api/v1/quarantine/{id}/retry")
@operation("Parse a quarantined input again (after a fix or an upgrade) and store it",
           {200: QuarantineRetried, 404: None, 409: None, 422: None},
           role="supervisor", tag="operations",
           description="200: stored (the entry is removed). 422: still unusable, kept with "
                       "the new error under a new id; besides `error` the body has `result` "
                       "(a RetryResult whose `kept_as` is that id). 409: cannot be retried "
                       "(the body was kept cut at 64 KiB, or its channel is gone).",
           path_params={"id": "quarantine entry id"})
async def retry_quarantine_entry(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    store = request.app[K.STORE]
    try:
        result = await retry_quarantined(store.quarantine_log, request.app[K.CHANNELS].adapters,
                                         request.app[K.INGESTOR], request.match_info["id"])
    except UnknownEntry:
        raise ApiError(404, "no such quarantine entry") from None
    except NotRetryable as exc:
        raise ApiError(409, exc.reason, "not_retryable") from None
    if result.outcome == "failed":
        detail = ErrorDetail("still_unusable", f"still cannot be parsed: {result.error}")
        return json_response(QuarantineStillFailing(detail, result), 422)
    return json_response(QuarantineRetried(result))


@routes.post("/api/v1/dlq/retry-all")
@operation("Queue every dead-lettered reply for sending again", {202: RetryAllResult},
           role="supervisor", tag="operations")
async def retry_all_dlq(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    result = await retry_all_dead_letters(request.app[K.STORE])
    return json_response(result, 202)


@routes.delete("/api/v1/contacts/{id}")
@operation("Erase a buyer: contact, conversations, messages, routing state",
           {200: Erased, 404: None}, role="admin", tag="operations",
           description="Writes an audit entry with counts and the actor only (no personal "
                       "data).", path_params={"id": "contact id"})
async def erase(request: web.Request) -> web.Response:
    principal = require_role(request, "admin")
    try:
        report = await erase_contact(request.app[K.STORE], request.app[K.ROUTING],
                                     request.match_info["id"], actor=principal.name)
    except UnknownContact:
        raise ApiError(404, "no such contact") from None
    return json_response(Erased(report))
