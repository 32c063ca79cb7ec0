"""Channel health on Redis: an in-process ``HealthRecorder`` and the store it flushes to.

``HealthCounters`` is what the hub hands adapters as ``AdapterContext.health`` and what the
sender reports to. It only touches a dict in memory (the webhook path pays a dict update and a
clock read), and ``take()`` hands over what accumulated since the last call. The hub flushes
that every ``hub.health_flush_seconds`` from one supervised loop into ``RedisChannelHealth``
(``storage/lua/channel_health.lua``): counts are added (HINCRBY) and timestamps keep the latest,
so any number of hub processes sum up. A process that dies loses what it counted since its last
flush (at most one flush interval); a flush that fails is kept and sent with the next one.

Per instance (keys in ``storage.keys``):

* counters hash: ``webhook:<outcome>`` (accepted, signature, too_large, malformed, unavailable)
  and ``webhook:slow`` (accepted later than the channel's ack budget), ``inbound_at``,
  ``known_since``, ``poll:<account>:held_at | ok_at | advanced_at | error_at | error``,
  ``send:ok_at``, ``send:error_at`` / ``send:error``;
* window hash: ``<minute>:ok`` / ``<minute>:failed`` webhook answers, kept 6 h;
* alerts hash: the states the evaluators agreed on (``channel_alerts.lua``).

No message body, buyer handle or secret is ever written: errors are a class and a one-line
message, accounts are the adapter's own names (mailboxes, a bot).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec
from redis.asyncio import Redis

from channels.services.health import MINUTE, REJECTIONS, WINDOW_SECONDS, Bucket, WebhookOutcome
from storage import keys
from storage.scripts import load_script

MAX_ERROR_CHARS: Final = 300
_WINDOW_TTL: Final = int(WINDOW_SECONDS + 10 * MINUTE)


class ErrorAt(msgspec.Struct, frozen=True):
    """A failure and when it happened: the error's class and one line, no payload."""

    at: float
    error: str


class _Poll:
    __slots__ = ("advanced_at", "error", "held_at", "ok_at")

    def __init__(self) -> None:
        self.held_at: float | None = None
        self.ok_at: float | None = None
        self.advanced_at: float | None = None
        self.error: ErrorAt | None = None


class Pending:
    """One instance's figures not yet flushed (process memory)."""

    __slots__ = ("inbound_at", "polls", "send_error", "send_ok_at", "slow", "webhooks")

    def __init__(self) -> None:
        self.webhooks: dict[str, int] = {}
        self.slow = 0
        self.inbound_at: float | None = None
        self.polls: dict[str, _Poll] = {}
        self.send_ok_at: float | None = None
        self.send_error: ErrorAt | None = None

    def poll(self, account: str) -> _Poll:
        found = self.polls.get(account)
        if found is None:
            found = self.polls[account] = _Poll()
        return found

    def merge(self, other: Pending) -> None:
        """Add ``other`` (newer) to this one: counts summed, latest timestamps kept."""
        for outcome, n in other.webhooks.items():
            self.webhooks[outcome] = self.webhooks.get(outcome, 0) + n
        self.slow += other.slow
        self.inbound_at = _later(self.inbound_at, other.inbound_at)
        self.send_ok_at = _later(self.send_ok_at, other.send_ok_at)
        self.send_error = _newer(self.send_error, other.send_error)
        for account, theirs in other.polls.items():
            mine = self.poll(account)
            mine.held_at = _later(mine.held_at, theirs.held_at)
            mine.ok_at = _later(mine.ok_at, theirs.ok_at)
            mine.advanced_at = _later(mine.advanced_at, theirs.advanced_at)
            mine.error = _newer(mine.error, theirs.error)


def _later(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


def _newer(a: ErrorAt | None, b: ErrorAt | None) -> ErrorAt | None:
    if a is None:
        return b
    return a if b is None or a.at >= b.at else b


def _error(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line[:MAX_ERROR_CHARS]


class HealthCounters:
    """The hub's ``channels.services.health.HealthRecorder``, plus the sender's reports.

    ``ack_budgets`` maps an instance to its provider's answer deadline (Mercado Libre: 0.5 s;
    ``PushSubscriptionRule.ack_within_seconds``): an acceptance slower than that counts as a
    failed push for the subscription rule. ``clock`` is ``time.time`` (tests move it).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.ack_budgets: dict[str, float] = {}
        self._pending: dict[str, Pending] = {}

    def _of(self, instance: str) -> Pending:
        pending = self._pending.get(instance)
        if pending is None:
            pending = self._pending[instance] = Pending()
        return pending

    # -- channels.services.health.HealthRecorder (the hot path: memory only) ----------------

    def webhook(self, instance: str, outcome: WebhookOutcome, seconds: float) -> None:
        pending = self._of(instance)
        pending.webhooks[outcome] = pending.webhooks.get(outcome, 0) + 1
        if outcome == "accepted":
            pending.inbound_at = self.clock()
            budget = self.ack_budgets.get(instance)
            if budget is not None and seconds > budget:
                pending.slow += 1

    def poll_held(self, instance: str, account: str) -> None:
        self._of(instance).poll(account).held_at = self.clock()

    def polled(self, instance: str, account: str, *, items: int, advanced: bool) -> None:
        now = self.clock()
        pending = self._of(instance)
        poll = pending.poll(account)
        poll.ok_at = now
        if advanced:
            poll.advanced_at = now
        if items:
            pending.inbound_at = now

    def poll_failed(self, instance: str, account: str, error: str) -> None:
        self._of(instance).poll(account).error = ErrorAt(self.clock(), _error(error))

    # -- the sender ----------------------------------------------------------------------------

    def sent(self, instance: str) -> None:
        self._of(instance).send_ok_at = self.clock()

    def send_failed(self, instance: str, error: str) -> None:
        """A failed send attempt (retried or given up); kept until a newer one replaces it."""
        self._of(instance).send_error = ErrorAt(self.clock(), _error(error))

    # -- the flush -----------------------------------------------------------------------------

    def take(self) -> dict[str, Pending]:
        """Everything counted since the last call; counting starts afresh."""
        taken, self._pending = self._pending, {}
        return taken


class StoredPoll(msgspec.Struct):
    held_at: float | None = None
    ok_at: float | None = None
    advanced_at: float | None = None
    error: ErrorAt | None = None


class StoredHealth(msgspec.Struct):
    """One instance's figures as every process flushed them (raw; the hub shapes them)."""

    instance: str
    known_since: float | None = None
    webhooks: dict[str, int] = msgspec.field(default_factory=dict)
    slow: int = 0
    inbound_at: float | None = None
    polls: dict[str, StoredPoll] = msgspec.field(default_factory=dict)
    send_ok_at: float | None = None
    send_error: ErrorAt | None = None
    buckets: list[Bucket] = msgspec.field(default_factory=list)
    alerts: dict[str, str] = msgspec.field(default_factory=dict)


_encode = msgspec.json.Encoder().encode
_POLL_FIELDS: Final = ("held_at", "ok_at", "advanced_at", "error_at", "error")


def _stamp(t: float) -> str:
    return f"{t:.3f}"


class RedisChannelHealth:
    """Flushes ``Pending`` figures and reads them back, for every hub process and the CLI."""

    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # bytes replies; see storage.store
        self._flush = load_script(redis, "channel_health")
        self._alerts = load_script(redis, "channel_alerts")
        self._trimmed: dict[str, int] = {}

    async def register(self, instances: Iterable[str], now: float) -> None:
        """Mark when the hub first ran each instance: silence before any inbound counts
        from there."""
        for instance in instances:
            await self.redis.hsetnx(keys.channel_health(instance), "known_since", _stamp(now))

    async def flush(self, batch: dict[str, Pending], now: float) -> None:
        """Write each instance's figures (one Lua step each); an instance is removed from
        ``batch`` once written, so on an error the rest stays for the next flush."""
        minute = int(now // MINUTE)
        for instance in list(batch):
            args = self._args(instance, batch[instance], minute)
            await self._flush(keys=[keys.channel_health(instance),
                                    keys.channel_health_window(instance)], args=[args])
            del batch[instance]
            self._trimmed[instance] = minute

    def _args(self, instance: str, pending: Pending, minute: int) -> bytes:
        incr: dict[str, int] = {f"webhook:{k}": n for k, n in pending.webhooks.items() if n}
        if pending.slow:
            incr["webhook:slow"] = pending.slow
        latest: list[list[str]] = []
        highest: dict[str, str] = {}
        if pending.inbound_at is not None:
            highest["inbound_at"] = _stamp(pending.inbound_at)
        if pending.send_ok_at is not None:
            highest["send:ok_at"] = _stamp(pending.send_ok_at)
        if pending.send_error is not None:
            latest.append(["send:error_at", _stamp(pending.send_error.at), "send:error",
                           pending.send_error.error])
        for account, poll in pending.polls.items():
            prefix = f"poll:{account}:"
            for name in ("held_at", "ok_at", "advanced_at"):
                value = getattr(poll, name)
                if value is not None:
                    highest[prefix + name] = _stamp(value)
            if poll.error is not None:
                latest.append([prefix + "error_at", _stamp(poll.error.at), prefix + "error",
                               poll.error.error])
        failed = sum(pending.webhooks.get(k, 0) for k in REJECTIONS) + pending.slow
        ok = pending.webhooks.get("accepted", 0) - pending.slow
        window: dict[str, int] = {}
        if ok > 0:
            window[f"{minute}:ok"] = ok
        if failed > 0:
            window[f"{minute}:failed"] = failed
        first_kept = minute - int(WINDOW_SECONDS // MINUTE)
        trim = first_kept if self._trimmed.get(instance) != minute else 0
        return _encode({"incr": incr, "max": highest, "latest": latest, "window": window,
                        "trim_before": trim, "window_ttl": _WINDOW_TTL})

    async def read(self, instances: Iterable[str]) -> dict[str, StoredHealth]:
        """Every instance's figures (those never flushed come back empty)."""
        names = list(instances)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.channel_health(name))
                pipe.hgetall(keys.channel_health_window(name))
                pipe.hgetall(keys.channel_alerts(name))
            rows = await pipe.execute()
        out: dict[str, StoredHealth] = {}
        for i, name in enumerate(names):
            counters, window, alerts = rows[3 * i: 3 * i + 3]
            out[name] = _parse(name, _decoded(counters), _decoded(window), _decoded(alerts))
        return out

    async def set_alerts(self, instance: str, as_of: float,
                         states: Mapping[str, str]) -> dict[str, str]:
        """Store the states decided from figures read at ``as_of``; returns those that
        changed, with their previous value ("" if none). A stale evaluation changes none."""
        args: list[str] = [_stamp(as_of)]
        for name, value in states.items():
            args += [name, value]
        changed = await self._alerts(keys=[keys.channel_alerts(instance)], args=args)
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in changed]
        return dict(zip(flat[0::2], flat[1::2], strict=True))


def _decoded(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _parse(instance: str, counters: dict[str, str], window: dict[str, str],
           alerts: dict[str, str]) -> StoredHealth:
    health = StoredHealth(instance=instance, alerts=alerts)
    health.known_since = _number(counters.get("known_since"))
    health.inbound_at = _number(counters.get("inbound_at"))
    health.send_ok_at = _number(counters.get("send:ok_at"))
    send_error_at = _number(counters.get("send:error_at"))
    if send_error_at is not None:
        health.send_error = ErrorAt(send_error_at, counters.get("send:error", ""))
    polls: dict[str, dict[str, str]] = {}
    for field, value in counters.items():
        if field.startswith("webhook:"):
            name = field[len("webhook:"):]
            if name == "slow":
                health.slow = int(value)
            else:
                health.webhooks[name] = int(value)
        elif field.startswith("poll:"):
            account, _, name = field[len("poll:"):].rpartition(":")
            if account and name in _POLL_FIELDS:
                polls.setdefault(account, {})[name] = value
    for account, fields in sorted(polls.items()):
        error_at = _number(fields.get("error_at"))
        health.polls[account] = StoredPoll(
            held_at=_number(fields.get("held_at")), ok_at=_number(fields.get("ok_at")),
            advanced_at=_number(fields.get("advanced_at")),
            error=ErrorAt(error_at, fields.get("error", "")) if error_at is not None else None)
    buckets: dict[int, list[int]] = {}
    for field, value in window.items():
        minute, _, kind = field.partition(":")
        if minute.isdigit() and kind in ("ok", "failed"):
            counts = buckets.setdefault(int(minute), [0, 0])
            counts[0 if kind == "ok" else 1] += int(value)
    health.buckets = [Bucket(m, ok, failed) for m, (ok, failed) in sorted(buckets.items())]
    return health
