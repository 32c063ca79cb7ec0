"""Buyers' edits on the hub's store (``storage/edits.py``) and what the API view shows."""

from __future__ import annotations

from channels.models import InboundMessage, MessageEdit
from storage.edits import RedisEdits
from storage.store import Store


def _message(provider_id: str, text: str) -> InboundMessage:
    return InboundMessage(channel_type="telegram", channel_instance="tg",
                          provider_message_id=provider_id, thread_id="42",
                          sender_handle="42", text=text)


def _edit(provider_id: str, text: str, at: float) -> MessageEdit:
    return MessageEdit(channel_instance="tg", thread_id="42", provider_message_id=provider_id,
                       text=text, edited_at=at, fallback=_message(f"{provider_id}:edit", text))


async def test_edits_apply_newest_first_and_keep_the_original(store: Store) -> None:
    edits = RedisEdits(store)
    stored = await store.ingest(_message("42:7", "quiero 2"))
    assert await edits.apply(_edit("42:7", "quiero 4", 200.0))
    assert await edits.apply(_edit("42:7", "quiero 3", 100.0))  # late and older: ignored
    view = await store.get_message(stored.message_id)
    assert view is not None
    assert (view.text, view.original_text, view.edited_at) == ("quiero 4", "quiero 2", 200.0)
    inbound = await store.load_inbound(stored.message_id)
    assert inbound is not None and inbound.text == "quiero 2"  # the frozen payload


async def test_an_edit_of_a_message_never_stored_is_not_applied(store: Store) -> None:
    edits = RedisEdits(store)
    assert not await edits.apply(_edit("42:99", "hola", 1.0))
    # same id on another instance or thread is another message
    await store.ingest(_message("42:8", "hola"))
    other = MessageEdit(channel_instance="tg2", thread_id="42", provider_message_id="42:8",
                        text="x", edited_at=1.0, fallback=_message("42:8:edit", "x"))
    assert not await edits.apply(other)
