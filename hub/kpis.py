"""The KPI aggregator: folds the event log into hour buckets (storage/kpis.py).

One supervised loop per hub process; a lease makes one of them do the work at a time, and
the cursor check in ``lua/kpis.lua`` makes a batch count once even if two ever overlap (a
lease lost mid-batch) or a process dies after reading and before writing.

What each event does (``state`` is the per-conversation hash ``ih:{kpi}:c:<id>``):

- ``new_message``: counts ``messages_in`` (and ``conversations`` when it opened one); starts
  the response clock at the oldest unanswered buyer message and the episode at the first.
- ``reply``: ``first_response`` (the conversation's first reply) or ``next_response`` from
  the oldest unanswered buyer message; ``response`` once per buyer message it answers
  (their mean wait); whether the first-response SLA had been breached by then.
- ``assignment``: ``queue_wait`` from queued (or from the episode's start, for a direct
  assignment) to the first assignment; ``transfers``, ``escalations``.
- ``status`` resolved: ``resolution`` from the episode's first buyer message; ``reopened``.
- ``sla_breach``: ``sla_breaches``, marking a first-response breach; ``delivery`` failed:
  ``delivery_failed``.

Dimensions are the conversation's as the aggregator sees them (it runs seconds behind the
facts): a language corrected an hour later leaves earlier samples where they were. Events of
a conversation routing has not classified yet wait for it (``first_unrouted``), so a new
conversation is counted under its language, market and queue, not under none. Spam and
blocked conversations are left out, as the issue asks of every KPI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

from aiohttp import web

from channels.supervisor import Supervisor
from hub import keys as K
from hub.metrics import Metrics
from hub.roles import role_of, runs_workers
from hub.service_metrics import observe_batch
from hub.views import agent_state
from routing.business_hours import Calendar
from storage.events import Event, EventLog
from storage.kpis import Batch, KpiStore, Sample
from storage.leases import RedisLease, RedisLeaseManager
from storage.records import Conversation
from storage.store import Store
from storage.streams import consumer_name

log = logging.getLogger(__name__)

# The author of satisfaction surveys (hub/csat.py): not an agent, never a reply in a KPI.
SURVEY_AUTHOR = "inboxhub:survey"

LEASE_NAME = "kpi-aggregator"
LEASE_SECONDS = 30.0
BATCH = 500
#: What fold reads of a conversation: its dimensions, its holder, and whether it counts.
FOLD_FIELDS = ("channel", "queue", "language", "market", "skill", "assignee", "spam",
               "blocked", "status")
#: How long an event of a conversation routing has not classified yet is held back. Its
#: language, market and queue come from routing, milliseconds after the message is stored;
#: folded before that, a conversation would count under no language. Past this (routing
#: down), it is counted with what is known, rather than stopping every report.
UNROUTED_HOLD_SECONDS = 30.0


def first_unrouted(events: Sequence[Event], conversations: dict[str, Conversation],
                   now: float) -> int | None:
    """The index of the first event whose conversation still waits for routing (status
    ``new``: stored, not yet classified), unless it has waited ``UNROUTED_HOLD_SECONDS``;
    None when every event can be folded now. Events after it wait too: the cursor is one
    position, and the batch is folded in order."""
    for i, event in enumerate(events):
        conversation = conversations.get(event.conversation_id)
        if (conversation is not None and conversation.status == "new"
                and not conversation.spam and not conversation.blocked
                and now - event.at < UNROUTED_HOLD_SECONDS):
            return i
    return None


class KpiAggregator:
    """A supervised loop's body: ``iteration`` counts one batch, True while there is more."""

    def __init__(self, store: Store, events: EventLog, kpis: KpiStore, calendar: Calendar,
                 leases: RedisLeaseManager, *, batch: int = BATCH,
                 metrics: Metrics | None = None,
                 online_agents: Callable[[], Awaitable[list[str]]] | None = None) -> None:
        self.store = store
        self.events = events
        self.kpis = kpis
        self.calendar = calendar
        self.leases = leases
        self.batch = batch
        self.metrics = metrics
        self.online_agents = online_agents
        self._sampled_minute = 0
        self._lease: RedisLease | None = None

    async def iteration(self) -> bool:
        if not await self._hold_lease():
            return False
        await self.sample_online(time.time())
        return await self.step()

    async def sample_online(self, now: float) -> bool:
        """Once a minute, a minute online for every agent online now: the denominator of
        "conversations handled per agent-hour online". Keyed by the minute, so a new lease
        holder or a restart never counts a minute twice."""
        minute = int(now // 60)
        if self.online_agents is None or minute == self._sampled_minute:
            return False
        self._sampled_minute = minute
        agents = await self.online_agents()
        if not agents:
            return False
        batch = Batch()
        for agent in agents:
            batch.add(Sample("online", minute * 60.0, {"agent": agent}, score=60.0))
        return await self.kpis.add_once(f"online:{minute}", batch)

    async def _hold_lease(self) -> bool:
        if self._lease is not None and await self._lease.renew():
            return True
        self._lease = await self.leases.acquire(LEASE_NAME, LEASE_SECONDS)
        return self._lease is not None

    async def close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def step(self) -> bool:
        """Count the next batch after the cursor; True when a batch was read (more may wait)."""
        cursor = await self.kpis.cursor()
        last_id, events = await self.events.after_raw(cursor or "0-0", self.batch)
        if last_id is None:
            return False
        if cursor and await self.events.lost_since(cursor):
            log.warning("KPI aggregator fell behind the event log's retention: events after "
                        "%s were trimmed before they were counted", cursor)
        conversation_ids = [e.conversation_id for e in events]
        states = await self.kpis.states(conversation_ids)
        conversations = {c.id: c for c in await self.store.get_conversations(
            dict.fromkeys(conversation_ids), fields=FOLD_FIELDS)}
        held = first_unrouted(events, conversations, time.time())
        if held is not None:
            if held == 0:
                return False  # the oldest event waits for its routing: try again shortly
            events, last_id = events[:held], events[held - 1].id
        batch = fold(events, states, conversations, self.calendar)
        if not await self.kpis.apply(cursor, last_id, batch):
            log.info("KPI batch after %s was counted by another process", cursor or "start")
        elif self.metrics is not None:
            observe_batch(self.metrics, batch)
        return True


def dims_of(conversation: Conversation, agent: str | None) -> dict[str, str]:
    return {
        "agent": agent or "",
        "queue": conversation.queue or "",
        "language": conversation.language or "",
        "market": conversation.market or "",
        "channel": conversation.channel,
        "skill": conversation.skill or "",
    }


def fold(events: Sequence[Event], states: dict[str, dict[str, str]],
         conversations: dict[str, Conversation], calendar: Calendar) -> Batch:
    """The writes for ``events`` in order, given each conversation's state before them.
    Pure: the same inputs always give the same batch (what makes a replay harmless)."""
    batch = Batch()
    working = {cid: dict(state) for cid, state in states.items()}
    changed: set[str] = set()
    for event in events:
        conversation = conversations.get(event.conversation_id)
        if conversation is None or conversation.spam or conversation.blocked:
            continue  # erased, spam or blocked: not part of any KPI
        state = working.setdefault(event.conversation_id, {})
        for sample in _samples(event, state, conversation, calendar):
            batch.add(sample)
        changed.add(event.conversation_id)
    for cid in changed:
        state, before = working[cid], states.get(cid, {})
        if not state:
            if before:
                batch.delete_state(cid)
            continue
        diff = {k: v for k, v in state.items() if before.get(k) != v}
        diff.update({k: "" for k in before if k not in state})
        if diff:
            batch.set_state(cid, diff)
    return batch


def _f(state: dict[str, str], name: str) -> float | None:
    raw = state.get(name)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _samples(event: Event, state: dict[str, str], conversation: Conversation,
             calendar: Calendar) -> Iterable[Sample]:
    at = event.at
    holder = state.get("agent") or conversation.assignee

    def count(measure: str, agent: str | None = holder, amount: int = 1,
              when: float = at) -> Sample:
        return Sample(measure, when, dims_of(conversation, agent), amount=amount)

    def duration(measure: str, since: float, agent: str | None = holder,
                 amount: int = 1, total: float | None = None) -> Sample:
        wall = at - since if total is None else total
        business = (calendar.elapsed(since, at) if amount == 1
                    else wall * _business_share(calendar, since, at))
        return Sample(measure, at, dims_of(conversation, agent), seconds=wall,
                      business_seconds=business, amount=amount)

    kind, action = event.kind, event.action
    if kind == "reply" and event.agent == SURVEY_AUTHOR:
        yield count("csat_sent", state.get("resolved_by"))  # not an agent's reply
        return
    if kind == "status" and action == "survey_link":
        yield count("csat_sent", state.get("resolved_by"))  # a link instead of a message
        return
    if kind == "status" and action == "rated":
        # The buyer's message was their survey answer: the reopening it caused is undone
        # (hub/csat.py resolves it again, unrouted), and the score is counted for whoever
        # resolved the conversation. An answer on the survey page caused no reopening: one
        # that happened meanwhile stays.
        if event.via != "link" and state.pop("reopen_at", None) is not None:
            for name in ("open_at", "since", "pending", "pending_sum"):
                state.pop(name, None)
            state["resolved"] = "1"
        try:
            score = float(event.reason or "")
        except ValueError:
            return
        if 1 <= score <= 5:
            agent = event.agent or state.get("resolved_by")
            yield Sample("csat", at, dims_of(conversation, agent), score=score)
            if score >= 4:
                yield count("csat_satisfied", agent)
        return
    if kind in ("viewing", "typing"):
        return
    reopened = state.pop("reopen_at", None)
    if reopened is not None:  # a reopening that was not a survey answer: it counts
        yield count("reopened", when=float(reopened))
    if kind == "new_message":
        yield count("messages_in")
        if event.new_conversation:
            yield count("conversations")
        state.setdefault("open_at", repr(at))
        state.setdefault("since", repr(at))
        state["pending"] = str(int(_f(state, "pending") or 0) + 1)
        state["pending_sum"] = repr((_f(state, "pending_sum") or 0.0) + at)
    elif kind == "reply":
        agent = event.agent or holder
        yield count("replies", agent)
        since = _f(state, "since")
        if since is not None:
            first = "responded" not in state
            yield duration("first_response" if first else "next_response", since, agent)
            if first and state.get("first_late"):
                yield count("first_response_breached", agent)
            pending = int(_f(state, "pending") or 0)
            if pending:
                total = pending * at - (_f(state, "pending_sum") or 0.0)
                yield duration("response", since, agent, amount=pending, total=total)
            state["responded"] = "1"
        for name in ("since", "pending", "pending_sum"):
            state.pop(name, None)
    elif kind == "assignment":
        if action in ("queued", "requeued"):
            state.setdefault("queued_at", repr(at))
        elif action == "escalated":
            yield count("escalations")
            state.setdefault("queued_at", repr(at))
        elif action in ("assigned", "transferred"):
            if action == "transferred":
                yield count("transfers", event.agent)
            start = _f(state, "queued_at")
            if start is None and "assigned" not in state:
                start = _f(state, "open_at")
            if start is not None:
                yield duration("queue_wait", start, event.agent)
            state.pop("queued_at", None)
            state["assigned"] = "1"
            if event.agent:
                state["agent"] = event.agent
        elif action == "released":
            state.pop("agent", None)
    elif kind == "status":
        if action == "resolved" and not state.get("resolved"):
            opened = _f(state, "open_at")
            if opened is not None:
                yield duration("resolution", opened)
            yield count("resolved")
            responded = state.get("responded")
            state.clear()
            state["resolved"] = "1"
            if holder:
                state["resolved_by"] = holder
            if responded:
                state["responded"] = responded
        elif action == "reopened" and state.get("resolved"):
            # Counted at the conversation's next event, unless that is a survey answer.
            state["reopen_at"] = repr(at)
            state.pop("resolved", None)
            state["open_at"] = repr(at)
            state.setdefault("since", repr(at))
    elif kind == "sla_breach":
        yield count("sla_breaches")
        if event.clock == "first_response" and "responded" not in state:
            state["first_late"] = "1"
    elif kind == "delivery" and action == "failed":
        yield count("delivery_failed", event.agent)


def _business_share(calendar: Calendar, start: float, end: float) -> float:
    """For a grouped sample (several buyer messages answered at once): the business share of
    the span from the oldest of them, applied to their summed wait."""
    if end <= start:
        return 1.0
    return calendar.elapsed(start, end) / (end - start)


async def kpis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The KPI store for the reports and the aggregator loop, stopped on shutdown. Without
    an event log (a hub with events off) there is nothing to aggregate: reports stay empty.
    With ``reports.aggregate`` off there is no loop: reports serve the buckets as they are."""
    config = app[K.CONFIG].config
    store = app[K.STORE]
    app[K.KPIS] = KpiStore(store.redis, retention_days=config.reports.retention_days)
    supervisor = Supervisor("kpis", app[K.HEALTH])
    aggregator: KpiAggregator | None = None
    # The store serves the reports in every role; the aggregator is a workers' loop.
    if store.events is not None and config.reports.aggregate and runs_workers(role_of(app)):
        engine = app[K.ROUTING]

        async def online_agents() -> list[str]:
            return [agent.id for agent in await engine.agents()
                    if agent_state(await engine.agent_state(agent.id)).status == "online"]

        aggregator = KpiAggregator(
            store, store.events, app[K.KPIS], engine.team_calendar,
            RedisLeaseManager(store.redis, owner=consumer_name()), metrics=app[K.METRICS],
            online_agents=online_agents)
        supervisor.loop("kpi-aggregator", aggregator.iteration,
                        idle_seconds=config.reports.aggregate_every_seconds,
                        on_stop=aggregator.close)
    try:
        yield
    finally:
        supervisor.stop.set()
        await supervisor.wait(2.0)
        await supervisor.cancel_all()
        if aggregator is not None:
            await aggregator.close()
