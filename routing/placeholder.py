"""The foundation's stand-in routing: everything waits in one queue, hints taken at face value.

Kept deliberately trivial so the pipeline can be proven end to end; the routing issue replaces
it with classification and atomic assignment.
"""

from __future__ import annotations

from hub.models import Conversation, InboundMessage
from routing.policy import RoutingDecision, normalize_language_tag


class PlaceholderPolicy:
    def __init__(self, default_queue: str = "default") -> None:
        self.default_queue = default_queue

    async def route(self, conversation: Conversation, message: InboundMessage) -> RoutingDecision:
        if conversation.status == "assigned" and conversation.assignee:
            return RoutingDecision(
                queue=conversation.queue or self.default_queue, status="assigned",
                assignee=conversation.assignee, language=conversation.language,
                market=conversation.market,
            )
        market = message.hints.market.upper() if message.hints.market else None
        return RoutingDecision(
            queue=self.default_queue,
            status="queued",
            language=normalize_language_tag(message.hints.language) or conversation.language,
            market=market or conversation.market,
        )
