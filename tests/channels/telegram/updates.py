"""Bot API updates for the tests, built with python-telegram-bot's own classes and serialized
with their ``to_dict()``: what PTB writes is what the adapter must read."""

from __future__ import annotations

import datetime as dt
from typing import Any

from telegram import (
    Chat,
    ChatMemberBanned,
    ChatMemberMember,
    ChatMemberUpdated,
    Document,
    Message,
    PhotoSize,
    Update,
    User,
)

from channels.testing import InboundCase

BOT = User(id=7000000001, is_bot=True, first_name="Shop", username="shop_bot")
SENT_AT = 1650205024


def buyer(user_id: int = 234140659, first_name: str = "Ana", last_name: str | None = "Pérez",
          language: str | None = "es") -> User:
    return User(id=user_id, is_bot=False, first_name=first_name, last_name=last_name,
                username=first_name.lower(), language_code=language)


def private_chat(user: User) -> Chat:
    return Chat(id=user.id, type=Chat.PRIVATE, first_name=user.first_name,
                last_name=user.last_name)


def when(seconds: int = SENT_AT) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def message(message_id: int, text: str | None = None, *, user: User | None = None,
            chat: Chat | None = None, **fields: Any) -> Message:
    user = user or buyer()
    return Message(message_id=message_id, date=when(SENT_AT + message_id), chat=chat or
                   private_chat(user), from_user=user, text=text, **fields)


def update(update_id: int, **kinds: Any) -> dict[str, Any]:
    data: dict[str, Any] = Update(update_id=update_id, **kinds).to_dict()
    return data


def text_update(update_id: int, message_id: int, text: str, **fields: Any) -> dict[str, Any]:
    return update(update_id, message=message(message_id, text, **fields))


def photo_update(update_id: int, message_id: int, caption: str,
                 sizes: list[tuple[str, int, int]]) -> dict[str, Any]:
    photos = tuple(PhotoSize(file_id=fid, file_unique_id=f"u-{fid}", width=w, height=w,
                             file_size=size) for fid, w, size in sizes)
    return update(update_id, message=message(message_id, caption=caption, photo=photos))


def document_update(update_id: int, message_id: int, file_id: str, name: str,
                    mime: str, size: int) -> dict[str, Any]:
    doc = Document(file_id=file_id, file_unique_id=f"u-{file_id}", file_name=name,
                   mime_type=mime, file_size=size)
    return update(update_id, message=message(message_id, document=doc))


def edited_update(update_id: int, message_id: int, text: str, edited_at: int) -> dict[str, Any]:
    return update(update_id, edited_message=message(message_id, text,
                                                    edit_date=when(edited_at)))


def blocked_update(update_id: int, user: User | None = None) -> dict[str, Any]:
    user = user or buyer()
    member = ChatMemberUpdated(
        chat=private_chat(user), from_user=user, date=when(),
        old_chat_member=ChatMemberMember(user=BOT),
        new_chat_member=ChatMemberBanned(user=BOT, until_date=when(0)))
    return update(update_id, my_chat_member=member)


def case(n: int, text: str | None = None, *, update_id: int | None = None) -> InboundCase:
    """Buyer message ``n`` (message id ``700 + n``) as a conformance case."""
    text = text or f"Hola, ¿dónde está mi pedido {n}?"
    user = buyer()
    return InboundCase(
        name=f"message {n}", payload=text_update(update_id or 841266000 + n, 700 + n, text),
        provider_message_id=f"{user.id}:{700 + n}", thread_id=str(user.id),
        sender_handle=str(user.id), text=text, sender_name="Ana Pérez")
