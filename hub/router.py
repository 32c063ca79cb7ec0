"""The routing step of the pipeline: inbound stream -> policy -> conversation updated."""

from __future__ import annotations

import logging

from hub.csat import SurveyAnswers
from hub.metrics import Metrics
from routing.policy import RoutingPolicy
from storage.people import People
from storage.store import Store
from storage.streams import Entry
from storage.workflow import blocked_sender, skip_blocked

log = logging.getLogger(__name__)


class UnroutableEntry(Exception):
    """The stream entry points at data that is not there (never expected; quarantined)."""


class Router:
    def __init__(self, store: Store, policy: RoutingPolicy, metrics: Metrics, *,
                 people: People | None = None, answers: SurveyAnswers | None = None) -> None:
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.people = people  # links the sender into a person after routing (idempotent)
        self.answers = answers  # a buyer's answer to the satisfaction survey is not routed

    async def handle(self, entry: Entry) -> None:
        _stream, _entry_id, fields = entry
        conversation_id = fields.get(b"conv", b"").decode()
        message_id = fields.get(b"msg", b"").decode()
        conversation, message = await self.store.load_for_routing(conversation_id, message_id)
        if conversation is None or message is None:
            raise UnroutableEntry(f"conversation {conversation_id} / message {message_id} missing")
        if conversation.blocked or (fields.get(b"new") == b"1"
                                    and await blocked_sender(self.store, conversation)):
            await skip_blocked(self.store, conversation)
        elif self.answers is not None and await self.answers.take(conversation, message_id,
                                                                  message):
            pass  # recorded; the conversation stays resolved
        else:
            decision = await self.policy.route(conversation, message)
            if decision.fields:
                await self.store.update_conversation(conversation_id, decision.fields)
            if decision.queue:
                self.metrics.routed.labels(decision.queue).inc()
        if self.people is not None:  # after routing: a buyer's history never delays them
            await self.people.link_conversation(conversation, message)
