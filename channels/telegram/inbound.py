"""One Bot API ``Update`` -> a draft ``InboundMessage`` (files still to fetch) or a note on why
it is not routed.

Parsed with python-telegram-bot's own ``telegram.Update.de_json``, so what Telegram sends and
what PTB understands are the same thing. Only private chats carry buyer conversations: group,
supergroup and channel traffic, callback queries and the other update kinds are acknowledged
and counted, not routed. A ``my_chat_member`` update whose new status is ``kicked`` in a private
chat is the buyer blocking the bot.

Ids: a message is ``"<chat id>:<message id>"`` (message ids are unique per chat only); the chat
id is the thread. An edit becomes a ``MessageEdit`` of the stored message (the inbox shows the
corrected words, the original is kept); its fallback, stored when the original is not (never
seen, or past the dedupe window), is a message of its own
``"<chat id>:<message id>:edit:<edit_date>"`` whose text starts with ``EDIT_MARKER``. A reply
names the message it answers in ``reply_to``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
import telegram
from telegram import Update

from channels.errors import MalformedPayload
from channels.models import ChannelHints, InboundMessage
from channels.telegram.settings import ALLOWED_UPDATES

EDIT_MARKER: Final = "[edited] "
TYPE_NAME: Final = "telegram"
READ_KINDS: Final = frozenset(ALLOWED_UPDATES)
_MAX_LANGUAGE_CHARS: Final = 35


class FileRef(msgspec.Struct, frozen=True):
    """A file on a message, to fetch with ``getFile`` then download."""

    file_id: str
    name: str
    declared_type: str
    size: int | None = None


class Draft(msgspec.Struct, frozen=True):
    """A buyer message, ready to store once its ``files`` are fetched."""

    update_id: int
    message: InboundMessage
    files: tuple[FileRef, ...] = ()
    # An edit: the stored message's id, the new text and when it was edited; ``message`` is
    # then the fallback (MessageEdit).
    edit_of: str | None = None
    edited_text: str = ""
    edited_at: float = 0.0


class Skipped(msgspec.Struct, frozen=True):
    """An update acknowledged but not routed; ``kind`` for the counters, ``blocked`` when it
    says the buyer blocked the bot (the chat id, to mark the conversation)."""

    update_id: int
    kind: str
    blocked: str | None = None


_Id = Annotated[int, msgspec.Meta(ge=-(2**52), le=2**52)]
_Short = Annotated[str, msgspec.Meta(max_length=1024)]


class _Chat(msgspec.Struct, frozen=True):
    id: _Id
    type: _Short


class _User(msgspec.Struct, frozen=True):
    id: _Id
    first_name: _Short = ""
    last_name: _Short | None = None
    username: _Short | None = None
    language_code: _Short | None = None


class _Message(msgspec.Struct, frozen=True):
    message_id: _Id
    date: _Id
    chat: _Chat
    sender: _User | None = msgspec.field(default=None, name="from")
    text: str | None = None
    caption: str | None = None
    edit_date: _Id | None = None


class _Update(msgspec.Struct, frozen=True):
    """The fields this channel reads, with their types: ``Update.de_json`` is lenient (a
    message without a chat, or a number for a text, goes through), so they are checked
    first."""

    update_id: Annotated[int, msgspec.Meta(ge=0, le=2**52)]
    message: _Message | None = None
    edited_message: _Message | None = None


def decode_update(data: Any) -> Update | Skipped:
    """A JSON value as a PTB ``Update``, or ``Skipped`` for a kind this channel does not read
    (not parsed further: a change in a kind we ignore must not quarantine it);
    ``MalformedPayload`` names what is wrong."""
    if not isinstance(data, dict):
        raise MalformedPayload("an update must be a JSON object")
    update_id = data.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool) or update_id < 0:
        raise MalformedPayload("update has no usable update_id")
    try:
        msgspec.convert(data, _Update)
    except msgspec.ValidationError as exc:
        raise MalformedPayload(f"update {update_id} is not a Bot API Update: {exc}") from None
    kind = next((k for k in data if k != "update_id"), "empty")
    if kind not in READ_KINDS:
        return Skipped(update_id, kind[:64])
    try:
        return Update.de_json(data, None)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise MalformedPayload(f"update {update_id} is not a Bot API Update: "
                               f"{type(exc).__name__}: {str(exc)[:120]}") from None


def normalize(update: Update, instance: str) -> Draft | Skipped:
    """The draft for a private-chat message or edit, else what kind of update it was."""
    edited = update.edited_message is not None
    message = update.message or update.edited_message
    if message is None:
        return _skipped(update)
    if message.chat.type != telegram.constants.ChatType.PRIVATE:
        return Skipped(update.update_id, f"{'edited_' if edited else ''}{message.chat.type}"
                       "_message")
    user = message.from_user
    chat_id = str(message.chat.id)
    original_id = message_id = f"{chat_id}:{message.message_id}"
    stamp = message.edit_date or message.date
    if edited:
        message_id += f":edit:{int(stamp.timestamp()) if stamp else update.update_id}"
    words = message.text or message.caption or _placeholder(message)
    quoted = message.reply_to_message
    draft = InboundMessage(
        channel_type=TYPE_NAME, channel_instance=instance, provider_message_id=message_id,
        thread_id=chat_id, sender_handle=str(user.id) if user else chat_id,
        sender_name=_name(user, message.chat), text=EDIT_MARKER + words if edited else words,
        sent_at=message.date.timestamp() if message.date else None,
        hints=ChannelHints(language=_language(user)),
        reply_to=f"{chat_id}:{quoted.message_id}" if quoted is not None else None,
    )
    if not edited:
        return Draft(update.update_id, draft, files=_files(message))
    return Draft(update.update_id, draft, files=_files(message), edit_of=original_id,
                 edited_text=words,
                 edited_at=stamp.timestamp() if stamp else float(update.update_id))


def _skipped(update: Update) -> Skipped:
    kind = next((k for k in Update.ALL_TYPES if getattr(update, k, None) is not None),
                "unknown")
    member = update.my_chat_member
    if (member is not None and member.chat.type == telegram.constants.ChatType.PRIVATE
            and member.new_chat_member.status == telegram.constants.ChatMemberStatus.BANNED):
        return Skipped(update.update_id, "my_chat_member", blocked=str(member.chat.id))
    return Skipped(update.update_id, kind)


def _files(message: telegram.Message) -> tuple[FileRef, ...]:
    """Photos (the largest size), documents and other sent files (voice, audio, video)."""
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return (FileRef(largest.file_id, f"photo-{message.message_id}.jpg", "image/jpeg",
                        largest.file_size),)
    for kind in ("document", "voice", "audio", "video", "video_note", "animation"):
        media = getattr(message, kind, None)
        if media is not None:
            name = getattr(media, "file_name", None) or f"{kind}-{message.message_id}"
            declared = getattr(media, "mime_type", None) or "application/octet-stream"
            return (FileRef(media.file_id, name, declared, media.file_size),)
    return ()


def _placeholder(message: telegram.Message) -> str:
    """What the agent reads for a message with no text or caption."""
    if message.sticker is not None:
        return f"[sticker {message.sticker.emoji or ''}]".replace(" ]", "]")
    if message.location is not None:
        return f"[location {message.location.latitude}, {message.location.longitude}]"
    if message.contact is not None:
        return f"[contact {message.contact.phone_number}]"
    return ""


def _name(user: telegram.User | None, chat: telegram.Chat) -> str | None:
    if user is not None:
        return user.full_name[:256] or user.username
    return chat.full_name or chat.username


def _language(user: telegram.User | None) -> str | None:
    code = user.language_code if user is not None else None
    if not code or len(code) > _MAX_LANGUAGE_CHARS:
        return None
    return code
