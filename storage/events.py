"""The live event log: one retained Redis stream of what happened to conversations.

The agent API streams it (``GET /api/v1/events``, hub/events_api.py) and the KPI reports
aggregate it, so its schema is the ``Event`` Struct below and nothing else. An entry carries
ids, states and times only, never message text or a buyer's name or handle.

Where entries come from (each appended right after its fact, by the code that made it):

=============  ==================================================  ============================
kind           action                                              written by
=============  ==================================================  ============================
new_message    (none) an inbound message was stored                ``Store.ingest`` /
                                                                   ``ingest_many``
reply          (none) an agent's reply was queued                  ``Store.enqueue_reply``
delivery       sent / delivered / read / failed                    ``Store.mark_sent``,
                                                                   ``Store.dead_letter``,
                                                                   ``RedisDeliveries.record``
assignment     assigned / transferred / queued / escalated /       the routing mirror, from
               requeued / released                                 routing.lua's events stream
status         resolved / reopened / open / pending / snoozed /    routing mirror (resolved),
               woken (a snooze ended) / rated (a survey answer,    ingest (reopened),
               ``reason`` the score) / survey_link (a signed       ``Workflow``, hub/csat.py
               survey link was issued instead of a message)        and hub/survey_page.py
                                                                   (rated, survey_link)
sla_breach     (none) ``clock`` names the SLA clock                routing mirror
viewing        viewing / left                                      presence API
typing         typing                                              presence API
=============  ==================================================  ============================

Every entry also records the conversation's routing state just after the fact (``status``,
``assignee``, ``pool``), read in the same atomic step that appends it (``lua/events.lua``):
that is what decides, once and for all, who may receive it (hub/events_api.py).

The log lives under the routing hash tag (``ih:{r}:eventlog``), in the routing state's
Cluster slot, so the snapshot and the append are one single-slot script. It is trimmed to
about ``retention`` entries (``events.retention_entries``). An entry is appended after its
fact, not in the fact's own step (the fact's keys are in a partition's slot): a process that
dies between the two loses that one event, never the fact. Entries derived from routing are
written once per routing event (a marker keyed by the routing entry's id), so a reclaimed
mirror entry does not repeat them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from storage import keys
from storage.scripts import load_script, run_pipelined

EventKind = Literal["new_message", "reply", "delivery", "assignment", "status", "sla_breach",
                    "viewing", "typing"]
KINDS: tuple[str, ...] = ("new_message", "reply", "delivery", "assignment", "status",
                          "sla_breach", "viewing", "typing")
log = logging.getLogger(__name__)

DEFAULT_RETENTION = 100_000
MARKER_TTL_SECONDS = 86_400


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of the event log, as the stream sends it in ``data:`` and the KPI reads it.

    ``id`` is the stream entry id (``<ms>-<seq>``, increasing; the SSE ``id:`` and what
    ``Last-Event-ID`` resumes from). ``at`` is when the fact happened (UNIX seconds).
    ``agent`` is the agent the event is about (assigned to, taken from, author, viewer);
    ``from_agent`` the agent a transfer took the conversation from.
    ``status`` / ``assignee`` / ``pool``: the conversation's routing state just after the
    fact (``status`` routing/waiting/assigned/closed; ``pool`` only while waiting).
    """

    id: str
    kind: EventKind
    conversation_id: str
    at: float
    action: str | None = None
    agent: str | None = None
    from_agent: str | None = None
    message_id: str | None = None
    channel: str | None = None
    new_conversation: bool | None = None
    reason: str | None = None
    queue: str | None = None
    clock: str | None = None
    status: str | None = None
    assignee: str | None = None
    pool: str | None = None
    # How a survey answer (``rated``) came: "link" from the survey page, which leaves a
    # reopening in place (a chat answer is the message that reopened the conversation).
    via: str | None = None


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_entry(entry_id: Any, raw: Mapping[Any, Any]) -> Event | None:
    """A stream entry as an ``Event``; None for an entry of a kind this release does not know
    (a newer hub process wrote it): skipped, not an error."""
    f = {_s(k): _s(v) for k, v in raw.items()}
    kind = f.get("kind", "")
    if kind not in KINDS:
        return None

    def opt(name: str) -> str | None:
        return f.get(name) or None

    new = f.get("new")
    return Event(
        id=_s(entry_id), kind=kind,  # type: ignore[arg-type]
        conversation_id=f.get("conv", ""), at=float(f.get("at") or 0.0),
        action=opt("action"), agent=opt("agent"), from_agent=opt("from"),
        message_id=opt("msg"),
        channel=opt("channel"), new_conversation=None if new is None else new == "1",
        reason=opt("reason"), queue=opt("queue"), clock=opt("clock"),
        status=opt("s_status"), assignee=opt("s_assignee"), pool=opt("s_pool"),
        via=opt("via"),
    )


# routing.lua's event type -> (kind, action) in the log; "released" is decided in the script.
_ROUTING: dict[str, tuple[str, str]] = {
    "assigned": ("assignment", "assigned"),
    "waiting": ("assignment", "queued"),
    "escalated": ("assignment", "escalated"),
    "requeued": ("assignment", "requeued"),
    "sla_breach": ("sla_breach", ""),
}


class EventLog:
    """Appends to and reads the event log; one per process, shared by every task."""

    def __init__(self, redis: Any, *, retention: int = DEFAULT_RETENTION) -> None:
        if retention < 1:
            raise ValueError("retention must be >= 1")
        self.redis: Any = redis
        self.retention = retention
        self.key = keys.EVENT_LOG
        self._script: AsyncScript = load_script(redis, "events")

    # -- appending ---------------------------------------------------------------------------

    def _args(self, kind: str, conversation_id: str, snapshot: str, fields: Sequence[str],
              *, at: float | None = None, marker: str | None = None,
              ) -> tuple[list[str], list[Any]]:
        marker_key = keys.event_marker(marker) if marker else self.key
        script_keys = [self.key, keys.routing_state(conversation_id), marker_key,
                       keys.EVENT_HOLDERS]
        args: list[Any] = [self.retention, repr(time.time() if at is None else at), kind,
                           conversation_id, snapshot, MARKER_TTL_SECONDS if marker else 0,
                           *fields]
        return script_keys, args

    async def append(self, kind: EventKind, conversation_id: str, *,
                     once: str | None = None, **fields: str | None) -> str | None:
        """One entry with the routing snapshot read from the conversation's state. A Redis
        error is logged, not raised: the fact is already stored, and failing its caller (a
        webhook answered 5xx, a send retried) would not bring the event back. ``once``: a
        key of the fact; a second append with it (a retried stream entry) writes nothing."""
        flat = [part for name, value in fields.items() if value for part in (name, value)]
        script_keys, args = self._args(kind, conversation_id, "rc", flat, marker=once)
        try:
            entry = await self._script(keys=script_keys, args=args)
        except RedisError as exc:
            log.warning("event log: %s event not written: %s", kind, type(exc).__name__)
            return None
        return None if entry is None else _s(entry)

    async def new_messages(self, stored: Sequence[tuple[str, str, str, bool]]) -> None:
        """``(conversation id, message id, channel instance, new conversation)`` per stored
        message, in one round trip (a poll's batch stores many at once)."""
        if not stored:
            return
        try:
            await run_pipelined(self.redis, self._script, [
                self._args("new_message", conversation_id, "rc",
                           ["msg", message_id, "channel", channel, "new", "1" if new else "0"])
                for conversation_id, message_id, channel, new in stored])
        except RedisError as exc:  # as in ``append``: the messages are stored
            log.warning("event log: %d new_message events not written: %s", len(stored),
                        type(exc).__name__)

    async def from_routing(self, entry_id: str, raw: Mapping[bytes, bytes]) -> str | None:
        """The log's entry for one entry of routing.lua's events stream (the mirror calls
        this after copying the state): written once per routing entry id. Raises on a Redis
        error, so the mirror's entry stays pending and is retried (the marker dedupes)."""
        f = {_s(k): _s(v) for k, v in raw.items()}
        kind_of, conversation_id = f.get("type", ""), f.get("conv", "")
        if not conversation_id or (kind_of not in _ROUTING and kind_of != "released"):
            return None
        at = float(f.get("at") or time.time())
        fields = ["src", entry_id]
        if f.get("agent"):
            fields += ["agent", f["agent"]]
        if kind_of == "released":
            script_keys, args = self._args("status", conversation_id, "released", fields,
                                           at=at, marker=entry_id)
        else:
            kind, action = _ROUTING[kind_of]
            reason = f.get("reason") or f.get("why") or ""
            if kind_of == "assigned" and "transfer" in reason:
                action = "transferred"
            if action:
                fields += ["action", action]
            if reason:
                fields += ["reason", reason]
            if f.get("clock"):
                fields += ["clock", f["clock"]]
            pool = f.get("pool", "")
            if pool:
                fields += ["queue", pool.partition("#")[0]]
            snapshot = "rc"
            if kind_of == "assigned":
                snapshot = "given"
                fields += ["s_status", "assigned", "s_assignee", f.get("agent", "")]
            elif kind_of in ("waiting", "escalated") and pool:
                snapshot = "given"
                fields += ["s_status", "waiting", "s_pool", pool]
            script_keys, args = self._args(kind, conversation_id, snapshot, fields,
                                           at=at, marker=entry_id)
        entry = await self._script(keys=script_keys, args=args)
        return None if entry is None else _s(entry)

    # -- reading -----------------------------------------------------------------------------

    async def after(self, last_id: str, count: int = 500) -> list[Event]:
        """Entries after ``last_id`` (exclusive), oldest first, at most ``count``."""
        return (await self.after_raw(last_id, count))[1]

    async def after_raw(self, last_id: str, count: int = 500,
                        ) -> tuple[str | None, list[Event]]:
        """``after``, plus the id of the last entry read (None: there was none), to page on
        even past entries this release cannot decode."""
        rows = await self.redis.xrange(self.key, f"({last_id}", "+", count=count)
        if not rows:
            return None, []
        events = [e for entry_id, raw in rows if (e := decode_entry(entry_id, raw)) is not None]
        return _s(rows[-1][0]), events

    async def read(self, last_id: str, *, block_ms: int, count: int = 500,
                   ) -> tuple[str, list[Event]]:
        """Entries after ``last_id``, waiting up to ``block_ms`` for the first; returns the id
        to read after next (the last entry's, decodable or not) and the events."""
        reply = await self.redis.xread({self.key: last_id}, count=count, block=block_ms)
        events: list[Event] = []
        for _stream, rows in reply or []:
            for entry_id, raw in rows:
                last_id = _s(entry_id)
                if (event := decode_entry(entry_id, raw)) is not None:
                    events.append(event)
        return last_id, events

    async def latest_id(self) -> str:
        """The id of the newest entry ever written ("0-0" for a log never written)."""
        try:
            info = await self.redis.xinfo_stream(self.key)
        except Exception as exc:  # redis answers "ERR no such key" for a log never written
            if "no such key" in str(exc).lower():
                return "0-0"
            raise
        return _s(info.get("last-generated-id") or "0-0")

    async def lost_since(self, last_id: str) -> bool:
        """True when entries after ``last_id`` were trimmed away (older than retention): the
        client cannot be caught up and must reload."""
        try:
            info = await self.redis.xinfo_stream(self.key)
        except Exception as exc:
            if "no such key" in str(exc).lower():
                return False
            raise
        # Trimming leaves no trace but the counts: entries were removed when more were added
        # than are kept, and all of them are older than the first one kept. (A client whose
        # last id is exactly the newest removed one is told to reload without need: harmless.)
        first = info.get("first-entry")
        trimmed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        if first is not None and trimmed and stream_id_key(last_id) < stream_id_key(_s(first[0])):
            return True
        deleted = info.get("max-deleted-entry-id")  # XDEL, if anyone ever deletes by hand
        return deleted is not None and stream_id_key(last_id) < stream_id_key(_s(deleted))
