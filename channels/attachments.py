"""Attachment policy: what a channel accepts, judged on the bytes rather than on what the
sender declared.

The content type is sniffed from magic numbers for the closed set of types buyers send and
channels take (JPEG, PNG, GIF, WebP, HEIC, PDF, Ogg, MP3, AMR, MP4/M4A/3GP, ZIP, plain UTF-8
text); anything else is ``application/octet-stream``. A short table we test is enough for an
allow-list decision: a general-purpose sniffer (libmagic, puremagic) knows thousands of
formats by confidence score, which is the wrong shape for "is this one of the five types the
channel allows", and a declared ``image/png`` on a Windows executable must not pass.

``AttachmentPolicy`` is the channel's limits (``Capabilities`` narrowed by the channel's
settings and the hub's cap); ``AttachmentRefused`` is the refusal, with the reason, as a 413
(too large, too many) or 415 (type) for a webhook.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import msgspec

from channels.errors import InboundError

OCTET_STREAM = "application/octet-stream"
_FTYP_BRANDS = {
    b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heic", b"msf1": "image/heic",
    b"M4A ": "audio/mp4", b"M4B ": "audio/mp4",
    b"3gp4": "video/3gpp", b"3gp5": "video/3gpp", b"3gp6": "video/3gpp", b"3g2a": "video/3gpp",
}
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
MAX_NAME_LENGTH = 200


def sniff(data: bytes) -> str:
    """The content type the bytes show, or ``application/octet-stream``."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if _is_text(data):
        return "text/plain"
    return OCTET_STREAM


def _is_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and _TEXT_CONTROLS.search(text) is None


def safe_name(name: str) -> str:
    """A display name that cannot name a path or break a header: the last path component,
    no control or bidi-override characters, no leading dots, at most 200 characters."""
    base = re.split(r"[/\\]", name)[-1]
    cleaned = "".join(ch for ch in unicodedata.normalize("NFC", base)
                      if unicodedata.category(ch)[0] != "C" and ch not in '"')
    cleaned = cleaned.strip().lstrip(".").strip()
    return cleaned[:MAX_NAME_LENGTH] or "attachment"


class AttachmentRefused(InboundError):
    """An attachment the channel does not take; ``status`` 413 (size, count) or 415 (type)."""

    def __init__(self, reason: str, status: int = 413) -> None:
        super().__init__(reason)
        self.status = status


class AttachmentPolicy(msgspec.Struct, frozen=True):
    """``types``: allowed content types (``image/*`` allows a family; empty: any).
    ``max_count`` 0 means the channel takes no attachments."""

    max_bytes: int
    max_count: int
    types: tuple[str, ...] = ()

    def allows_type(self, content_type: str) -> bool:
        if not self.types:
            return True
        family = content_type.split("/", 1)[0] + "/*"
        return content_type in self.types or family in self.types

    def check_count(self, count: int) -> None:
        if count and self.max_count == 0:
            raise AttachmentRefused("this channel takes no attachments")
        if count > self.max_count:
            raise AttachmentRefused(f"{count} attachments; this channel takes at most "
                                    f"{self.max_count}")

    def check(self, data: bytes, name: str) -> str:
        """The sniffed content type, or ``AttachmentRefused`` naming the reason."""
        if len(data) > self.max_bytes:
            raise AttachmentRefused(f"attachment {safe_name(name)!r} is {len(data)} bytes, "
                                    f"over this channel's limit of {self.max_bytes} bytes")
        if not data:
            raise AttachmentRefused(f"attachment {safe_name(name)!r} is empty", 415)
        found = sniff(data)
        if not self.allows_type(found):
            raise AttachmentRefused(
                f"attachment {safe_name(name)!r} is {found} (by its content); this channel "
                f"takes {', '.join(self.types)}", 415)
        return found

    def narrowed(self, *, max_bytes: int | None = None, max_count: int | None = None,
                 types: Iterable[str] | None = None) -> AttachmentPolicy:
        """This policy limited further (settings and the hub's cap never widen it)."""
        allowed = tuple(types) if types is not None else self.types
        if self.types and types is not None:
            allowed = tuple(t for t in allowed if t in self.types or self.allows_type(t))
        return AttachmentPolicy(
            max_bytes=min(self.max_bytes, max_bytes) if max_bytes is not None else
            self.max_bytes,
            max_count=min(self.max_count, max_count) if max_count is not None else
            self.max_count,
            types=allowed)
