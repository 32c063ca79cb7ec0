"""Attachment files: content-addressed bytes outside Redis, with their references in Redis.

A file is named by the SHA-256 of its bytes (``storage_ref = "sha256:<hex>"``), so the same
photo sent twice is one file, and no name a provider or an agent gave ever reaches a path.
``FileBlobStore`` keeps them under ``<data_dir>/attachments/`` (directories 0700, files 0600,
written to a temporary file, fsynced and renamed into place, so a crash never leaves half a
file under a real name); ``BlobStore`` is the interface an S3-compatible store implements
later.

What references a file lives in Redis, per partition, in ``blob:<sha>`` sets (message ids,
and ``u:<conversation>\\0<upload id>`` for an agent's upload not yet sent), written in the
same atomic step as the message (ingest.lua, enqueue_reply.lua). A file is deleted only when
no partition references it and no ``blobpin:<sha>`` is set: ``put`` pins the bytes for
``grace`` seconds before it looks for the file, so an erasure racing a new message with the
same bytes keeps the file (``FileBlobStore.delete_unless`` re-checks after moving the file
aside); the pin is dropped once the message or upload naming the file is stored. (Two
stores of identical bytes at once with an erasure of them in between can still lose the
second one's file: the first store's unpin drops the pin both share.) ``sweep`` removes
what a crash left unreferenced (bytes stored, message never ingested; an upload never sent;
a deletion cut short) once it is older than the grace.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from channels.attachments import safe_name
from channels.models import Attachment
from storage import keys
from storage.keys import PartitionKeys

log = logging.getLogger(__name__)

REF_PREFIX = "sha256:"
_SHA = re.compile(r"[0-9a-f]{64}")
_HASH_IN_THREAD = 256 * 1024  # hash bigger files off the event loop
UPLOAD_MARK = "u:"


def sha_of(storage_ref: str | None) -> str | None:
    """The file key of a storage ref of ours, or None for anything else."""
    if storage_ref is None or not storage_ref.startswith(REF_PREFIX):
        return None
    sha = storage_ref[len(REF_PREFIX):]
    return sha if _SHA.fullmatch(sha) else None


class BlobStore(Protocol):
    """Where the bytes live: files today, an S3-compatible bucket later. Keys are SHA-256
    hex digests of the content."""

    async def write(self, key: str, data: bytes) -> None:
        """Store the bytes (a no-op, refreshing the file's age, when they are there)."""
        ...

    async def read(self, key: str) -> bytes | None: ...

    async def delete_unless(self, key: str, keep: Callable[[], Awaitable[bool]]) -> bool:
        """Delete, unless ``keep()`` (asked after the bytes are out of reach of readers and
        writers' existence checks) says a reference appeared; True when deleted."""
        ...

    async def older_than(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` keys written before ``cutoff`` (UNIX seconds)."""
        ...


class FileBlobStore:
    """Files under ``root``: ``ab/cd/<sha256>``, 0600 in 0700 directories."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def _path(self, key: str) -> Path:
        if not _SHA.fullmatch(key):
            raise ValueError("not a content key")
        return self.root / key[:2] / key[2:4] / key

    def _mkdir(self, path: Path) -> None:
        if path.is_dir():
            return
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir(parents=True) gives the parents the umask's mode, not ``mode``.
        for parent in (path, *path.parents):
            if parent == self.root.parent:
                break
            parent.chmod(0o700)

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            os.utime(path)  # the sweep's grace counts from the latest store of these bytes
            return
        self._mkdir(path.parent)
        self._mkdir(self.tmp)
        tmp = self.tmp / f"{key}.{secrets.token_hex(8)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, key, data)

    def _read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    async def read(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._read, key)

    def _set_aside(self, key: str) -> Path | None:
        path = self._path(key)
        self._mkdir(self.tmp)
        aside = self.tmp / f"{key}.{secrets.token_hex(8)}.del"
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return None
        return aside

    def _restore(self, key: str, aside: Path) -> None:
        path = self._path(key)
        if path.exists():  # a writer stored the same bytes again meanwhile
            aside.unlink(missing_ok=True)
        else:
            os.replace(aside, path)

    async def delete_unless(self, key: str, keep: Callable[[], Awaitable[bool]]) -> bool:
        aside = await asyncio.to_thread(self._set_aside, key)
        if aside is None:
            return True
        if await keep():
            await asyncio.to_thread(self._restore, key, aside)
            return False
        await asyncio.to_thread(aside.unlink, missing_ok=True)
        return True

    def _older_than(self, cutoff: float, limit: int) -> list[str]:
        found: list[str] = []
        if not self.root.is_dir():
            return found
        for top in sorted(self.root.iterdir()):
            if top == self.tmp:
                for stale in top.iterdir():  # a write or a delete cut short by a crash
                    if stale.stat().st_mtime < cutoff:
                        stale.unlink(missing_ok=True)
                continue
            if not top.is_dir():
                continue
            for entry in (f for sub in sorted(top.iterdir()) if sub.is_dir()
                          for f in sub.iterdir()):
                if _SHA.fullmatch(entry.name) and entry.stat().st_mtime < cutoff:
                    found.append(entry.name)
                    if len(found) >= limit:
                        return found
        return found

    async def older_than(self, cutoff: float, limit: int) -> list[str]:
        return await asyncio.to_thread(self._older_than, cutoff, limit)


class AttachmentService:
    """The hub's ``channels.services.attachments.AttachmentStore``: bytes in a ``BlobStore``,
    references and pins in Redis."""

    def __init__(self, redis: Any, blobs: BlobStore, partitions: Sequence[PartitionKeys], *,
                 grace_seconds: float = 3600.0) -> None:
        self.redis = redis
        self.blobs = blobs
        self.partitions = partitions
        self.grace = grace_seconds

    async def put(self, data: bytes, *, name: str, content_type: str) -> Attachment:
        if len(data) > _HASH_IN_THREAD:
            sha = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        else:
            sha = hashlib.sha256(data).hexdigest()
        # Pinned before the file is looked for: a deletion that finds no reference still
        # finds the pin (see FileBlobStore.delete_unless).
        await self.redis.set(keys.blob_pin(sha), "1", ex=max(1, int(self.grace)))
        await self.blobs.write(sha, data)
        return Attachment(name=safe_name(name), content_type=content_type, size=len(data),
                          storage_ref=REF_PREFIX + sha)

    async def unpin(self, shas: Sequence[str]) -> None:
        """The bytes are referenced now (the message or upload naming them is stored): the
        pin that bridged the gap goes, so an erasure right after can delete the file."""
        if shas:
            await self.redis.delete(*(keys.blob_pin(sha) for sha in shas))

    async def get(self, storage_ref: str) -> bytes | None:
        sha = sha_of(storage_ref)
        return None if sha is None else await self.blobs.read(sha)

    async def delete(self, storage_ref: str) -> None:
        sha = sha_of(storage_ref)
        if sha is not None:
            await self.release([sha])

    async def referenced(self, sha: str) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.blob_pin(sha))
            for k in self.partitions:
                pipe.scard(k.blob_refs(sha))
            counts = await pipe.execute()
        return any(int(c) for c in counts)

    async def release(self, shas: Sequence[str]) -> int:
        """Delete the files of ``shas`` that nothing references any more; returns how many."""
        deleted = 0
        for sha in dict.fromkeys(shas):
            if await self.referenced(sha):
                continue
            if await self.blobs.delete_unless(sha, functools.partial(self.referenced, sha)):
                deleted += 1
        return deleted

    async def prune(self, sha: str) -> None:
        """Drop references to messages and uploads that are gone (a crash between deleting a
        message and its reference; an upload that expired unsent)."""
        for k in self.partitions:
            members = [m.decode() if isinstance(m, bytes) else m
                       for m in await self.redis.smembers(k.blob_refs(sha))]
            if not members:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for member in members:
                    if member.startswith(UPLOAD_MARK):
                        conversation, _, upload = member[len(UPLOAD_MARK):].partition("\x00")
                        pipe.exists(k.upload(conversation, upload))
                    else:
                        pipe.exists(k.message(member))
                alive = await pipe.execute()
            stale = [m for m, ok in zip(members, alive, strict=True) if not ok]
            if stale:
                await self.redis.srem(k.blob_refs(sha), *stale)

    async def sweep(self, now: float | None = None, limit: int = 1000) -> int:
        """Delete up to ``limit`` files older than the grace that nothing references."""
        cutoff = (time.time() if now is None else now) - self.grace
        deleted = 0
        for sha in await self.blobs.older_than(cutoff, limit):
            await self.prune(sha)
            deleted += await self.release([sha])
        if deleted:
            log.info("attachments: removed %d unreferenced file(s)", deleted)
        return deleted

    # -- uploads (an agent's file for a reply) ---------------------------------------------

    async def register_upload(self, k: PartitionKeys, conversation_id: str, upload_id: str,
                              attachment: Attachment, *, by: str, ttl_seconds: int) -> None:
        sha = sha_of(attachment.storage_ref)
        assert sha is not None
        key = k.upload(conversation_id, upload_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"ref": attachment.storage_ref or "", "name": attachment.name,
                                    "type": attachment.content_type, "size": attachment.size,
                                    "by": by})
            pipe.expire(key, ttl_seconds)
            pipe.sadd(k.blob_refs(sha), f"{UPLOAD_MARK}{conversation_id}\x00{upload_id}")
            await pipe.execute()
        await self.unpin([sha])

    async def load_upload(self, k: PartitionKeys, conversation_id: str,
                          upload_id: str) -> tuple[Attachment, str] | None:
        """The uploaded attachment and who uploaded it, or None (unknown or expired)."""
        raw = await self.redis.hgetall(k.upload(conversation_id, upload_id))
        if not raw:
            return None
        f = {a.decode(): b.decode() for a, b in raw.items()}
        return Attachment(name=f["name"], content_type=f["type"], size=int(f["size"]),
                          storage_ref=f["ref"]), f["by"]

    async def drop_uploads(self, k: PartitionKeys, conversation_id: str) -> list[str]:
        """Delete a conversation's pending uploads and their references; returns their file
        keys (erasure, retention)."""
        shas: list[str] = []
        found = [key async for key in self.redis.scan_iter(
            match=k.uploads_pattern(conversation_id), count=1000)]
        for key in found:
            ref = await self.redis.hget(key, "ref")
            sha = sha_of(ref.decode() if isinstance(ref, bytes) else ref)
            upload = (key.decode() if isinstance(key, bytes) else key).rpartition("\x00")[2]
            if sha is not None:
                shas.append(sha)
                await self.redis.srem(k.blob_refs(sha),
                                      f"{UPLOAD_MARK}{conversation_id}\x00{upload}")
        if found:
            await self.redis.delete(*found)
        return shas
