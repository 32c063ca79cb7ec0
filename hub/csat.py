"""Satisfaction surveys: one question after a conversation is resolved, through its channel,
and the buyer's answer read from their next message.

The sender is a supervised loop over the event log (``status`` / ``resolved`` entries) with
its own cursor; one process sends at a time (a lease), and a survey is keyed by the
resolution's event id, so a batch processed twice after a crash queues it once.

What it will not do, and why (each a ``skipped`` reason in the metrics):

- survey where the config does not ask for it (``csat.channels``, ``csat.queues``);
- survey on Amazon (its buyer-seller messaging rules forbid surveys), spam or blocked
  conversations;
- message buyers the channel cannot reach or senders that take no reply: with
  ``csat.link_secret`` and a public URL their survey is a signed link to the hub's survey
  page instead (hub/survey_links.py), which agents read from the API and paste where the
  buyer will see it; without them they are skipped (``no_reply_path``);
- send free text outside the channel's reply window: a closed window takes the configured
  template (``csat.templates``) or no survey at all;
- ask twice while an answer is still awaited.

An answer is the buyer's next message within ``csat.answer_hours`` that is only a rating
(hub/csat_answers.py), or for a link survey the page's form (hub/survey_page.py). It is
recorded on the conversation and in the event log (``status`` / ``rated``, which the KPIs
count), and the conversation goes back to resolved without being routed. Any other message
ends the wait and reopens the conversation as usual (a link survey's wait goes on: its answer
comes from the page, and a message in the chat is never taken for it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from aiohttp import web

from channels.errors import ReplyRejected
from channels.models import InboundMessage, OutboundReply, TemplateRef
from channels.supervisor import Supervisor
from channels.windows import WindowClosed, check_template, render_template, template_language
from hub import keys as K
from hub.channel_manager import ChannelManager
from hub.config import Config, CsatSettings
from hub.csat_answers import parse_rating, question
from hub.kpis import SURVEY_AUTHOR
from hub.metrics import Metrics
from hub.survey_links import LinkSigner
from storage import keys as storage_keys
from storage.events import Event, EventLog
from storage.leases import RedisLease, RedisLeaseManager
from storage.records import Conversation
from storage.store import Store, UnknownConversation
from storage.streams import consumer_name

log = logging.getLogger(__name__)

CURSOR_KEY = f"{storage_keys.PREFIX}:{{kpi}}:csat:cursor"
LEASE_NAME = "csat-surveys"
LEASE_SECONDS = 30.0
FIELDS = ("csat_state", "csat_until", "csat_scale", "csat_agent", "csat_message", "csat_via",
          "csat_round")


class SurveySender:
    """A supervised loop's body: ``iteration`` handles one batch of the event log."""

    def __init__(self, store: Store, events: EventLog, channels: ChannelManager,
                 settings: CsatSettings, leases: RedisLeaseManager, *,
                 labels: Mapping[str, str] | None = None, metrics: Metrics | None = None,
                 batch: int = 200, links: LinkSigner | None = None) -> None:
        self.store = store
        # Set when survey links are configured: conversations without a reply path get one.
        self.links = links
        # routing.channel_labels: the email instance that carries Amazon's relay is "amazon"
        self.labels = dict(labels or {})
        self.events = events
        self.channels = channels
        self.settings = settings
        self.leases = leases
        self.metrics = metrics
        self.batch = batch
        self._lease: RedisLease | None = None

    async def iteration(self) -> bool:
        if self._lease is None or not await self._lease.renew():
            self._lease = await self.leases.acquire(LEASE_NAME, LEASE_SECONDS)
            if self._lease is None:
                return False
        return await self.step()

    async def close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def step(self) -> bool:
        redis: Any = self.store.redis
        raw = await redis.get(CURSOR_KEY)
        if raw is None:  # surveys just turned on: resolutions from before are not surveyed
            await redis.set(CURSOR_KEY, await self.events.latest_id(), nx=True)
            return True
        cursor = raw.decode() if isinstance(raw, bytes) else str(raw)
        last_id, events = await self.events.after_raw(cursor, self.batch)
        if last_id is None:
            return False
        for event in events:
            if event.kind == "status" and event.action == "resolved":
                await self.survey(event)
        await redis.set(CURSOR_KEY, last_id)
        return True

    def _count(self, outcome: str, reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.csat_surveys.labels(outcome, reason).inc()

    def skip_reason(self, conversation: Conversation, pending: dict[str, str]) -> str | None:
        s = self.settings
        if s.channels and conversation.channel_instance not in s.channels:
            return "channel_not_surveyed"
        if s.queues and (conversation.queue or "") not in s.queues:
            return "queue_not_surveyed"
        if "amazon" in (conversation.channel, conversation.label,
                        self.labels.get(conversation.channel_instance)):
            return "amazon_forbids_surveys"
        if conversation.spam or conversation.blocked:
            return "spam_or_blocked"
        if conversation.replies_disabled or conversation.unreachable:
            return "no_reply_path"
        if pending.get("csat_state") == "sent" and float(
                pending.get("csat_until") or 0) > time.time():
            return "answer_awaited"
        return None

    async def survey(self, event: Event) -> None:
        conversation = await self.store.get_conversation(event.conversation_id)
        if conversation is None or conversation.status != "resolved":
            return  # erased, or the buyer wrote again before the survey went out
        pending = await self._pending(conversation.id)
        reason = self.skip_reason(conversation, pending)
        if reason == "no_reply_path" and self.links is not None:
            await self.survey_by_link(conversation, event, pending)
            return
        if reason == "answer_awaited" and pending.get("csat_round") == event.id:
            # Not a second survey: this one again, after a crash between recording its wait
            # and queueing it. The queue's client key sends it once.
            reason = None
        adapter = self.channels.get(conversation.channel_instance)
        if reason is None and adapter is None:
            reason = "channel_not_configured"
        if reason is not None or adapter is None:
            self._count("skipped", reason or "channel_not_configured")
            return
        now = time.time()
        partition = int(conversation.id.split(".", 1)[0])
        reply = OutboundReply(
            reply_id=storage_keys.new_id(partition), conversation_id=conversation.id,
            channel_type=conversation.channel, channel_instance=conversation.channel_instance,
            thread_id=conversation.thread_id, recipient_handle=conversation.contact_handle,
            text=question(self.settings.scale, conversation.language, self.settings.wording),
            author=SURVEY_AUTHOR, in_reply_to=conversation.last_inbound_provider_id,
            last_inbound_at=conversation.last_inbound_at)
        try:
            adapter.check_reply(reply, now=now)
        except WindowClosed:
            name = self.settings.templates.get(conversation.channel_instance)
            if name is None:
                self._count("skipped", "window_closed")
                return
            caps = adapter.capabilities
            template = TemplateRef(name, template_language(caps, name, conversation.language))
            try:
                spec = check_template(caps, template, adapter.type_name)
                reply = _with_template(reply, template, render_template(spec, template))
                adapter.check_reply(reply, now=now)
            except ReplyRejected:
                self._count("skipped", "template_rejected")
                return
        except ReplyRejected:
            self._count("skipped", "rejected")
            return
        # The wait is recorded first: a crash before the send leaves it recorded, and the
        # event is handled again (the cursor did not move), queueing the same survey once.
        written = await self.store.update_conversation(conversation.id, {
            "csat_state": "sent", "csat_sent_at": repr(now),
            "csat_until": repr(now + self.settings.answer_hours * 3600),
            "csat_scale": self.settings.scale, "csat_agent": event.agent or "",
            "csat_via": "message", "csat_round": event.id})
        if not written:
            return
        try:
            _mid, duplicate = await self.store.enqueue_reply(reply, client_key=f"csat:{event.id}")
        except UnknownConversation:
            return
        if not duplicate:
            self._count("sent")

    async def survey_by_link(self, conversation: Conversation, event: Event,
                             pending: dict[str, str]) -> None:
        """Record a link survey as sent (the same wait as a message survey: the page then
        takes one answer until ``csat_until``) and put a ``survey_link`` event in the log for
        the KPIs. Handled again after a crash (the cursor did not move), the wait of this
        same round is found and only the event is written again, which its key makes once."""
        if pending.get("csat_round") != event.id:
            if pending.get("csat_state") == "sent" and float(
                    pending.get("csat_until") or 0) > time.time():
                self._count("skipped", "answer_awaited")
                return
            now = time.time()
            written = await self.store.update_conversation(conversation.id, {
                "csat_state": "sent", "csat_sent_at": repr(now),
                # whole seconds: the token carries the expiry as an integer
                "csat_until": repr(float(int(now + self.settings.answer_hours * 3600))),
                "csat_scale": self.settings.scale, "csat_agent": event.agent or "",
                "csat_via": "link", "csat_round": event.id})
            if not written:
                return
            self._count("sent", "link")
        if self.store.events is not None:
            await self.store.events.append("status", conversation.id, action="survey_link",
                                           agent=event.agent or None, once=f"csat:{event.id}")

    async def _pending(self, conversation_id: str) -> dict[str, str]:
        k = self.store.keys_for(conversation_id)
        if k is None:
            return {}
        values = await self.store.redis.hmget(k.conversation(conversation_id), *FIELDS)
        return {name: (v.decode() if isinstance(v, bytes) else v)
                for name, v in zip(FIELDS, values, strict=True) if v is not None}


def _with_template(reply: OutboundReply, template: TemplateRef, text: str) -> OutboundReply:
    return msgspec.structs.replace(reply, template=template, text=text)


class SurveyAnswers:
    """The router's check, before routing a buyer's message: is it a survey answer?"""

    def __init__(self, store: Store, *, metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics

    async def take(self, conversation: Conversation, message_id: str,
                   message: InboundMessage) -> bool:
        """True when ``message`` answered the survey: recorded, and the conversation is
        resolved again, unrouted. False: route it as usual (the wait, if any, is over).
        The router's entry handled again after a crash gets the same answer."""
        k = self.store.keys_for(conversation.id)
        if k is None:
            return False
        redis: Any = self.store.redis
        values = await redis.hmget(k.conversation(conversation.id), *FIELDS)
        state, until, scale, agent, answered_by, via, _round = (
            v.decode() if isinstance(v, bytes) else v for v in values)
        if state == "answered" and answered_by == message_id:
            await self._record(conversation.id, message_id, agent, None)
            return True
        if state != "sent" or conversation.status != "new":
            return False
        if via == "link":
            # The buyer was asked on the survey page, not in this chat: a "5" here is not
            # that answer, and their writing does not close the page's survey either.
            return False
        score = None
        if float(until or 0) >= time.time():
            score = parse_rating(message.text or "", "thumbs" if scale == "thumbs" else "five")
        if score is None:
            await self.store.update_conversation(conversation.id,
                                                 {"csat_state": "not_answered"})
            return False
        await self.store.update_conversation(conversation.id, {
            "status": "resolved", "csat_state": "answered", "csat_score": str(score),
            "csat_answered_at": repr(time.time()), "csat_message": message_id})
        await self._record(conversation.id, message_id, agent, score)
        return True

    async def _record(self, conversation_id: str, message_id: str, agent: str | None,
                      score: int | None) -> None:
        """The ``rated`` event, once per answer (keyed by the message); ``score`` None: the
        retry of an answer already recorded, whose score is read back."""
        if score is None:
            k = self.store.keys_for(conversation_id)
            raw = None if k is None else await self.store.redis.hget(
                k.conversation(conversation_id), "csat_score")
            if raw is None:
                return
            score = int(raw)
        elif self.metrics is not None:
            self.metrics.csat_surveys.labels("answered", "").inc()
        if self.store.events is not None:
            await self.store.events.append("status", conversation_id, action="rated",
                                           agent=agent or None, reason=str(score),
                                           once=f"csat:{message_id}")


def link_signer(config: Config) -> LinkSigner | None:
    """The signer of survey links, when ``csat.link_secret`` and a public URL are set."""
    base = config.csat.link_base(config.hub.public_url)
    if base is None or config.csat.link_secret is None:
        return None
    return LinkSigner(config.csat.link_secret, base)


async def csat_ctx(app: web.Application) -> AsyncIterator[None]:
    """The survey sender's loop, when ``csat.enabled``; stopped on shutdown."""
    config = app[K.CONFIG].config
    store = app[K.STORE]
    if not config.csat.enabled or store.events is None:
        yield
        return
    supervisor = Supervisor("csat", app[K.HEALTH])
    sender = SurveySender(store, store.events, app[K.CHANNELS], config.csat,
                          RedisLeaseManager(store.redis, owner=consumer_name()),
                          labels=config.routing.channel_labels, metrics=app[K.METRICS],
                          links=link_signer(config))
    supervisor.loop("csat-surveys", sender.iteration,
                    idle_seconds=config.reports.aggregate_every_seconds, on_stop=sender.close)
    try:
        yield
    finally:
        supervisor.stop.set()
        await supervisor.wait(2.0)
        await supervisor.cancel_all()
        await sender.close()
