"""Files that come with messages: content-addressed, stored outside Redis (the data directory
by default; the interface allows an S3-compatible store), served to agents as downloads."""

from __future__ import annotations

from typing import Protocol

from channels.models import Attachment


class AttachmentStore(Protocol):
    async def put(self, data: bytes, *, name: str, content_type: str) -> Attachment:
        """Store the bytes; the returned ``Attachment.storage_ref`` names them."""
        ...

    async def get(self, storage_ref: str) -> bytes | None: ...

    async def delete(self, storage_ref: str) -> None: ...
