"""Webhook bodies as Meta documents them for Messenger (``object: page``) and Instagram
(``object: instagram``), written field for field from CHANNELS.md §5; nothing here is copied
from another project. ``json.dumps`` with its default ``ensure_ascii`` escapes non-ASCII as
``\\uXXXX``, which is how Meta transmits (and signs) them."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.channels.messenger.provider import IG_ACCOUNT_ID, PAGE_ID

APP_ID = 1517776481860111
# An hour ago, on a whole minute, in ms: the hub counts a conversation's reply window from
# the provider's timestamp of the buyer's message, so the kit's sends need a recent one.
T0 = (int(time.time()) // 60 - 60) * 60_000


def owner(kind: str) -> str:
    return PAGE_ID if kind == "page" else IG_ACCOUNT_ID


def envelope(events: list[dict[str, Any]], kind: str = "page",
             at: int = T0) -> dict[str, Any]:
    return {"object": kind, "entry": [{"id": owner(kind), "time": at, "messaging": events}]}


def message(mid: str, sender: str, text: str | None, *, at: int = T0, kind: str = "page",
            **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"mid": mid, **fields}
    if text is not None:
        body["text"] = text
    return {"sender": {"id": sender}, "recipient": {"id": owner(kind)}, "timestamp": at,
            "message": body}


def echo(mid: str, buyer: str, text: str, *, at: int = T0, kind: str = "page") -> dict[str, Any]:
    return {"sender": {"id": owner(kind)}, "recipient": {"id": buyer}, "timestamp": at,
            "message": {"is_echo": True, "app_id": APP_ID, "metadata": "inboxhub",
                        "mid": mid, "text": text}}


def delivery(buyer: str, mids: list[str] | None, watermark: int, *,
             kind: str = "page") -> dict[str, Any]:
    body: dict[str, Any] = {"watermark": watermark}
    if mids is not None:
        body["mids"] = mids
    return {"sender": {"id": buyer}, "recipient": {"id": owner(kind)}, "delivery": body}


def read(buyer: str, *, watermark: int | None = None, mid: str | None = None,
         kind: str = "page", at: int = T0) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if watermark is not None:
        body["watermark"] = watermark
    if mid is not None:
        body["mid"] = mid
    return {"sender": {"id": buyer}, "recipient": {"id": owner(kind)}, "timestamp": at,
            "read": body}


def encode(payload: Any) -> bytes:
    """As Meta transmits: compact JSON, non-ASCII escaped as ``\\uXXXX``."""
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, separators=(",", ":")).encode("ascii")
