"""Operators' API for fetch after notify: what waits to be fetched, what failed and why, and a
retry of a failed fetch once its cause is fixed (credentials renewed, the adapter fixed).
Registered in ``hub.app.build_app``."""

from __future__ import annotations

import msgspec
from aiohttp import web

from channels.services.fetches import (
    FETCH_STATES,
    FetchBacklog,
    FetchEntry,
    NotFailed,
    UnknownFetch,
)
from hub import keys as K
from hub import query as q
from hub.api import json_response
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from hub.paging import fetch_cursor, fetch_position
from hub.views import RetryQueued

routes = web.RouteTableDef()


class FetchList(msgspec.Struct, frozen=True):
    """One page of fetch entries, newest notification first; pass ``next_cursor`` as
    ``cursor`` for the next (null: last page). ``backlog``: the counts of the instance asked
    for, or of every instance that ever queued a fetch."""

    fetches: list[FetchEntry]
    backlog: list[FetchBacklog]
    next_cursor: str | None


FETCH_QUERY = q.Query((
    q.integer("limit", "page size", 1, 200, 50),
    q.text("cursor", "the next_cursor of the previous page", 512),
    q.matching("instance", "only this channel instance", "[A-Za-z0-9_-]{1,64}"),
    q.choice("state", "only fetches in this state", FETCH_STATES),
))


@routes.get("/api/v1/fetches")
@operation("Fetch-after-notify entries (queued, retrying, failed) and backlog per instance",
           {200: FetchList}, role="supervisor", tag="operations", query=FETCH_QUERY,
           description="A queued entry is waiting for its fetch or being fetched now; a "
                       "retrying one failed and waits for its next attempt; a failed one is "
                       "kept with `last_error` until retried (POST .../retry).")
async def list_fetches(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    params = FETCH_QUERY.parse(request)
    limit: int = params.get("limit", 50)
    instance: str | None = params.get("instance")
    after = fetch_position(params["cursor"]) if "cursor" in params else None
    queue = request.app[K.FETCHES]
    page = await queue.entries(instance, params.get("state"), limit=limit + 1, after=after)
    more, page = len(page) > limit, page[:limit]
    instances = [instance] if instance is not None else await queue.instances()
    backlog = [await queue.backlog(i) for i in instances]
    return json_response(FetchList(page, backlog,
                                   fetch_cursor(page[-1].id) if more and page else None))


@routes.post("/api/v1/fetches/{id}/retry")
@operation("Fetch a failed fetch-after-notify entry again", {202: RetryQueued, 404: None,
                                                             409: None},
           role="supervisor", tag="operations", path_params={"id": "fetch entry id"},
           description="202: queued again with its attempts reset. 409: the entry is queued "
                       "or retrying, not failed.")
async def retry_fetch(request: web.Request) -> web.Response:
    require_role(request, "supervisor")
    try:
        await request.app[K.FETCHES].retry(request.match_info["id"])
    except UnknownFetch:
        raise ApiError(404, "no such fetch entry") from None
    except NotFailed:
        raise ApiError(409, "only a failed fetch can be retried; this one is queued or "
                            "retrying", "not_retryable") from None
    return json_response(RetryQueued("queued"), 202)
