"""What the API answers, as Structs: every response body is one of these (or a record from
``storage.records``), encoded by msgspec and published from the same types in the OpenAPI document.

Routing keeps its state as Redis hash strings (``"cap:chat": "4"``); the converters here turn
them into typed fields once, at the edge, so clients get numbers, booleans and maps.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from channels.attachments import AttachmentPolicy
from channels.models import DraftCheck
from channels.windows import TemplateSpec, WindowState
from routing.config import AgentConfig
from storage.records import Conversation, DeadLetter, MessageView, QuarantineEntry

Presence = Literal["online", "away", "offline"]


class ConversationDetail(msgspec.Struct, frozen=True):
    """A conversation with a page of its messages in sequence order; ``next_cursor``
    continues the messages (null: there are no more). ``reply_window`` says what a reply may
    be now (free text, a tag, a template), the rules a reply is checked against (null: the
    conversation's channel instance is not configured)."""

    conversation: Conversation
    messages: list[MessageView]
    next_cursor: str | None = None
    reply_window: WindowState | None = None
    # The approved templates for the conversation's language (what the agent can send when
    # the window has closed; name, language, parameter labels, body).
    templates: list[TemplateSpec] = []
    # The order the conversation is about: the newest order id a channel parsed from the
    # buyer's messages at ingest (ChannelHints.order_id; null: none given).
    order_id: str | None = None
    # What a reply here may attach (the channel's rules, narrowed by its settings and the
    # hub's cap): max_count 0 means none; types empty means any. Null: the channel instance
    # is not configured. The upload route judges every file by the same policy.
    attachment_policy: AttachmentPolicy | None = None


class ConversationItem(Conversation, frozen=True):
    """A row of a conversation list: the conversation as stored, plus ``sla_due_at``, the
    soonest deadline among its running SLA clocks (UNIX seconds; in the past once breached,
    until an agent's answer or resolve stops the clock; null: no clock running), so the inbox
    can show a countdown without a request per row."""

    sla_due_at: float | None = None


def list_items(conversations: list[Conversation],
               deadlines: dict[str, float]) -> list[ConversationItem]:
    """The list rows for ``conversations`` with their deadlines (``storage.sla``)."""
    return [ConversationItem(**{f: getattr(c, f) for f in c.__struct_fields__},
                             sla_due_at=deadlines.get(c.id)) for c in conversations]


class ConversationList(msgspec.Struct, frozen=True):
    """One page; pass ``next_cursor`` as ``cursor`` for the next (null: last page)."""

    conversations: list[ConversationItem]
    next_cursor: str | None


class MessageList(msgspec.Struct, frozen=True):
    messages: list[MessageView]
    next_cursor: str | None


class DraftAnswer(msgspec.Struct, frozen=True):
    """What the reply box shows under a draft: ``check`` (length, limit, parts or SMS
    segments, and the refusal the channel would give), ``reply_window`` (null: the channel
    instance is not configured) and ``refused``, set while the conversation takes no replies
    at all (the buyer is unreachable, or a no-reply sender: ``answer_url`` says where to
    answer instead)."""

    check: DraftCheck | None
    reply_window: WindowState | None
    refused: str | None = None
    answer_url: str | None = None


class ReplyAccepted(msgspec.Struct, frozen=True):
    """``duplicate``: the idempotency key was seen before; this is the first reply."""

    message: MessageView
    duplicate: bool


class QuarantineList(msgspec.Struct, frozen=True):
    entries: list[QuarantineEntry]


class DeadLetterList(msgspec.Struct, frozen=True):
    entries: list[DeadLetter]


class RetryQueued(msgspec.Struct, frozen=True):
    status: Literal["queued"]


class Resolved(msgspec.Struct, frozen=True):
    status: Literal["resolved"]


class AgentState(msgspec.Struct, frozen=True):
    """An agent as routing sees them now. ``status`` is effective presence (working hours and
    heartbeats applied), ``desired_status`` what the agent asked for."""

    status: Presence
    desired_status: Presence
    weight: int
    capacity: dict[str, int]
    load: dict[str, int]
    idle_since: float | None
    conversations: list[str]


class AgentEntry(msgspec.Struct, frozen=True):
    profile: AgentConfig
    state: AgentState


class AgentList(msgspec.Struct, frozen=True):
    agents: list[AgentEntry]


class AgentSaved(msgspec.Struct, frozen=True):
    """``assigned``: [conversation, agent] pairs the change assigned at once."""

    agent: AgentConfig
    assigned: list[tuple[str, str]]


class StatusChanged(msgspec.Struct, frozen=True):
    """``changes``: [conversation, agent] pairs assigned or requeued ("" = waiting)."""

    status: Presence
    changes: list[tuple[str, str]]


class HeartbeatAck(msgspec.Struct, frozen=True):
    ok: bool


class PoolStats(msgspec.Struct, frozen=True):
    """One queue step: waiting conversations and available agents per capacity kind."""

    queue: str
    step: int
    pool: str
    waiting: dict[str, int]
    available_agents: dict[str, int]
    online_agents: int


class PoolList(msgspec.Struct, frozen=True):
    pools: list[PoolStats]


class RoutingState(msgspec.Struct, frozen=True):
    """A conversation's routing state. ``status``: routing, waiting, assigned or closed;
    ``pool`` the queue step it waits in (``queue#step``); ``awaiting_reply`` the buyer wrote
    last; SLA maps are keyed by clock (first, next, resolution)."""

    status: str | None
    queue: str | None
    pool: str | None
    step: int | None
    pools: list[str]
    kind: str | None
    priority: int | None
    assignee: str | None
    enqueued_at: float | None
    assigned_at: float | None
    answered_at: float | None
    awaiting_reply: bool
    language_by: str | None
    sla_deadlines: dict[str, float]
    sla_breached_at: dict[str, float]


class RoutingExplain(msgspec.Struct, frozen=True):
    """``log``: the decision records, oldest first (each has ``event`` and ``at``)."""

    state: RoutingState
    log: list[dict[str, Any]]


class RoutingChanged(msgspec.Struct, frozen=True):
    state: RoutingState


class WebhookAccepted(msgspec.Struct, frozen=True):
    """Ids of the stored messages; ``duplicates`` were already stored (not stored again)."""

    stored: list[str]
    duplicates: int


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _presence(value: Any) -> Presence:
    return value if value in ("online", "away", "offline") else "offline"


def agent_state(raw: dict[str, Any]) -> AgentState:
    """From ``RoutingEngine.agent_state`` (the ``agent:<a>`` hash plus two extra keys)."""
    capacity: dict[str, int] = {}
    load: dict[str, int] = {}
    for key, value in raw.items():
        kind = key.partition(":")[2]
        if key.startswith("cap:"):
            capacity[kind] = _int(value) or 0
        elif key.startswith("load:"):
            load[kind] = _int(value) or 0
    conversations = raw.get("conversations") or []
    return AgentState(
        status=_presence(raw.get("status")),
        desired_status=_presence(raw.get("desired_status")),
        weight=_int(raw.get("weight", 1)) or 0,
        capacity=capacity, load=load,
        idle_since=_float(raw.get("idle_since")),
        conversations=[str(c) for c in conversations],
    )


def routing_state(raw: dict[str, str]) -> RoutingState:
    """From ``RoutingEngine.routing_state`` (the ``rc:<c>`` hash)."""
    deadlines: dict[str, float] = {}
    breached: dict[str, float] = {}
    for key, value in raw.items():
        number = _float(value)
        if number is None:
            continue
        if key.startswith("sla:"):
            deadlines[key[4:]] = number
        elif key.startswith("breached:"):
            breached[key[9:]] = number
    pools = raw.get("pools") or ""
    return RoutingState(
        status=raw.get("status") or None,
        queue=raw.get("queue") or None,
        pool=raw.get("pool") or None,
        step=_int(raw.get("step")),
        pools=[p for p in pools.split(",") if p],
        kind=raw.get("kind") or None,
        priority=_int(raw.get("priority")),
        assignee=raw.get("assignee") or None,
        enqueued_at=_float(raw.get("enqueued_at")),
        assigned_at=_float(raw.get("assigned_at")),
        answered_at=_float(raw.get("answered_at")),
        awaiting_reply=raw.get("awaiting") == "1",
        language_by=raw.get("language_by") or None,
        sla_deadlines=deadlines,
        sla_breached_at=breached,
    )


def pool_stats(raw: dict[str, Any]) -> PoolStats:
    return msgspec.convert(raw, PoolStats)
