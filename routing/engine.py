"""The routing engine: classify a conversation, pick its queue, assign it atomically.

Python decides *what* is wanted (classification, rules, which pools an agent belongs to, SLA
deadlines in business hours); ``storage/lua/routing.lua`` decides *who*, in one atomic step per
event. Every event that can make an assignment possible calls the script at once (arrival,
agent online, capacity freed, step timeout), so nothing waits for a periodic sweep.

Routing state lives under its own hash tag; the conversation records in the partitions mirror
it through the ``events`` stream (``mirror_event``), so the API shows the current assignee.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from channels.models import InboundMessage
from routing.business_hours import BusinessHours, Calendar
from routing.classify.market import MarketGuess, classify_market
from routing.classify.skill import SkillClassifier
from routing.config import DEFAULT_KINDS, AgentConfig, QueueConfig, RoutingConfig, SlaPolicy
from routing.eligibility import agent_pools, pool_id
from routing.explain import describe
from routing.policy import RoutingDecision
from routing.priority import workflow_offset
from routing.rules import Facts, choose_queue
from storage.records import Conversation
from storage.routing_store import RoutingStore
from storage.store import Store

log = logging.getLogger(__name__)

AgentStatus = str  # "online" | "away" | "offline"
_STATUSES = ("online", "away", "offline")
_PHONE_CHANNELS = {"sms", "whatsapp", "twilio"}
# How long "this message was routed" is remembered: longer than any redelivery can take.
_MARKER_TTL = 7 * 86400


class RoutingError(Exception):
    """A routing request that cannot be honoured (unknown agent, agent full, ...)."""


class TransferRefused(RoutingError):
    """A transfer to an agent that routing will not make; ``code`` names the reason
    (unknown_agent, language_floor, not_routed, resolved, not_assigned_to_you,
    agent_offline, agent_full)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def language_gaps(agent: AgentConfig, queue: QueueConfig | None,
                  language: str | None) -> list[str]:
    """What the agent lacks for a transfer: every language the first (ideal) step of the
    conversation's queue requires, at its level, and the buyer's own language at some level.

    The stricter of the two readings of "the language floor": the queue's levels alone say
    nothing in a queue without language steps (the default queue), and "speaks it" alone
    would let a level-1 speaker take a queue the operator set to level 4.
    """
    needs: dict[str, int] = dict(queue.steps[0].languages) if queue and queue.steps else {}
    if language:
        needs[language] = max(needs.get(language, 1), 1)
    return [f"{lang} at level {level}" for lang, level in sorted(needs.items())
            if agent.languages.get(lang, 0) < level]


class RoutingEngine:
    def __init__(self, store: Store, cfg: RoutingConfig, *, identifier: Any,
                 skills: SkillClassifier, business_hours: BusinessHours | None = None,
                 checkpoint: Callable[[str], None] | None = None) -> None:
        self.store = store
        # Fault-injection hook between the steps of a decision (the hub's crash tests).
        self.checkpoint: Callable[[str], None] = checkpoint or (lambda _point: None)
        self._next_presence_check = 0.0
        self.state = RoutingStore(store.redis)
        self.cfg = cfg
        self.identifier = identifier
        self.skills = skills
        self.team_calendar = Calendar(business_hours or BusinessHours.always())
        self.always = Calendar(BusinessHours.always())
        self.queues = cfg.effective_queues()

    # -- plumbing ----------------------------------------------------------------------------

    async def call(self, command: str, *args: Any, now: float | None = None) -> Any:
        """One atomic routing decision (a command of ``storage/lua/routing.lua``)."""
        return await self.state.decide(command, *args, now=now)

    # -- configuration -----------------------------------------------------------------------

    async def sync(self) -> list[str]:
        """Publish settings and (re)place every known agent in the pools of the current rules.

        Each profile records where it came from (``origins``: "config" or "api"). The config
        file owns its agents: one that is no longer in the file is taken offline (its open
        conversations requeued) and removed. Agents created through the API are never touched
        by a reload; a config entry with the id of an API agent takes it over. Returns the ids
        removed.
        """
        await self.state.write_settings({
            "sticky_seconds": self.cfg.sticky_hours * 3600,
            "noreply_seconds": self.cfg.reassign_after_no_reply_minutes * 60,
            "requeue_boost": self.cfg.requeue_priority_boost,
            "sla_boost": self.cfg.sla_breach_priority_boost,
        })
        in_file = {agent.id for agent in self.cfg.agents}
        recorded = await self.state.origins()
        gone = sorted(a for a, origin in recorded.items()
                      if origin == "config" and a not in in_file)
        for agent in self.cfg.agents:
            await self.state.put_profile(agent.id, msgspec.json.encode(agent), origin="config")
        for agent_id in gone:
            await self._remove_config_agent(agent_id)
        for agent in await self.agents():
            await self._place(agent)
        return gone

    async def _remove_config_agent(self, agent_id: str) -> None:
        """Offline first (the script requeues their work and drops them from every pool), then
        forget them. The profile goes before the script call, so no status change through the
        API can place them again in between."""
        raw = await self.state.take_profile(agent_id)
        profile = (msgspec.json.decode(raw, type=AgentConfig) if raw is not None
                   else AgentConfig(id=agent_id, capacity={}))
        caps = ",".join(f"{k}={v}" for k, v in sorted(profile.capacity.items()))
        requeued = await self.call("agent", agent_id, "offline", caps, "", profile.weight)
        await self.state.forget_agent(agent_id)
        log.info("agent %s removed from the config: %d conversations requeued",
                 agent_id, len(requeued) // 2)

    async def agents(self) -> list[AgentConfig]:
        raw = await self.state.profiles()
        agents = [msgspec.json.decode(v, type=AgentConfig) for v in raw.values()]
        return sorted(agents, key=lambda a: a.id)

    async def agent(self, agent_id: str) -> AgentConfig | None:
        raw = await self.state.profile(agent_id)
        return None if raw is None else msgspec.json.decode(raw, type=AgentConfig)

    async def put_agent(self, agent: AgentConfig) -> list[tuple[str, str]]:
        # Created here: a reload leaves it alone. A config agent edited here stays the file's.
        await self.state.put_profile(agent.id, msgspec.json.encode(agent), origin="api",
                                     keep_origin=True)
        return await self._place(agent)

    async def set_status(self, agent_id: str, status: AgentStatus) -> list[tuple[str, str]]:
        if status not in _STATUSES:
            raise RoutingError(f"status must be one of {', '.join(_STATUSES)}")
        agent = await self.agent(agent_id)
        if agent is None:
            raise RoutingError(f"no agent {agent_id!r}")
        now = time.time()
        await self.state.set_presence(agent_id, status, now)
        # Apply the status asked for, not a re-read of presence another process may have
        # changed in between; check_presence reconciles the rare cross-process race.
        return await self._place_as(agent, self.effective_status(agent, status, now), now,
                                    expect_presence=status)

    async def heartbeat(self, agent_id: str) -> None:
        await self.state.heartbeat(agent_id, time.time())

    async def desired_status(self, agent_id: str) -> AgentStatus:
        return await self.state.presence(agent_id) or "offline"

    def effective_status(self, agent: AgentConfig, desired: AgentStatus, now: float) -> str:
        """Online only inside the agent's working hours: end of shift hands work back."""
        if desired == "online" and agent.working_hours:
            hours = BusinessHours(timezone=agent.timezone, weekly=agent.working_hours)
            if not Calendar(hours).is_open(now):
                return "offline"
        return desired

    async def _place(self, agent: AgentConfig, now: float | None = None) -> list[tuple[str, str]]:
        """Place the agent as their presence says. The placement is applied only if the
        presence is still what was read: a status change in between is not undone."""
        now = time.time() if now is None else now
        presence = await self.state.presence(agent.id)
        status = self.effective_status(agent, presence or "offline", now)
        return await self._place_as(agent, status, now, expect_presence=presence or "")

    # -- the pipeline's routing step ---------------------------------------------------------

    async def route(self, conversation: Conversation, message: InboundMessage,
                    *, replace: bool = False) -> RoutingDecision:
        """Classify and enqueue; ``replace`` re-routes an already routed conversation
        (language correction) in the same atomic step that takes it from its agent.

        The "already routed" marker of a message is set by the step that acts on it (the
        follow-up step, or the enqueue step), never before: a crash or a Redis timeout anywhere
        in between leaves the stream entry to be redelivered and routed again, not mistaken for
        a duplicate.
        """
        kind = self.cfg.kind_of(conversation.channel)
        label = self.label_of(conversation, message)
        marker = ""
        if not replace:
            marker = message.provider_message_id
            # One round trip: redelivered entry? open conversation? (routing.lua "inbound")
            state = await self.call("inbound", conversation.id, marker, _MARKER_TTL,
                                    *self._clock_args(("next",), kind, conversation, label))
            verdict = state[0].decode()
            if verdict in ("dup", "followup"):
                return RoutingDecision(fields={})
            corrected = state[1] == b"agent"
            self.checkpoint("router:after-inbound")
        else:
            corrected = True
        language, market, skill = await asyncio.to_thread(
            self._classify, conversation, message,
            conversation.language if corrected else None)
        facts = Facts(channel=conversation.channel, channel_instance=conversation.channel_instance,
                      channel_label=self.cfg.channel_labels.get(conversation.channel_instance),
                      hint_label=label,
                      language=language.language, market=market.market, skill=skill.skill)
        match = choose_queue(self.cfg, facts)
        queue = self.cfg.queue(match.queue)
        explain = {
            "event": "classified", "at": time.time(),
            "language": language.language, "language_confidence": language.confidence,
            "language_source": language.source, "language_candidates": language.candidates,
            "language_low_confidence": language.low_confidence,
            "market": market.market, "market_source": market.source,
            "market_evidence": market.evidence, "skill": skill.skill, "skill_rule": skill.rule,
            "skill_keyword": skill.matched, "rule": match.rule, "queue": match.queue,
            "priority": match.priority,
        }
        fields = {"queue": match.queue, "skill": skill.skill or "",
                  "language_confidence": repr(language.confidence),
                  "language_low_confidence": "1" if language.low_confidence else ""}
        if language.language:
            fields["language"] = language.language
        if market.market:
            fields["market"] = market.market
        hints = message.hints
        for name, value in (("label", label), ("replies_disabled", hints.replies_disabled),
                            ("answer_url", hints.answer_url)):
            if value:
                fields[name] = value
        self.checkpoint("router:after-classify")
        result = await self._enqueue(
            conversation, queue, kind, match.priority, explain, replace=replace,
            marker=marker, classification=fields,
            clocks=self._clock_args(("first", "resolution"), kind, conversation, label))
        self.checkpoint("router:after-enqueue")
        outcome = result[0].decode()
        return RoutingDecision(
            fields=fields, queue=match.queue,
            assignee=result[1].decode() if outcome == "assigned" else None,
            language=language.language, market=market.market,
        )

    def _classify(self, conversation: Conversation, message: InboundMessage,
                  corrected_language: str | None) -> tuple[Any, MarketGuess, Any]:
        """Language, market and skill: CPU work (lingua, regexes, phone parsing) that runs in a
        worker thread, never on the event loop."""
        market = self._market(conversation, message)  # a weak prior for the language
        language = self._language(message, corrected_language, market.market)
        skill = self.skills.classify(message.text, language.language)
        return language, market, skill

    async def _enqueue(self, conversation: Conversation, queue: QueueConfig, kind: str,
                       priority: int, explain: dict[str, Any], *, replace: bool,
                       marker: str = "", classification: dict[str, str] | None = None,
                       clocks: Sequence[str] = ()) -> Any:
        try:
            return await self._enqueue_call(conversation, queue, kind, priority, explain,
                                            replace=replace, marker=marker,
                                            classification=classification, clocks=clocks)
        except ResponseError as exc:
            if "CLOSED" in str(exc):
                raise TransferRefused("resolved", "conversation is resolved; a transfer does "
                                                  "not reopen it") from None
            raise

    async def _enqueue_call(self, conversation: Conversation, queue: QueueConfig, kind: str,
                            priority: int, explain: dict[str, Any], *, replace: bool,
                            marker: str, classification: dict[str, str] | None,
                            clocks: Sequence[str]) -> Any:
        return await self.call(
            "enqueue", conversation.id, queue.name,
            ",".join(pool_id(queue.name, i) for i in range(len(queue.steps))),
            ",".join(repr(s.after_seconds) for s in queue.steps),
            kind, priority, conversation.contact_id,
            msgspec.json.encode(explain).decode(), "1" if replace else "",
            ",".join("1" if s.skip_when_unstaffed else "0" for s in queue.steps),
            marker, _MARKER_TTL, msgspec.json.encode(classification or {}).decode(),
            workflow_offset(conversation.priority), *clocks,
        )

    def _language(self, message: InboundMessage, corrected_language: str | None,
                  market: str | None = None) -> Any:
        from routing.classify.language import LanguageGuess

        if corrected_language:
            return LanguageGuess(corrected_language, 1.0, "agent", ())
        if self.identifier is None:
            return LanguageGuess(message.hints.language, 0.5 if message.hints.language else 0.0,
                                 "hint" if message.hints.language else "none", ())
        return self.identifier.identify(message.text, message.hints.language, market=market)

    def _market(self, conversation: Conversation, message: InboundMessage) -> MarketGuess:
        hints = message.hints
        if hints.market:
            return MarketGuess(hints.market.upper(), None, "channel_hint", hints.market.upper())
        handle = message.sender_handle
        return classify_market(
            marketplace_site=hints.marketplace_site,
            sender_email=handle if "@" in handle else None,
            phone=handle if conversation.channel in _PHONE_CHANNELS else None,
            phone_country=hints.phone_country,
            channel_default=self.cfg.channel_markets.get(conversation.channel_instance),
        )

    def label_of(self, conversation: Conversation, message: InboundMessage) -> str | None:
        """The label the channel gave (Amazon's relay in a shared mailbox): the message's,
        else the one the conversation got from its first message. The instance's configured
        label (``channel_labels``) is separate and applies too (``sla_policy``, rules)."""
        return message.hints.label or conversation.label

    def _clock_args(self, clocks: Sequence[str], kind: str,
                    conversation: Conversation, label: str | None) -> list[str]:
        """``"<clock>:<started>"`` tokens and deadlines for the clocks that apply, as script
        arguments: started in the same atomic step as the event that starts them.

        The most specific policy wins: the channel instance's (``[routing.sla.amazon-es]``),
        its label's (``channel_labels``), its type's, then its capacity kind's.
        """
        policy = self.sla_policy(conversation.channel_instance, conversation.channel, kind,
                                 label)
        if policy is None:
            return []
        now = time.time()
        calendar = self.always if policy.always else self.team_calendar
        out: list[str] = []
        for clock in clocks:
            minutes = {"first": policy.first_response_minutes,
                       "next": policy.next_response_minutes,
                       "resolution": policy.resolution_minutes}[clock]
            if minutes > 0:
                out += [f"{clock}:{now!r}", repr(calendar.add(now, minutes * 60))]
        return out

    def sla_policy(self, instance: str, channel_type: str, kind: str,
                   label: str | None = None) -> SlaPolicy | None:
        """The instance's policy, the channel-given label's (``label``), the instance's
        configured label's, the type's, the capacity kind's: the most specific wins."""
        for key in (instance, label, self.cfg.channel_labels.get(instance), channel_type,
                    kind):
            if key is not None and key in self.cfg.sla:
                return self.cfg.sla[key]
        return None

    # -- agent actions -----------------------------------------------------------------------

    async def set_workflow_priority(self, conversation_id: str, level: str) -> str:
        """Make an agent's priority level count (routing/priority.py): stored in the routing
        state for every later routing, and a waiting conversation re-placed in its queue in
        the same atomic step. Returns its routing status ("" when never routed)."""
        status = await self.call("priority", conversation_id, workflow_offset(level), level)
        return status.decode() if isinstance(status, bytes) else str(status)

    async def agent_replied(self, conversation_id: str) -> None:
        await self.call("awaiting", conversation_id, "0")

    async def release(self, conversation_id: str, status: str = "closed") -> list[tuple[str, str]]:
        return _pairs(await self.call("release", conversation_id, status))

    async def transfer_to_agent(self, conversation_id: str, agent_id: str, *,
                                conversation: Conversation | None = None,
                                only_from: str | None = None,
                                only_waiting: bool = False) -> None:
        """Hand a conversation to one agent, in one atomic step.

        The target must exist, be online with room for the conversation's kind (weight 0 is
        fine: that is what weight 0 is for) and meet the language floor (``language_gaps``).
        A resolved conversation is never revived. ``only_from`` makes the transfer conditional
        on the current assignee, checked inside the step (an agent hands over only their own);
        ``only_waiting`` on nobody having it (an agent takes it from the queue).
        """
        target = await self.agent(agent_id)
        if target is None:
            raise TransferRefused("unknown_agent", f"no agent {agent_id!r}")
        if conversation is None:
            conversation = await self.store.get_conversation(conversation_id)
        raw_queue, raw_status = await self.state.conversation_fields(conversation_id,
                                                                     ("queue", "status"))
        if raw_status and raw_status not in ("assigned", "waiting"):
            # Said before judging the target; the atomic step checks it again.
            raise TransferRefused("resolved", "conversation is resolved; a transfer does not "
                                              "reopen it")
        queue = None
        if raw_queue:
            with contextlib.suppress(KeyError):
                queue = self.cfg.queue(raw_queue)
        gaps = language_gaps(target, queue, conversation.language if conversation else None)
        if gaps:
            raise TransferRefused("language_floor",
                                  f"agent {agent_id} does not meet the language floor: "
                                  f"needs {', '.join(gaps)}")
        try:
            await self.call("transfer_agent", conversation_id, agent_id,
                            "~waiting" if only_waiting else only_from or "")
        except ResponseError as exc:
            reason = {"NOCONV": ("not_routed", "conversation has not been routed"),
                      "CLOSED": ("resolved", "conversation is resolved; a transfer does not "
                                             "reopen it"),
                      "NOTYOURS": ("not_assigned_to_you",
                                   f"conversation is no longer assigned to {only_from}"),
                      "NOTWAITING": ("not_waiting", "conversation is no longer waiting: "
                                                    "someone else has it"),
                      "OFFLINE": ("agent_offline", f"agent {agent_id} is not online"),
                      "FULL": ("agent_full", f"agent {agent_id} has no free capacity")}
            for code, (name, text) in reason.items():
                if code in str(exc):
                    raise TransferRefused(name, text) from None
            raise

    async def transfer_to_queue(self, conversation: Conversation, queue_name: str) -> None:
        try:
            queue = self.cfg.queue(queue_name)
        except KeyError:
            raise RoutingError(f"no queue {queue_name!r}") from None
        await self._enqueue(conversation, queue, self.cfg.kind_of(conversation.channel),
                            queue.priority,
                            {"event": "transferred", "at": time.time(), "queue": queue.name},
                            replace=True)

    async def correct_language(self, conversation: Conversation, language: str,
                               message: InboundMessage) -> None:
        """An agent's correction wins over identification and routes the conversation again."""
        await self.state.set_conversation_field(conversation.id, "language_by", "agent")
        await self.store.update_conversation(conversation.id, {"language": language})
        corrected = msgspec.structs.replace(conversation, language=language)
        try:
            decision = await self.route(corrected, message, replace=True)
        except TransferRefused as exc:
            if exc.code != "resolved":
                raise
            return  # recorded; a resolved conversation is routed by the buyer's next message
        if decision.fields:
            await self.store.update_conversation(conversation.id, decision.fields)

    async def explain(self, conversation_id: str) -> list[dict[str, Any]]:
        """The decision log, oldest first; ``text`` says each entry in an operator's words."""
        rows = await self.state.decision_log(conversation_id)
        state = await self.routing_state(conversation_id)
        entries = [msgspec.json.decode(r) for r in reversed(rows)]
        return [{**e, "text": describe(e, state)} for e in entries]

    async def routing_state(self, conversation_id: str) -> dict[str, str]:
        return await self.state.conversation_state(conversation_id)

    async def queue_stats(self) -> list[dict[str, Any]]:
        out = []
        kinds = sorted(set(DEFAULT_KINDS.values()) | set(self.cfg.channel_kinds.values()))
        for queue in self.queues:
            for i, _step in enumerate(queue.steps):
                p = pool_id(queue.name, i)
                waiting, available, online = await self.state.pool_counts(p, kinds)
                out.append({"queue": queue.name, "step": i + 1, "pool": p, "waiting": waiting,
                            "available_agents": available, "online_agents": online})
        return out

    async def agent_state(self, agent_id: str) -> dict[str, Any]:
        record, convs = await self.state.agent_record(agent_id)
        state: dict[str, Any] = dict(record)
        state["conversations"] = convs
        state["desired_status"] = await self.desired_status(agent_id)
        return state

    # -- background: timers, shifts, mirror --------------------------------------------------

    async def tick_timers(self, *, heartbeat_grace: float = 0.0,
                          presence_every: float = 30.0) -> bool:
        """One pass of the timers loop: fire due timers (escalation, no-reply, SLA) and, every
        ``presence_every`` seconds, re-check shifts and heartbeats. True when timers fired."""
        fired = await self.fire_due_timers()
        if time.monotonic() >= self._next_presence_check:
            await self.check_presence(heartbeat_grace)
            self._next_presence_check = time.monotonic() + presence_every
        return fired > 0

    async def fire_due_timers(self, now: float | None = None, batch: int = 200) -> int:
        members = await self.call("timers", batch, 30, now=now)
        for raw in members:
            member = raw.decode()
            kind, conv, token = member.split("|", 2)
            try:
                if kind == "escalate":
                    await self.call("escalate", conv, token, now=now)
                elif kind == "noreply":
                    await self.call("noreply", conv, token, now=now)
                elif kind == "sla":
                    await self.call("sla_due", conv, token, now=now)
            except ResponseError:
                log.exception("routing timer %s failed", kind)
            await self.call("ack", member, now=now)
        return len(members)

    async def check_presence(self, heartbeat_grace: float = 0.0,
                             now: float | None = None) -> None:
        """End of shift and lost heartbeats take an agent offline (their work is requeued)."""
        now = time.time() if now is None else now
        beats = await self.state.heartbeats()
        for agent in await self.agents():
            presence = await self.state.presence(agent.id)
            effective = self.effective_status(agent, presence or "offline", now)
            seen = beats.get(agent.id)
            if heartbeat_grace > 0 and effective == "online" and seen is not None \
                    and now - seen > heartbeat_grace:
                effective = "offline"
            if (await self.state.placed_status(agent.id) or "offline") != effective:
                log.info("agent %s is now %s", agent.id, effective)
                # Only if the presence read above still holds: an agent who went online
                # since is not taken offline by this pass (the next one sees them).
                await self._place_as(agent, effective, now, expect_presence=presence or "")

    async def _place_as(self, agent: AgentConfig, status: str, now: float, *,
                        expect_presence: str | None = None) -> list[tuple[str, str]]:
        """Put the agent in its pools with this status; returns assignments and requeues.
        With ``expect_presence``, only while the stored presence is still that (atomically,
        in routing.lua): what a caller computed from a presence it read is never applied
        over a status change made after the read."""
        pools = agent_pools(agent, self.queues)
        caps = ",".join(f"{k}={v}" for k, v in sorted(agent.capacity.items()))
        pool_arg = ",".join(f"{p}={r}" for p, r in sorted(pools.items()))
        extra = () if expect_presence is None else (expect_presence,)
        out = await self.call("agent", agent.id, status, caps, pool_arg, agent.weight, *extra,
                              now=now)
        return _pairs(out)

    async def mirror_event(self, conversation_id: str) -> None:
        """Copy the current routing state onto the conversation record the API reads.

        The classification travels too: the router writes it at once, and this copy repairs a
        record the router could not finish (a crash right after the enqueue step).
        """
        state = await self.state.conversation_fields(
            conversation_id, ("status", "assignee", "queue", "pool", *_MIRRORED))
        status = state[0]
        mapped = {"assigned": "assigned", "waiting": "queued", "routing": "queued",
                  "closed": "resolved"}.get(status or "")
        if mapped is None:
            return
        fields = {"status": mapped, "assignee": state[1] or "",
                  "pool": state[3] if state[3] and status == "waiting" else ""}
        if state[2]:
            fields["queue"] = state[2]
        for name, value in zip(_MIRRORED, state[4:], strict=True):
            if value is not None:
                fields[name.removeprefix("cls:")] = value
        # Routing state exists only for conversations the router saw, so the record exists.
        await self.store.update_conversation(conversation_id, fields)


_MIRRORED = ("cls:language", "cls:market", "cls:skill", "cls:language_confidence",
             "cls:language_low_confidence", "cls:label", "cls:replies_disabled",
             "cls:answer_url")


def _pairs(flat: Sequence[Any]) -> list[tuple[str, str]]:
    items = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
    return list(zip(items[0::2], items[1::2], strict=False))


async def reload_engine(engine: RoutingEngine, cfg: RoutingConfig) -> int:
    """Swap in new rules atomically for new decisions and re-place every agent.

    Conversations keep their current queue and step; only those waiting in a pool that no
    longer exists are routed again (to their queue's first step, or the default queue), so a
    reload never strands work.
    """
    from routing.config import validate_routing

    validate_routing(cfg)
    engine.cfg = cfg
    engine.queues = cfg.effective_queues()
    removed = await engine.sync()
    live = {pool_id(q.name, i) for q in engine.queues for i in range(len(q.steps))}
    moved = 0
    stale = {pool async for pool in engine.state.waiting_pools()} - live
    for pool in sorted(stale):
        for cid in await engine.state.take_waiting(pool):
            conversation = await engine.store.get_conversation(cid)
            if conversation is None:
                continue
            queue = conversation.queue if conversation.queue in {q.name for q in engine.queues} \
                else cfg.default_queue
            await engine.transfer_to_queue(conversation, queue or cfg.default_queue)
            moved += 1
    log.info("routing reloaded: %d queues, %d config agents (%d removed), "
             "%d conversations re-queued", len(engine.queues), len(cfg.agents), len(removed),
             moved)
    return moved
