"""Replies to Telegram: ``sendMessage`` to the buyer's chat, replying to their message, split
or refused above 4096 characters, then each attached file by ``sendDocument``; every message
after the first paced like a send of its own.

The hub paces a reply once before ``deliver`` (``Capabilities.rate_limits``: 1/s per chat,
30/s per bot). A split reply's later parts are further messages to the same chat, so each takes
its own turn from the same shared limiter (ticket ``<reply id>#<n>``); a wait longer than
``MAX_PART_WAIT_SECONDS`` hands the reply back as ``RateLimited`` instead of holding a sender
slot. The parts already sent are remembered by reply id in this process, so the retry (after
that, or after a 429 or 5xx on a later part) sends only what is missing, never a part twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from telegram import ReplyParameters

from channels.errors import PermanentError, RateLimited, ReplyRejected
from channels.models import Attachment, OutboundReply
from channels.services.attachments import AttachmentStore
from channels.services.limits import RateLimit, RateLimiter, pace
from channels.services.threads import ThreadMemory
from channels.telegram.api import BotApi
from channels.telegram.split import split_text, utf16_length

MAX_PART_WAIT_SECONDS: Final = 5.0
PROGRESS_TTL_SECONDS: Final = 7 * 86400
"""How long a split reply's progress is kept: longer than the outbox retries a reply."""
_REMEMBERED_REPLIES: Final = 1000


class Sender:
    """Sends one bot's replies (see the module docstring)."""

    def __init__(self, api: BotApi, *, split: bool, limit: int, max_parts: int,
                 limiter: RateLimiter | None, limits: Sequence[RateLimit],
                 files: AttachmentStore | None, memory: ThreadMemory | None = None,
                 instance: str = "") -> None:
        self.api = api
        # Where the parts already sent of a split reply are kept across restarts and
        # processes (Telegram has no idempotency key: resending part 1 is a duplicate).
        self.memory = memory
        self.instance = instance
        self.files = files
        self.split = split
        self.limit = limit
        self.max_parts = max_parts
        self.limiter = limiter
        self.limits = tuple(limits)
        self._partial: OrderedDict[str, list[str]] = OrderedDict()

    def parts(self, text: str) -> list[str]:
        """The messages ``text`` goes out as, or ``ReplyRejected`` saying why it cannot."""
        if utf16_length(text) <= self.limit:
            return [text]
        if not self.split:
            raise ReplyRejected(f"reply is {utf16_length(text)} UTF-16 characters; Telegram "
                                f"takes {self.limit} per message and this channel is set to "
                                "long_messages = \"refuse\"")
        parts = split_text(text, self.limit)
        if len(parts) > self.max_parts:
            raise ReplyRejected(f"reply would be {len(parts)} Telegram messages; at most "
                                f"{self.max_parts} are sent for one reply")
        return parts

    async def send(self, reply: OutboundReply) -> str:
        """Send every step not yet sent (the text's parts, then each file); the provider id
        is the first message's id."""
        parts = self.parts(reply.text) if reply.text.strip() else []
        steps = len(parts) + len(reply.attachments)
        sent = await self._progress(reply)
        target = reply_target(reply)
        for n in range(len(sent), steps):
            if n > 0:
                await self._pace_part(reply, n)
            params: dict[str, Any] = {"chat_id": reply.thread_id}
            if n == 0 and target is not None:
                params["reply_parameters"] = ReplyParameters(
                    message_id=target, allow_sending_without_reply=True).to_dict()
            if n < len(parts):
                result = await self.api.call("sendMessage", {**params, "text": parts[n]})
            else:
                result = await self._send_file(reply.attachments[n - len(parts)], params)
            sent.append(_message_id(result, reply, n))
            if n + 1 < steps:
                await self._remember(reply, sent)
        self._partial.pop(reply.reply_id, None)
        return sent[0]

    async def _progress(self, reply: OutboundReply) -> list[str]:
        """The parts of this reply already sent: this process's, else the store's."""
        sent = self._partial.get(reply.reply_id)
        if sent is not None:
            return sent
        if self.memory is not None:
            found = await self.memory.recall(self.instance, _progress_key(reply.reply_id))
            if found is not None:
                return list(msgspec.json.decode(found, type=list[str]))
        return []

    async def _send_file(self, attachment: Attachment, params: dict[str, Any]) -> Any:
        """``sendDocument``: the bytes as stored, whatever their type (``sendPhoto`` would
        recompress an image)."""
        if self.files is None or attachment.storage_ref is None:
            raise PermanentError(f"attachment {attachment.name!r} has no stored file")
        data = await self.files.get(attachment.storage_ref)
        if data is None:
            raise PermanentError(f"attachment {attachment.name!r} is no longer stored")
        fields = {k: v if isinstance(v, str) else msgspec.json.encode(v).decode()
                  for k, v in params.items()}
        return await self.api.upload("sendDocument", fields, field="document",
                                     name=attachment.name, content_type=attachment.content_type,
                                     data=data)

    async def _pace_part(self, reply: OutboundReply, n: int) -> None:
        if self.limiter is None or not self.limits:
            return
        part = msgspec.structs.replace(reply, reply_id=f"{reply.reply_id}#{n}")
        wait = await pace(self.limiter, part, self.limits)
        if wait > MAX_PART_WAIT_SECONDS:
            raise RateLimited(f"part {n + 1} of a split reply must wait {wait:.1f} s for the "
                              "chat's rate limit", retry_after=wait)
        while wait > 0:
            await asyncio.sleep(wait)
            wait = await pace(self.limiter, part, self.limits)

    async def _remember(self, reply: OutboundReply, sent: list[str]) -> None:
        self._partial[reply.reply_id] = sent
        self._partial.move_to_end(reply.reply_id)
        while len(self._partial) > _REMEMBERED_REPLIES:
            self._partial.popitem(last=False)
        if self.memory is not None:
            await self.memory.remember(self.instance, _progress_key(reply.reply_id),
                                       msgspec.json.encode(sent),
                                       ttl_seconds=PROGRESS_TTL_SECONDS,
                                       thread_id=reply.thread_id)


def _progress_key(reply_id: str) -> str:
    return "parts:" + reply_id


def reply_target(reply: OutboundReply) -> int | None:
    """The buyer's message id inside this chat, from ``"<chat>:<message>[:edit:<t>]"``."""
    if not reply.in_reply_to:
        return None
    chat, _, rest = reply.in_reply_to.partition(":")
    message = rest.partition(":")[0]
    if chat != reply.thread_id or not message.isdigit():
        return None
    return int(message)


def _message_id(result: object, reply: OutboundReply, n: int) -> str:
    """Telegram's id of a sent message (``Message.message_id``); an answer without one still
    means the message went out, so our own reply id stands in rather than sending again."""
    if isinstance(result, dict):
        message_id = result.get("message_id")
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            return f"{reply.thread_id}:{message_id}"
    return f"{reply.reply_id}#{n}"
