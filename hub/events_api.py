"""Live events for agents and supervisors: ``GET /api/v1/events`` (Server-Sent Events) from the
retained event log (storage/events.py), and who is viewing or typing in a conversation.

One reader per process (``EventHub``) blocks on the log with XREAD and hands each entry to
every open stream it may reach: 50 agents cost one Redis read, not 50. Each stream keeps at
most ``events.client_buffer`` events waiting for its client; a client that falls further
behind is dropped (its connection ends) and resumes with ``Last-Event-ID`` from the log, so
a slow client costs neither memory nor events.

**Scope, per event.** Supervisors and admins (and agents with ``api.agent_scope = "all"``)
receive everything. An agent receives an event when, as the log recorded it in the step that
appended it, the conversation was assigned to them, or (``"pools"``) waiting in a queue step
they serve, or when the event names them (``agent``: the agent a conversation was just taken
from, the author of a reply, the viewer; ``from_agent``: the agent a transfer took it from).
The conversation's routing state just after the fact decides, never its state when the
stream happens to send it, and a resumed stream judges the replayed events the same way.
An agent's queue steps are read when the stream opens and again every
``POOLS_REFRESH_SECONDS`` (they change only with a routing reload or an edited profile),
shared by all streams of one agent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
from aiohttp import web

from channels.supervisor import Supervisor
from hub import keys as K
from hub.api import conversation_or_404, decode_body, json_response, principal_of
from hub.auth import Principal, require_role
from hub.config import EventsSettings
from hub.errors import ApiError
from hub.openapi import operation
from hub.roles import role_of, runs_http
from hub.scope import AgentScope, unlimited
from storage import keys as storage_keys
from storage.events import Event, EventLog, stream_id_key
from storage.keys import is_stream_id
from storage.routing_store import RoutingStore

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
EVENT_LOG = web.AppKey("event_log", EventLog)

POOLS_REFRESH_SECONDS = 30.0
READ_BLOCK_MS = 1000
BACKFILL_PAGE = 500
_encoder = msgspec.json.Encoder()


class Stream:
    """One open event stream: its principal's scope and the events waiting for its client."""

    def __init__(self, principal: Principal, scope: AgentScope, pools: frozenset[str],
                 limit: int) -> None:
        self.principal = principal
        self.scope = scope
        self.pools = pools
        self.everything = unlimited(principal, scope)
        self.limit = limit
        self.waiting: collections.deque[Event] = collections.deque()
        self.wake = asyncio.Event()
        self.dropped = False  # fell more than ``limit`` behind
        self.closed = False  # the hub is shutting down

    def may_see(self, event: Event) -> bool:
        if self.everything:
            return True
        me = self.principal.name
        if me in (event.agent, event.assignee, event.from_agent):
            return True
        return (self.scope == "pools" and event.status == "waiting"
                and event.pool is not None and event.pool in self.pools)

    def offer(self, event: Event) -> None:
        if self.dropped or self.closed or not self.may_see(event):
            return
        if len(self.waiting) >= self.limit:
            self.dropped = True
            self.waiting.clear()
        else:
            self.waiting.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` (time for a heartbeat) or when the
        stream must end (check ``dropped`` / ``closed``)."""
        if not self.waiting and not self.dropped and not self.closed:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
        return self.waiting.popleft() if self.waiting and not self.dropped else None


class EventHub:
    """The one reader of the event log in this process, fanning out to every open stream."""

    def __init__(self, events: EventLog, state: RoutingStore, settings: EventsSettings) -> None:
        self.events = events
        self.state = state
        self.settings = settings
        self.streams: set[Stream] = set()
        self.position = "$"
        self._pools: dict[str, tuple[float, frozenset[str]]] = {}
        self._opened = asyncio.Event()

    async def prepare(self) -> None:
        """Start from the newest entry: streams opened from now on get the live events, and a
        resuming stream reads what it missed from the log itself."""
        if self.position == "$":
            self.position = await self.events.latest_id()

    async def iteration(self) -> bool:
        if not self.streams:
            # Nobody listens: read nothing (decoding every entry under load cost the hub a
            # third of its ingest rate). The first stream to open sets where to go on from.
            self.position = ""
            self._opened.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._opened.wait(), READ_BLOCK_MS / 1000)
            return True
        if not self.position:
            self.position = await self.events.latest_id()
        self.position, batch = await self.events.read(self.position, block_ms=READ_BLOCK_MS)
        if batch and self.streams:
            await self._refresh_pools()
            for event in batch:
                for stream in list(self.streams):
                    stream.offer(event)
        return True

    async def pools_of(self, agent_id: str) -> frozenset[str]:
        cached = self._pools.get(agent_id)
        if cached is not None and time.monotonic() - cached[0] < POOLS_REFRESH_SECONDS:
            return cached[1]
        pools = frozenset(await self.state.agent_pool_ids(agent_id))
        self._pools[agent_id] = (time.monotonic(), pools)
        return pools

    async def _refresh_pools(self) -> None:
        for stream in list(self.streams):
            if not stream.everything and stream.scope == "pools":
                stream.pools = await self.pools_of(stream.principal.name)

    async def open(self, principal: Principal, scope: AgentScope) -> Stream:
        pools: frozenset[str] = frozenset()
        if not unlimited(principal, scope) and scope == "pools":
            pools = await self.pools_of(principal.name)
        stream = Stream(principal, scope, pools, self.settings.client_buffer)
        if not self.streams:  # the reader idles: live events start at the log's newest entry
            latest = await self.events.latest_id()
            if not self.streams:
                self.position = latest
        self.streams.add(stream)
        self._opened.set()
        return stream

    def release(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def close_all(self) -> None:
        for stream in list(self.streams):
            stream.close()


EVENT_HUB = web.AppKey("event_hub", EventHub)


def event_hub(app: web.Application) -> EventHub:
    return app[EVENT_HUB]


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """The event log (every fact the store records appends to it from here on) and the
    process's one reader, a supervised loop stopped and awaited at shutdown. Runs right
    after Redis, before the channels start storing messages."""
    config = app[K.CONFIG].config
    store = app[K.STORE]
    events = EventLog(store.redis, retention=config.events.retention_entries)
    store.events = events
    app[EVENT_LOG] = events
    hub = EventHub(events, RoutingStore(store.redis), config.events)
    app[EVENT_HUB] = hub
    supervisor = Supervisor("events", app[K.HEALTH])
    # The reader feeds this process's /api/v1/events streams: a workers process serves none.
    if runs_http(role_of(app)):
        supervisor.loop("events-reader", hub.iteration, idle_seconds=0, prepare=hub.prepare)
    try:
        yield
    finally:
        hub.close_all()
        supervisor.stop.set()
        await supervisor.wait(READ_BLOCK_MS / 1000 + 1.0)
        await supervisor.cancel_all()
        store.events = None


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: end every open stream at once, so shutdown does not wait for them."""
    if EVENT_HUB in app:
        event_hub(app).close_all()


# -- the stream ----------------------------------------------------------------------------

def _frame(event: Event) -> bytes:
    return (f"id: {event.id}\nevent: {event.kind}\ndata: ".encode()
            + _encoder.encode(event) + b"\n\n")


class Reset(msgspec.Struct, frozen=True):
    """Sent instead of the missed events when they are older than the log's retention."""

    reason: str
    id: str


def _resume_from(request: web.Request) -> str | None:
    unknown = set(request.query) - {"last_event_id"}
    if unknown:
        raise ApiError(400, f"unknown query parameter {sorted(unknown)[0][:40]!r} (accepted: "
                            "last_event_id)", "invalid_parameter")
    if len(request.query.getall("last_event_id", [])) > 1:
        raise ApiError(400, "query parameter 'last_event_id' is given more than once",
                       "invalid_parameter")
    # A browser's EventSource reconnects to the same URL with the header: the header wins.
    value = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    if value is None or value == "":
        return None
    if not is_stream_id(value):
        raise ApiError(400, "Last-Event-ID: expected an event id such as 1712345678901-0, "
                            f"got {value[:40]!r}", "invalid_parameter")
    if max(stream_id_key(value)) >= 2**64:
        raise ApiError(400, "Last-Event-ID: each part of an event id is below 2^64",
                       "invalid_parameter")
    return value


LAST_EVENT_ID = {
    "name": "Last-Event-ID", "in": "header", "required": False,
    "description": "resume after this event id (sent by EventSource on reconnect)",
    "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$", "maxLength": 41},
}
LAST_EVENT_ID_QUERY = {
    "name": "last_event_id", "in": "query", "required": False,
    "description": "the same as the Last-Event-ID header (the header wins)",
    "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$", "maxLength": 41},
}


@routes.get("/api/v1/events")
@operation(
    "Live events (Server-Sent Events), resumable, scoped by the caller's visibility",
    {200: "text/event-stream"}, tag="events", headers=(LAST_EVENT_ID, LAST_EVENT_ID_QUERY),
    description="Each event is `id:` (the log's entry id), `event:` (its kind: new_message, "
                "reply, delivery, assignment, status, sla_breach, viewing, typing) and `data:` "
                "(the Event as JSON; never message text). A comment line every "
                "events.heartbeat_seconds. With Last-Event-ID the events after it are sent "
                "first; when they are older than the log keeps, a `reset` event tells the "
                "client to reload. An agent receives only events of conversations in their "
                "scope when the event happened. A client more than events.client_buffer "
                "events behind is disconnected and resumes with Last-Event-ID.",
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    principal = require_role(request, "agent")
    resume = _resume_from(request)
    hub = event_hub(request.app)
    settings = request.app[K.CONFIG].config.events
    stream = await hub.open(principal, request.app[K.CONFIG].config.api.agent_scope)
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        seen = await _backfill(response, stream, hub.events, resume) if resume else None
        while not stream.closed:
            event = await stream.next(settings.heartbeat_seconds)
            if stream.dropped:
                log.info("event stream of %s dropped: more than %d events behind",
                         principal.name, stream.limit)
                break
            if event is None:
                if not stream.closed:
                    await response.write(b": heartbeat\n\n")
                continue
            if seen is not None and stream_id_key(event.id) <= seen:
                continue  # already sent from the log while catching up
            await response.write(_frame(event))
        return response
    finally:
        hub.release(stream)


async def _backfill(response: web.StreamResponse, stream: Stream, events: EventLog,
                    resume: str) -> tuple[int, int]:
    """Send what the client missed after ``resume`` from the log (the stream is already
    collecting live events, so nothing falls between); returns the last id covered."""
    if await events.lost_since(resume):
        latest = await events.latest_id()
        reset = Reset("the events after the given id are no longer kept: reload", latest)
        await response.write(f"id: {latest}\nevent: reset\ndata: ".encode()
                             + _encoder.encode(reset) + b"\n\n")
        return stream_id_key(latest)
    cursor = resume
    while True:
        last, page = await events.after_raw(cursor, BACKFILL_PAGE)
        for event in page:
            if stream.may_see(event):
                await response.write(_frame(event))
        if last is None:
            return stream_id_key(cursor)
        cursor = last


# -- presence ------------------------------------------------------------------------------

PresenceState = Literal["viewing", "typing", "left"]


class PresenceRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``left`` ends the caller's mark at once; ``viewing`` and ``typing`` last
    events.viewing_ttl_seconds / typing_ttl_seconds unless sent again."""

    state: PresenceState


class PresenceEntry(msgspec.Struct, frozen=True):
    agent: str
    state: Literal["viewing", "typing"]
    until: float


class PresenceList(msgspec.Struct, frozen=True):
    """Who else is viewing or typing in the conversation now (``others``: a collision
    warning when not empty); ``emitted``: this call put an event on the stream (at most one
    per agent, conversation and state every events.presence_interval_seconds)."""

    others: list[PresenceEntry]
    emitted: bool = False


PID = {"id": "conversation id"}


def _entries(raw: dict[Any, Any], now: float) -> tuple[list[PresenceEntry], list[Any]]:
    live: list[PresenceEntry] = []
    expired: list[Any] = []
    for agent, value in raw.items():
        state, _, until = (value.decode() if isinstance(value, bytes) else value).partition("|")
        name = agent.decode() if isinstance(agent, bytes) else agent
        try:
            ends = float(until)
        except ValueError:
            ends = 0.0
        if ends <= now or state not in ("viewing", "typing"):
            expired.append(agent)
        else:
            live.append(PresenceEntry(name, state, ends))  # type: ignore[arg-type]
    live.sort(key=lambda e: e.agent)
    return live, expired


async def _present(redis: Any, conversation_id: str, now: float,
                   ) -> list[PresenceEntry]:
    key = storage_keys.presence(conversation_id)
    live, expired = _entries(await redis.hgetall(key), now)
    if expired:
        await redis.hdel(key, *expired)
    return live


@routes.post("/api/v1/conversations/{id}/presence")
@operation("Say that the caller is viewing, typing in, or has left a conversation",
           {200: PresenceList, 404: None}, tag="events", body=PresenceRequest, path_params=PID,
           description="Emits a viewing or typing event to everyone who may see the "
                       "conversation (another agent there gets a collision warning) and "
                       "answers with who else is there now.")
async def post_presence(request: web.Request) -> web.Response:
    require_role(request, "agent")
    req = decode_body(await request.read(), PresenceRequest)
    conversation = await conversation_or_404(request)
    me = principal_of(request).name
    settings = request.app[K.CONFIG].config.events
    redis = request.app[K.STORE].redis
    now = time.time()
    key = storage_keys.presence(conversation.id)
    ttl = settings.typing_ttl_seconds if req.state == "typing" else settings.viewing_ttl_seconds
    async with redis.pipeline(transaction=True) as pipe:
        if req.state == "left":
            pipe.hdel(key, me)
        else:
            pipe.hset(key, me, f"{req.state}|{now + ttl!r}")
            pipe.pexpire(key, int(settings.viewing_ttl_seconds * 1000) + 1000)
        pipe.set(storage_keys.presence_limit(conversation.id, me, req.state), "1", nx=True,
                 px=int(settings.presence_interval_seconds * 1000))
        answers = await pipe.execute()
    emitted = bool(answers[-1])
    if emitted:
        kind: Literal["viewing", "typing"] = "typing" if req.state == "typing" else "viewing"
        await request.app[EVENT_LOG].append(kind, conversation.id, action=req.state, agent=me)
    others = [e for e in await _present(redis, conversation.id, now) if e.agent != me]
    return json_response(PresenceList(others, emitted))


@routes.get("/api/v1/conversations/{id}/presence")
@operation("Who is viewing or typing in a conversation now", {200: PresenceList, 404: None},
           tag="events", path_params=PID)
async def get_presence(request: web.Request) -> web.Response:
    require_role(request, "agent")
    conversation = await conversation_or_404(request)
    me = principal_of(request).name
    present = await _present(request.app[K.STORE].redis, conversation.id, time.time())
    return json_response(PresenceList([e for e in present if e.agent != me]))

