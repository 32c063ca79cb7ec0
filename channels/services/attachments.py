"""Files that come with messages: content-addressed, stored outside Redis (the data directory
by default; the interface allows an S3-compatible store), served to agents as downloads.

An adapter never calls ``put`` directly for inbound files: ``ChannelAdapter.store_attachment``
checks the channel's policy (size, sniffed type) first and passes the sniffed type. ``put``
is idempotent on content (the same bytes are one file) and keeps the file at least
``grace`` seconds even before a message references it, so storing the bytes and then
ingesting the message that names them is safe against a concurrent erasure of the same bytes.
"""

from __future__ import annotations

from typing import Protocol

from channels.models import Attachment


class AttachmentStore(Protocol):
    async def put(self, data: bytes, *, name: str, content_type: str) -> Attachment:
        """Store the bytes; the returned ``Attachment.storage_ref`` names them."""
        ...

    async def get(self, storage_ref: str) -> bytes | None:
        """The bytes, or None when they are gone (erased, expired) or the ref is not ours."""
        ...

    async def delete(self, storage_ref: str) -> None:
        """Remove the bytes if nothing references them any more (the hub's store decides)."""
        ...
