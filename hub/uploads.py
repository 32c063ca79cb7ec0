"""Files an agent uploaded for a reply: the attachment service of the app, and turning a
reply's upload ids into the attachments it carries."""

from __future__ import annotations

from aiohttp import web

from channels.models import Attachment
from hub import keys as K
from hub.errors import ApiError
from storage.attachments import AttachmentService


def service(request: web.Request) -> AttachmentService:
    attachments = request.app[K.STORE].attachments
    if attachments is None:
        raise ApiError(503, "this hub stores no attachments")
    return attachments


async def uploaded_attachments(request: web.Request, conversation_id: str,
                               ids: list[str], by: str) -> tuple[Attachment, ...]:
    """The reply's attachments from upload ids: each must be this conversation's, uploaded
    by the caller, and not expired (422 otherwise)."""
    store = request.app[K.STORE]
    k = store.keys_for(conversation_id)
    assert k is not None
    out: list[Attachment] = []
    for upload_id in ids:
        found = await service(request).load_upload(k, conversation_id, upload_id)
        if found is None or found[1] != by:
            raise ApiError(422, f"no upload {upload_id!r} of yours in this conversation (it "
                                "may have expired: upload it again)", "unknown_upload")
        out.append(found[0])
    return tuple(out)
