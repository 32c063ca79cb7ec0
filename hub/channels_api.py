"""Operators' view of channel health: ``GET /api/v1/channels`` and ``/api/v1/channels/{instance}``
(admin). The same records ``inboxhub channels status`` prints (hub/channel_health.py)."""

from __future__ import annotations

from aiohttp import web

from hub import keys as K
from hub.api import json_response
from hub.auth import require_role
from hub.channel_health import ChannelHealth, ChannelHealthList
from hub.errors import ApiError
from hub.openapi import operation

routes = web.RouteTableDef()

_ABOUT = ("Figures are summed over every hub process (each flushes every "
          "hub.health_flush_seconds); alerts are what the evaluators last decided (every "
          "hub.health_evaluate_seconds). Times are UNIX seconds. token and fetch_backlog are "
          "null where they do not apply; no secret is ever included.")


@routes.get("/api/v1/channels")
@operation("Every configured channel instance with its health", {200: ChannelHealthList},
           role="admin", tag="operations", description=_ABOUT)
async def list_channels(request: web.Request) -> web.Response:
    require_role(request, "admin")
    return json_response(ChannelHealthList(await request.app[K.CHANNEL_HEALTH].records()))


@routes.get("/api/v1/channels/{instance}")
@operation("One channel instance's health", {200: ChannelHealth, 404: None}, role="admin",
           tag="operations", description=_ABOUT,
           path_params={"instance": "channel instance name ([[channels]] name)"})
async def get_channel(request: web.Request) -> web.Response:
    require_role(request, "admin")
    found = await request.app[K.CHANNEL_HEALTH].records(request.match_info["instance"])
    if not found:
        raise ApiError(404, "no such channel instance")
    return json_response(found[0])
