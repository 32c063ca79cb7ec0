"""The unreachable mark (``Store.mark_unreachable``): set by the sender when a channel cannot
reach the buyer, cleared by the buyer's next message or a send that goes through, and never
written back over a message that arrived while the failed send was in flight."""

from __future__ import annotations

from channels.models import InboundMessage
from storage.store import Store


def _message(provider_id: str, sent_at: float) -> InboundMessage:
    return InboundMessage(channel_type="telegram", channel_instance="tg",
                          provider_message_id=provider_id, thread_id="42",
                          sender_handle="42", text="hola", sent_at=sent_at)


async def test_the_mark_is_not_written_over_a_newer_message(store: Store) -> None:
    first = await store.ingest(_message("42:1", 1000.0))
    conv = first.conversation_id
    assert await store.mark_unreachable(conv, "blocked the bot", last_inbound_at=1000.0)
    view = await store.get_conversation(conv)
    assert view is not None and view.unreachable == "blocked the bot"
    await store.ingest(_message("42:2", 2000.0))  # the buyer writes: cleared
    view = await store.get_conversation(conv)
    assert view is not None and view.unreachable is None
    # a send that failed knowing only the first message arrives late: not written back
    assert not await store.mark_unreachable(conv, "blocked the bot", last_inbound_at=1000.0)
    view = await store.get_conversation(conv)
    assert view is not None and view.unreachable is None
    assert await store.mark_unreachable(conv, "blocked again", last_inbound_at=2000.0)
    await store.clear_unreachable(conv)
    view = await store.get_conversation(conv)
    assert view is not None and view.unreachable is None
