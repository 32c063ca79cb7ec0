"""What the pipeline asks of routing: one decision per inbound message's conversation.

The router worker (``hub.router``) calls ``RoutingPolicy.route`` for every entry of the inbound
stream and writes ``fields`` onto the conversation record. Status and assignee are not among
them: they change on many events (an agent frees capacity, a timer fires), so the engine's
event stream is their single writer (``RoutingEngine.mirror_event``).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from channels.models import InboundMessage
from storage.records import Conversation


class RoutingDecision(msgspec.Struct, frozen=True):
    fields: dict[str, str]
    queue: str | None = None
    assignee: str | None = None
    language: str | None = None
    market: str | None = None


class RoutingPolicy(Protocol):
    async def route(
        self, conversation: Conversation, message: InboundMessage
    ) -> RoutingDecision: ...
