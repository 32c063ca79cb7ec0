"""Attachments through the API: an agent uploads a file for a reply, anyone who may read a
conversation downloads its files.

Downloads are always ``Content-Disposition: attachment`` with ``X-Content-Type-Options:
nosniff``, a sandboxing CSP and a Content-Type from a short list of types no browser runs
(anything else is ``application/octet-stream``): a buyer's file is never rendered inline in
the hub's origin, whatever its bytes. Out of scope a download is a 404, like the conversation.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated

import msgspec
from aiohttp import web

from channels.attachments import AttachmentRefused, safe_name
from channels.base import read_body
from channels.errors import PayloadTooLarge
from channels.models import Attachment
from hub import keys as K
from hub import query as q
from hub.api import conversation_or_404, gate, json_response
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import BINARY, operation
from hub.uploads import service
from storage import keys as storage_keys

routes = web.RouteTableDef()

# Types served under their own name: none of them is executed or rendered as a document by a
# browser opening a download (no HTML, SVG, XML, JavaScript).
SAFE_TYPES = frozenset({
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "application/pdf",
    "audio/ogg", "audio/mpeg", "audio/amr", "audio/mp4", "video/mp4", "video/3gpp",
    "application/zip", "text/plain",
})

UPLOAD_QUERY = q.Query((q.text("name", "the file's name, shown to the buyer", 255),))


class Uploaded(msgspec.Struct, frozen=True):
    """Pass ``id`` in the reply's ``attachments`` (within ``attachments.upload_ttl_seconds``)."""

    id: str
    attachment: Attachment


@routes.post("/api/v1/conversations/{id}/attachments")
@operation(
    "Upload a file for a reply in this conversation",
    {201: Uploaded, 403: None, 404: None, 409: None, 413: None, 415: None, 422: None},
    description="The raw body is the file. Checked at once against the conversation's "
                "channel (size, and the type its bytes show, whatever Content-Type says): "
                "413 too large, 415 a type the channel does not take, 422 the channel takes "
                "no attachments. Send the returned id in the reply's attachments.",
    query=UPLOAD_QUERY, path_params={"id": "conversation id"},
    raw_body="application/octet-stream",
)
async def upload(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    name = UPLOAD_QUERY.parse(request).get("name", "attachment")
    conversation = await conversation_or_404(request, access="act")
    adapter = request.app[K.CHANNELS].get(conversation.channel_instance)
    if adapter is None:
        raise ApiError(409, f"channel instance {conversation.channel_instance} is not "
                            "configured", "channel_unavailable")
    policy = adapter.attachment_policy
    if not adapter.capabilities.attachments or policy.max_count == 0:
        raise ApiError(422, f"{adapter.type_name} does not accept attachments",
                       "attachment_refused")
    try:
        data = await read_body(request, policy.max_bytes)
        content_type = policy.check(data, name)
    except PayloadTooLarge as exc:
        raise ApiError(413, f"{exc.reason} (this channel's attachment limit)",
                       "attachment_refused") from None
    except AttachmentRefused as exc:
        raise ApiError(exc.status, exc.reason, "attachment_refused") from None
    store = request.app[K.STORE]
    k = store.keys_for(conversation.id)
    assert k is not None
    attachments = service(request)
    attachment = await attachments.put(data, name=name, content_type=content_type)
    upload_id = storage_keys.new_id(k.partition)
    await attachments.register_upload(
        k, conversation.id, upload_id, attachment, by=principal.name,
        ttl_seconds=request.app[K.CONFIG].config.attachments.upload_ttl_seconds)
    return json_response(Uploaded(upload_id, attachment), 201)


def content_disposition(name: str) -> str:
    """RFC 6266 ``attachment`` with an ASCII fallback and the UTF-8 name (RFC 5987)."""
    clean = safe_name(name)
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;%' else "_"
                       for ch in clean)
    encoded = urllib.parse.quote(clean, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def download_type(content_type: str) -> str:
    if content_type == "text/plain":
        return "text/plain; charset=utf-8"
    return content_type if content_type in SAFE_TYPES else "application/octet-stream"


Index = Annotated[int, msgspec.Meta(ge=0, le=1000)]


@routes.get("/api/v1/messages/{id}/attachments/{n}")
@operation(
    "Download a message's attachment",
    {200: BINARY, 404: None},
    description="Always as a download (Content-Disposition: attachment), never rendered "
                "inline; n counts from 0 in the message's attachments. 404 for a message "
                "the caller may not read, a refused attachment, or a file that was erased.",
    path_params={"id": "message id", "n": "attachment index (0-based)"},
)
async def download(request: web.Request) -> web.StreamResponse:
    require_role(request, "agent")
    raw_n = request.match_info["n"]
    if not raw_n.isascii() or not raw_n.isdigit() or len(raw_n) > 4:
        raise ApiError(404, "no such attachment")
    view = await request.app[K.STORE].get_message(request.match_info["id"])
    if view is None:
        raise ApiError(404, "no such message")
    await gate(request).read(view.conversation_id)
    n = int(raw_n)
    if n >= len(view.attachments):
        raise ApiError(404, "no such attachment")
    attachment = view.attachments[n]
    if attachment.storage_ref is None:
        raise ApiError(404, f"this attachment was not kept: {attachment.refused or 'no file'}",
                       "attachment_refused")
    data = await service(request).get(attachment.storage_ref)
    if data is None:
        raise ApiError(404, "the file is no longer stored")
    return web.Response(body=data, headers={
        "Content-Type": download_type(attachment.content_type),
        "Content-Disposition": content_disposition(attachment.name),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    })
