"""Edits of stored buyer messages (``channels.models.MessageEdit``): the provider says the
buyer changed what they wrote, and the inbox must show the new words, not a second message
(Telegram's ``edited_message``; WhatsApp and Messenger may follow)."""

from __future__ import annotations

from typing import Protocol

from channels.models import MessageEdit


class MessageEdits(Protocol):
    async def apply(self, edit: MessageEdit) -> bool:
        """Apply ``edit`` to the stored message; False when no such message is stored (the
        caller then stores ``edit.fallback``). An edit older than the one shown changes
        nothing and is still True: it was applied, in the sense that nothing is lost."""
        ...
