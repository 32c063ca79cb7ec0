"""WhatsApp Cloud API webhook bodies, built field for field from Meta's documented shapes
(CHANNELS.md §4: the ``messages`` change with ``metadata``, ``contacts``, ``messages[]`` and
``statuses[]``). Written for these tests; nothing is copied from another project."""

from __future__ import annotations

import time
from typing import Any

from tests.channels.whatsapp.graph import DISPLAY_NUMBER, PHONE_NUMBER_ID

WABA_ID = "102290129340398"
BUYER_MX = "5215512345678"      # +52 Mexico (mobile, with the old "1")
BUYER_BR = "5511987654321"      # +55 Brazil
BUYER_ES = "34612345678"        # +34 Spain
# The buyer wrote two minutes ago, by Meta's clock: reply windows count from this.
TS = str(int(time.time()) - 120)


def envelope(value: dict[str, Any], *, field: str = "messages") -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{
        "id": WABA_ID, "changes": [{"field": field, "value": value}]}]}


def metadata(phone_number_id: str = PHONE_NUMBER_ID) -> dict[str, str]:
    return {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id}


def messages(*items: dict[str, Any], contacts: list[dict[str, Any]] | None = None,
             phone_number_id: str = PHONE_NUMBER_ID) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": metadata(phone_number_id), "messages": list(items)}
    if contacts is not None:
        value["contacts"] = contacts
    return envelope(value)


def contact(wa_id: str, name: str) -> dict[str, Any]:
    return {"profile": {"name": name}, "wa_id": wa_id}


def message(wa_id: str, wamid: str, kind: str, content: dict[str, Any] | None = None, *,
            timestamp: str = TS, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": timestamp, "type": kind}
    if content is not None:
        body[kind] = content
    body.update(extra)
    return body


def text(wa_id: str, wamid: str, body: str, name: str | None = None, *,
         timestamp: str = TS) -> dict[str, Any]:
    return messages(message(wa_id, wamid, "text", {"body": body}, timestamp=timestamp),
                    contacts=[contact(wa_id, name)] if name else None)


def image(wa_id: str, wamid: str, media_id: str, *, caption: str | None = None,
          mime: str = "image/jpeg", sha256: str | None = None,
          name: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"id": media_id, "mime_type": mime}
    if sha256 is not None:
        content["sha256"] = sha256
    if caption is not None:
        content["caption"] = caption
    return messages(message(wa_id, wamid, "image", content),
                    contacts=[contact(wa_id, name)] if name else None)


def document(wa_id: str, wamid: str, media_id: str, filename: str) -> dict[str, Any]:
    return messages(message(wa_id, wamid, "document", {
        "id": media_id, "mime_type": "application/pdf", "filename": filename}))


def status(wamid: str, state: str, *, recipient: str = BUYER_MX, timestamp: str = TS,
           errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid, "status": state, "timestamp": timestamp, "recipient_id": recipient}
    if state in ("sent", "delivered", "read"):
        item["conversation"] = {"id": "CONVERSATION_ID", "expiration_timestamp": "1767312000",
                                "origin": {"type": "service"}}
        item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
    if errors is not None:
        item["errors"] = errors
    return item


def statuses(*items: dict[str, Any]) -> dict[str, Any]:
    return envelope({"messaging_product": "whatsapp", "metadata": metadata(),
                     "statuses": list(items)})


def failure(code: int, title: str, details: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "title": title, "message": title,
                             "href": "https://developers.facebook.com/docs/whatsapp/"
                                     "cloud-api/support/error-codes/"}
    if details is not None:
        error["error_data"] = {"details": details}
    return error
