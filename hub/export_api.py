"""Export one conversation as evidence for a marketplace dispute (Amazon A-to-z, Mercado Libre
mediation): JSON, or a printable HTML page.

Every message with its channel, direction, author, times and delivery state, and the names of
its attachments. Private notes are internal and never exported. Every piece of text in the
HTML page, the buyer's and the agents' alike, is HTML-escaped and nothing in it is a link; the
page is served as a download under a Content-Security-Policy that allows no script, no image
and no request at all, only its own inline style.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Literal

import msgspec
from aiohttp import web

from hub import keys as K
from hub import query as q
from hub.api import conversation_or_404, principal_of
from hub.auth import require_role
from hub.openapi import BINARY, operation
from storage.records import Conversation, MessageView

routes = web.RouteTableDef()

EXPORT_MAX_MESSAGES = 20_000
CSP = "default-src 'none'; style-src 'unsafe-inline'"
_PAGE = 500


class ExportedMessage(msgspec.Struct, frozen=True):
    """A message as evidence: who wrote it, where, when and what became of it."""

    id: str
    seq: int
    direction: Literal["in", "out"]
    channel: str
    channel_instance: str
    author: str | None
    text: str
    created_at: float
    sent_at: float | None
    status: str
    status_at: float | None
    error: str | None
    attachments: list[str]
    provider_message_id: str | None
    edited_at: float | None = None
    original_text: str | None = None
    moderation: str | None = None


class ConversationExport(msgspec.Struct, frozen=True):
    """``truncated``: the conversation has more than 20,000 messages; the first are here."""

    conversation: Conversation
    messages: list[ExportedMessage]
    exported_at: float
    exported_by: str
    truncated: bool = False


EXPORT_QUERY = q.Query((q.choice("format", "json (default) or a printable html page",
                                 ("json", "html")),))


def exported(message: MessageView) -> ExportedMessage:
    author = (message.author if message.direction == "out"
              else message.sender_name or message.sender_handle)
    return ExportedMessage(
        id=message.id, seq=message.seq, direction=message.direction, channel=message.channel,
        channel_instance=message.channel_instance, author=author, text=message.text,
        created_at=message.created_at, sent_at=message.sent_at, status=message.status,
        status_at=message.status_at, error=message.error,
        attachments=[a.name for a in message.attachments],
        provider_message_id=message.provider_message_id, edited_at=message.edited_at,
        original_text=message.original_text, moderation=message.moderation)


async def build_export(request: web.Request, conversation: Conversation) -> ConversationExport:
    store = request.app[K.STORE]
    messages: list[ExportedMessage] = []
    after: int | None = None
    truncated = False
    while True:
        page = await store.page_messages(conversation.id, limit=_PAGE, after_seq=after)
        messages += [exported(m) for m in page.messages]
        if page.next_seq is None:
            break
        if len(messages) >= EXPORT_MAX_MESSAGES:
            truncated = True
            break
        after = page.next_seq
    return ConversationExport(conversation, messages[:EXPORT_MAX_MESSAGES], time.time(),
                              principal_of(request).name, truncated)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.3em; margin: 0 0 .4em; }
table.facts td { padding: 0 1em .2em 0; vertical-align: top; }
.msg { border: 1px solid #ccc; border-radius: 4px; padding: .6em .8em; margin: .8em 0;
       page-break-inside: avoid; }
.msg.out { background: #f3f7ff; }
.meta { color: #555; font-size: .85em; margin-bottom: .3em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; unicode-bidi: plaintext; }
.files, .was { color: #444; font-size: .85em; margin-top: .3em; }
@media print { body { margin: 0; } .msg { border-color: #999; } }
"""


def render_html(export: ConversationExport) -> str:
    """The printable page; every value goes through ``html.escape`` (quotes included)."""
    c = export.conversation
    facts = [("Conversation", c.id), ("Channel", f"{c.channel} ({c.channel_instance})"),
             ("Buyer", c.contact_name or c.contact_handle), ("Buyer handle", c.contact_handle),
             ("Language", c.language or ""), ("Market", c.market or ""),
             ("Opened", _when(c.created_at)), ("Status", c.work_status),
             ("Exported", f"{_when(export.exported_at)} by {export.exported_by}")]
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
           f"<title>Conversation {_e(c.id)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>Conversation {_e(c.id)}</h1>", '<table class="facts">']
    out += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts]
    out.append("</table>")
    if export.truncated:
        out.append(f"<p>Only the first {len(export.messages)} messages are shown.</p>")
    for m in export.messages:
        who = "Buyer" if m.direction == "in" else "Agent"
        meta = [f"#{m.seq}", f"{who}: {m.author or ''}", f"{m.channel} ({m.channel_instance})",
                f"created {_when(m.created_at)}"]
        if m.sent_at is not None:
            meta.append(f"sent {_when(m.sent_at)}")
        meta.append(f"state {m.status}" + (f" since {_when(m.status_at)}"
                                             if m.status_at else ""))
        if m.error:
            meta.append(f"error: {m.error}")
        if m.moderation:
            meta.append(f"moderation: {m.moderation}")
        out.append(f'<div class="msg {_e(m.direction)}">')
        out.append(f'<div class="meta">{" · ".join(_e(x) for x in meta)}</div>')
        out.append(f'<div class="text">{_e(m.text)}</div>')
        if m.original_text is not None:
            out.append(f'<div class="was">edited {_e(_when(m.edited_at))}; first sent as: '
                       f'<span class="text">{_e(m.original_text)}</span></div>')
        if m.attachments:
            out.append(f'<div class="files">Attachments: '
                       f'{", ".join(_e(name) for name in m.attachments)}</div>')
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


@routes.get("/api/v1/conversations/{id}/export")
@operation(
    "Export the conversation (JSON or a printable HTML page) as evidence",
    {200: BINARY, 404: None},
    description="format=json (default) answers a ConversationExport; format=html a page to "
                "print or save as PDF. Both are downloads (Content-Disposition: attachment). "
                "Messages come with channel, direction, author, times, delivery state and "
                "attachment names; private notes are not exported. The page escapes every "
                "text and is served with Content-Security-Policy: default-src 'none'; "
                "style-src 'unsafe-inline'.",
    query=EXPORT_QUERY, path_params={"id": "conversation id"},
)
async def export_conversation(request: web.Request) -> web.Response:
    require_role(request, "agent")
    fmt = EXPORT_QUERY.parse(request).get("format", "json")
    conversation = await conversation_or_404(request)
    export = await build_export(request, conversation)
    # Our ids are digits, a dot and hex (storage.keys): safe in a header as they are.
    filename = f"conversation-{conversation.id}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if fmt == "html":
        headers["Content-Security-Policy"] = CSP
        return web.Response(text=render_html(export), content_type="text/html",
                            charset="utf-8", headers=headers)
    return web.Response(body=msgspec.json.encode(export), content_type="application/json",
                        headers=headers)
