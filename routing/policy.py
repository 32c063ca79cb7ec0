"""What the pipeline asks of routing: one decision per inbound message's conversation.

The router worker (``hub.router``) calls ``RoutingPolicy.route`` for every entry of the inbound
stream and writes the decision onto the conversation.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from hub.models import Conversation, ConversationStatus, InboundMessage


class RoutingDecision(msgspec.Struct, frozen=True):
    queue: str
    status: ConversationStatus
    assignee: str | None = None
    language: str | None = None
    market: str | None = None


class RoutingPolicy(Protocol):
    async def route(
        self, conversation: Conversation, message: InboundMessage
    ) -> RoutingDecision: ...


def normalize_language_tag(tag: str | None) -> str | None:
    """``pt-BR`` / ``pt_br`` -> ``pt``; anything not shaped like a tag -> None."""
    if not tag:
        return None
    primary = tag.replace("_", "-").split("-", 1)[0].lower()
    return primary if primary.isalpha() and 2 <= len(primary) <= 3 else None
