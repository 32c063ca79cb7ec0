"""Channel health: each instance's figures for the API, the CLI and Prometheus, and its alerts.

Figures are counted in memory by ``storage.health.HealthCounters`` (webhook answers by class,
polls, sends) and flushed to Redis by every hub process (``HealthFlush``), so what is shown is
the sum over the deployment, read by the API and by ``inboxhub channels status`` alike.

Alerts (``HealthEvaluator``, every ``hub.health_evaluate_seconds``):

* **silent**: nothing came in (no webhook accepted, no poll that stored anything) for longer
  than the channel's ``alert_after_silence_minutes`` (counted from when the hub first ran the
  channel if nothing ever came);
* **subscription at risk**: the adapter's ``Capabilities.push_subscription`` rule says ``warn``
  or ``cut`` (Shopee's success rate, Mercado Libre's failing streak): pushes those providers
  drop are never replayed, so an operator must act before they cut.

Each sets a gauge and logs one WARNING when it starts and one INFO when it ends, naming the
instance and the figures only. With several hub processes the states are agreed in Redis
(``storage/lua/channel_alerts.lua``): exactly one process logs each change.

A silent channel does not make ``/readyz`` fail: readiness says whether *this process* can do
its work, and a quiet channel is a fact about the provider or the buyers; it is an alert for a
person, not a reason for an orchestrator to restart or unroute a healthy hub. (A poller that
backs off does make the hub not ready: its loop is failing here.)

Token state and fetch backlog come from optional providers (``StateProvider``); until the token
store and the fetch-after-notify queue pass theirs to ``health_service``, both are null.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from channels.base import Capabilities, ChannelAdapter
from channels.polling import PollingAdapter
from channels.registry import load_adapter_class
from channels.services.fetches import FetchBacklog
from channels.services.health import (
    REJECTIONS,
    PushRisk,
    PushSubscriptionRule,
    RiskLevel,
    window_summary,
)
from channels.services.tokens import TokenState, TokenStore
from hub.config import LoadedConfig
from hub.metrics import Metrics
from storage.fetches import RedisFetchQueue
from storage.health import ErrorAt, HealthCounters, Pending, RedisChannelHealth, StoredHealth

log = logging.getLogger(__name__)

StateProvider = Callable[[str], Awaitable[Any]]
"""An instance's state from another component (a msgspec Struct, a dict, or None where it does
not apply): the token store's ``state``, the fetch queue's ``backlog``."""

_LEVELS: tuple[RiskLevel, ...] = ("warn", "cut")


class WebhookHealth(msgspec.Struct, frozen=True):
    """Webhook POSTs answered since the instance was first run, summed over every hub
    process. ``rejected`` by class; ``slow``: accepted later than the provider's deadline.
    ``success_rate_6h``: share of the last 6 h's pushes answered well (null: none)."""

    accepted: int
    rejected: dict[str, int]
    slow: int
    pushes_6h: int
    success_rate_6h: float | None


class PollAccountHealth(msgspec.Struct, frozen=True):
    """One polled account. ``lag_seconds``: since its last successful poll (or, never
    successful, since a process took its lease)."""

    account: str
    last_success_at: float | None
    last_advanced_at: float | None
    lag_seconds: float | None
    last_error: ErrorAt | None


class PollHealth(msgspec.Struct, frozen=True):
    """The stalest account's figures, and every account's."""

    last_success_at: float | None
    last_advanced_at: float | None
    lag_seconds: float | None
    last_error: ErrorAt | None
    accounts: list[PollAccountHealth]


class ChannelAlerts(msgspec.Struct, frozen=True):
    """The alert states the evaluators last agreed on (``evaluated_at``; null: never)."""

    silent: bool
    silent_since: float | None
    subscription_at_risk: RiskLevel | None
    subscription_since: float | None
    evaluated_at: float | None
    # An OAuth channel whose refresh was refused: nothing is sent or fetched until an operator
    # loads new tokens (``inboxhub channels auth``).
    needs_reauth: bool = False
    needs_reauth_since: float | None = None


class ChannelHealth(msgspec.Struct, frozen=True):
    """One configured channel instance's health; never a secret, a body or a buyer handle.

    ``webhook`` is null for a channel without webhooks, ``poll`` for one that does not poll;
    ``token`` and ``fetch_backlog`` are null where they do not apply.
    """

    instance: str
    type: str
    labels: list[str]
    enabled: bool
    alert_after_silence_minutes: int | None
    push_subscription: str | None
    last_inbound_at: float | None
    webhook: WebhookHealth | None
    poll: PollHealth | None
    fetch_backlog: dict[str, Any] | None
    token: dict[str, Any] | None
    last_sent_at: float | None
    last_send_error: ErrorAt | None
    alerts: ChannelAlerts


class ChannelHealthList(msgspec.Struct, frozen=True):
    channels: list[ChannelHealth]


class _Kind(msgspec.Struct, frozen=True):
    webhook: bool
    poll: bool


def _kind(cls: type[ChannelAdapter]) -> _Kind:
    return _Kind(webhook=bool(cls.webhook_methods), poll=issubclass(cls, PollingAdapter))


def rule_of(adapter: ChannelAdapter | None, cls: type[ChannelAdapter]
            ) -> PushSubscriptionRule | None:
    """The push-subscription rule of a running adapter, else one its class states."""
    caps = adapter.capabilities if adapter is not None else getattr(cls, "capabilities", None)
    return caps.push_subscription if isinstance(caps, Capabilities) else None


def _alerts(s: StoredHealth) -> ChannelAlerts:
    """The agreed alert states; a ``*_since`` is when that alert began, null while it does not
    hold (the stored time is when the state last changed, either way)."""
    silent = s.alerts.get("silent") == "1"
    risk = _level(s.alerts.get("subscription"))
    reauth = s.alerts.get("reauth") == "1"
    return ChannelAlerts(
        silent=silent, silent_since=_since(s, "silent") if silent else None,
        subscription_at_risk=risk,
        subscription_since=_since(s, "subscription") if risk is not None else None,
        evaluated_at=_number(s.alerts.get("as_of")),
        needs_reauth=reauth, needs_reauth_since=_since(s, "reauth") if reauth else None)


def _since(stored: StoredHealth, name: str) -> float | None:
    value = stored.alerts.get(f"{name}:since")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def _stamp(t: float | None) -> str:
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class ChannelHealthService:
    """Builds ``ChannelHealth`` records from Redis and evaluates the alerts.

    ``adapters`` (the running ones; None in the CLI) give the push-subscription rules; the
    evaluator waits for them. ``clock`` is ``time.time`` (tests move it).
    """

    def __init__(self, loaded: LoadedConfig, store: RedisChannelHealth, *,
                 metrics: Metrics | None = None, token_state: StateProvider | None = None,
                 fetch_backlog: StateProvider | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.loaded = loaded
        self.store = store
        self.metrics = metrics
        self.token_state = token_state
        self.fetch_backlog = fetch_backlog
        self.clock = clock
        self.adapters: Mapping[str, ChannelAdapter] | None = None
        self.channels = list(loaded.config.channels)
        self._classes = {c.name: load_adapter_class(c.type) for c in self.channels}

    def use_adapters(self, adapters: Mapping[str, ChannelAdapter],
                     counters: HealthCounters | None = None) -> None:
        """The running adapters (called once they are built); their providers' answer
        deadlines go to ``counters`` so slow acknowledgements count as failed pushes."""
        self.adapters = adapters
        if counters is not None:
            for name, adapter in adapters.items():
                rule = rule_of(adapter, type(adapter))
                if rule is not None and rule.ack_within_seconds is not None:
                    counters.ack_budgets[name] = rule.ack_within_seconds

    def instances(self) -> list[str]:
        return [c.name for c in self.channels]

    def kind(self, instance: str) -> _Kind:
        """Webhook, poller or both: from the running adapter (Telegram's class becomes its
        webhook or polling variant by ``mode``), else from the configured class."""
        adapter = self.adapters.get(instance) if self.adapters is not None else None
        return _kind(type(adapter) if adapter is not None else self._classes[instance])

    def uses_oauth_tokens(self, instance: str) -> bool:
        cls = self._classes.get(instance)
        settings = next((c.settings for c in self.channels if c.name == instance), {})
        return bool(cls is not None and cls.oauth_for(settings))

    def fetches_after_notify(self, instance: str) -> bool:
        """From the running adapter (its capabilities may depend on settings), else from the
        class's declared capabilities."""
        adapter = self.adapters.get(instance) if self.adapters is not None else None
        caps = adapter.capabilities if adapter is not None else \
            getattr(self._classes.get(instance), "capabilities", None)
        return isinstance(caps, Capabilities) and caps.fetch_after_notify

    def rule(self, instance: str) -> PushSubscriptionRule | None:
        adapter = self.adapters.get(instance) if self.adapters is not None else None
        return rule_of(adapter, self._classes[instance])

    # -- the records -------------------------------------------------------------------------

    async def records(self, only: str | None = None) -> list[ChannelHealth]:
        """Every configured instance (or just ``only``; [] when it is not configured)."""
        channels = [c for c in self.channels if only is None or c.name == only]
        now = self.clock()
        stored = await self.store.read(c.name for c in channels)
        labels = self.loaded.config.routing.channel_labels
        out: list[ChannelHealth] = []
        for channel in channels:
            s = stored[channel.name]
            kind = self.kind(channel.name)
            rule = self.rule(channel.name)
            out.append(ChannelHealth(
                instance=channel.name, type=channel.type,
                labels=[labels[channel.name]] if channel.name in labels else [],
                enabled=channel.enabled,
                alert_after_silence_minutes=channel.alert_after_silence_minutes,
                push_subscription=rule.provider if rule is not None else None,
                last_inbound_at=s.inbound_at,
                webhook=self._webhook(s, now) if kind.webhook else None,
                poll=self._poll(s, now) if kind.poll else None,
                fetch_backlog=await self._provided(self.fetch_backlog, channel.name),
                token=await self._provided(self.token_state, channel.name),
                last_sent_at=s.send_ok_at, last_send_error=s.send_error,
                alerts=_alerts(s),
            ))
        return out

    @staticmethod
    async def _provided(provider: StateProvider | None, instance: str) -> dict[str, Any] | None:
        if provider is None:
            return None
        value = await provider(instance)
        if value is None:
            return None
        built = msgspec.to_builtins(value)
        return built if isinstance(built, dict) else {"state": built}

    @staticmethod
    def _webhook(s: StoredHealth, now: float) -> WebhookHealth:
        pushes, rate = window_summary(s.buckets, now)
        return WebhookHealth(accepted=s.webhooks.get("accepted", 0),
                             rejected={k: s.webhooks.get(k, 0) for k in REJECTIONS},
                             slow=s.slow, pushes_6h=pushes, success_rate_6h=rate)

    @staticmethod
    def _poll(s: StoredHealth, now: float) -> PollHealth:
        accounts: list[PollAccountHealth] = []
        for account, p in s.polls.items():
            since = p.ok_at if p.ok_at is not None else p.held_at
            accounts.append(PollAccountHealth(
                account=account, last_success_at=p.ok_at, last_advanced_at=p.advanced_at,
                lag_seconds=max(0.0, now - since) if since is not None else None,
                last_error=p.error))
        if not accounts:
            return PollHealth(None, None, None, None, [])
        stalest = max(accounts, key=lambda a: -1.0 if a.lag_seconds is None else a.lag_seconds)
        errors = [a.last_error for a in accounts if a.last_error is not None]
        return PollHealth(
            last_success_at=stalest.last_success_at, last_advanced_at=stalest.last_advanced_at,
            lag_seconds=stalest.lag_seconds,
            last_error=max(errors, key=lambda e: e.at) if errors else None, accounts=accounts)

    # -- the alerts --------------------------------------------------------------------------

    async def register(self) -> None:
        await self.store.register((c.name for c in self.channels if c.enabled), self.clock())

    async def evaluate(self) -> bool:
        """One evaluation of every enabled instance: gauges set, state changes logged.
        False (nothing done) until the adapters are running."""
        if self.adapters is None:
            return False
        enabled = [c for c in self.channels if c.enabled]
        as_of = self.clock()
        stored = await self.store.read(c.name for c in enabled)
        for channel in enabled:
            s = stored[channel.name]
            silent_for = self._silent_for(s, channel.alert_after_silence_minutes, as_of)
            rule = self.rule(channel.name)
            risk = rule.judge(s.buckets, as_of) if rule is not None else None
            token = await self.token_state(channel.name) if self.token_state else None
            reauth = getattr(token, "status", None) == "needs_reauth"
            self._export(channel.name, s, silent_for is not None, risk, as_of)
            if token is not None and self.metrics is not None:
                self.metrics.channel_needs_reauth.labels(channel.name).set(1 if reauth else 0)
            states = {
                "silent": "1" if silent_for is not None else "0",
                "subscription": risk.level if risk is not None and risk.level else "none",
            }
            if token is not None:
                states["reauth"] = "1" if reauth else "0"
            changed = await self.store.set_alerts(channel.name, as_of, states)
            if "reauth" in changed and (reauth or changed["reauth"] == "1"):
                self._log_reauth(channel.name, reauth, getattr(token, "last_error", None))
            # A first evaluation ("" before) logs a condition that holds, not one that does not.
            if "silent" in changed and (silent_for is not None or changed["silent"] == "1"):
                self._log_silence(channel.name, s, silent_for,
                                  channel.alert_after_silence_minutes, as_of)
            if "subscription" in changed and rule is not None and risk is not None:
                previous = _level(changed["subscription"])
                if previous != risk.level:
                    self._log_risk(channel.name, rule, risk, previous)
        return False

    @staticmethod
    def _silent_for(s: StoredHealth, minutes: int | None, now: float) -> float | None:
        """Seconds of silence past the threshold's start, or None when not silent."""
        if minutes is None:
            return None
        since = s.inbound_at if s.inbound_at is not None else s.known_since
        if since is None:
            return None
        quiet = now - since
        return quiet if quiet > minutes * 60 else None

    def _export(self, instance: str, s: StoredHealth, silent: bool, risk: PushRisk | None,
                now: float) -> None:
        m = self.metrics
        if m is None:
            return
        m.channel_silent.labels(instance).set(1 if silent else 0)
        level = risk.level if risk is not None else None
        for name in _LEVELS:
            m.channel_subscription_at_risk.labels(instance, name).set(1 if level == name else 0)
        if s.inbound_at is not None:
            m.channel_last_inbound.labels(instance).set(s.inbound_at)
        kind = self.kind(instance)
        if kind.poll:
            lag = self._poll(s, now).lag_seconds
            if lag is not None:
                m.channel_poll_lag.labels(instance).set(lag)
        if kind.webhook:
            pushes, rate = window_summary(s.buckets, now)
            m.channel_pushes.labels(instance).set(pushes)
            if rate is not None:
                m.channel_push_success.labels(instance).set(rate)

    @staticmethod
    def _log_reauth(instance: str, reauth: bool, error: str | None) -> None:
        if reauth:
            log.warning("channel %s needs re-authorization (%s): nothing is sent or fetched "
                        "with its tokens until new ones are loaded (inboxhub channels auth %s)",
                        instance, error or "refresh refused", instance)
        else:
            log.info("channel %s has valid tokens again", instance)

    @staticmethod
    def _log_silence(instance: str, s: StoredHealth, silent_for: float | None,
                     minutes: int | None, now: float) -> None:
        if silent_for is not None:
            log.warning("channel %s is silent: no inbound for %s (last inbound %s; "
                        "alert_after_silence_minutes = %s)", instance, _minutes(silent_for),
                        _stamp(s.inbound_at), minutes)
        else:
            log.info("channel %s is no longer silent (last inbound %s)", instance,
                     _stamp(s.inbound_at))

    @staticmethod
    def _log_risk(instance: str, rule: PushSubscriptionRule, risk: PushRisk,
                  previous: RiskLevel | None) -> None:
        figures = (f"{risk.pushes} pushes in {_minutes(rule.window_seconds)}, "
                   f"{_percent(risk.success_rate)} answered well")
        if risk.failing_seconds is not None:
            figures += f", failing for {_minutes(risk.failing_seconds)}"
        if risk.level is not None and (previous is None or risk.level == "cut"):
            log.warning("channel %s: %s push subscription at risk (%s: %s): %s; pushes the "
                        "provider drops are never replayed", instance, rule.provider,
                        risk.level, risk.reason, figures)
        elif risk.level is not None:
            log.info("channel %s: %s push subscription risk down to %s (%s): %s", instance,
                     rule.provider, risk.level, risk.reason, figures)
        else:
            log.info("channel %s: %s push subscription no longer at risk: %s", instance,
                     rule.provider, figures)


def _level(value: str | None) -> RiskLevel | None:
    return value if value in ("warn", "cut") else None  # type: ignore[return-value]


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def export_counts(metrics: Metrics, batch: Mapping[str, Pending]) -> None:
    """This process's webhook answers since the last flush, into its Prometheus counters."""
    for instance, pending in batch.items():
        for outcome, n in pending.webhooks.items():
            metrics.webhook_requests.labels(instance, outcome).inc(n)
        if pending.slow:
            metrics.webhook_slow.labels(instance).inc(pending.slow)


class HealthFlush:
    """A supervised loop's body: every ``hub.health_flush_seconds`` this process's counts go
    to Redis (and its Prometheus counters); what a failed flush held goes with the next. The
    stop hook flushes once more, so a clean shutdown loses nothing."""

    def __init__(self, counters: HealthCounters, store: RedisChannelHealth,
                 metrics: Metrics | None) -> None:
        self.counters = counters
        self.store = store
        self.metrics = metrics
        self._unsent: dict[str, Pending] = {}

    async def iteration(self) -> bool:
        await self.flush()
        return False

    async def flush(self) -> None:
        batch = self.counters.take()
        if self.metrics is not None:
            export_counts(self.metrics, batch)
        for instance, pending in batch.items():
            kept = self._unsent.get(instance)
            if kept is None:
                self._unsent[instance] = pending
            else:
                kept.merge(pending)
        if self._unsent:
            await self.store.flush(self._unsent, self.counters.clock())


class HealthEvaluator:
    """A supervised loop's body: registers the instances once, then evaluates the alerts."""

    def __init__(self, service: ChannelHealthService) -> None:
        self.service = service

    async def prepare(self) -> None:
        await self.service.register()

    async def iteration(self) -> bool:
        return await self.service.evaluate()


def health_service(loaded: LoadedConfig, redis: Redis, *, metrics: Metrics | None = None,
                   tokens: TokenStore | None = None) -> ChannelHealthService:
    """The health service as the app and the CLI build it, with the token store's ``state``
    (OAuth channels only) and the fetch queue's ``backlog`` (channels that fetch after
    notify, or that ever queued a fetch) plugged in; null elsewhere."""
    queue = RedisFetchQueue(redis)

    async def token_state(instance: str) -> TokenState | None:
        if tokens is None or not service.uses_oauth_tokens(instance):
            return None
        return await tokens.state(instance)

    async def fetch_backlog(instance: str) -> FetchBacklog | None:
        if not service.fetches_after_notify(instance) and \
                instance not in await queue.instances():
            return None
        return await queue.backlog(instance)

    service = ChannelHealthService(loaded, RedisChannelHealth(redis), metrics=metrics,
                                   token_state=token_state, fetch_backlog=fetch_backlog)
    return service


Status = Literal["ok", "silent", "warn", "cut", "disabled"]


def summary_status(channel: ChannelHealth) -> Status:
    """One word for the CLI table's status column."""
    if not channel.enabled:
        return "disabled"
    if channel.alerts.subscription_at_risk is not None:
        return channel.alerts.subscription_at_risk
    return "silent" if channel.alerts.silent else "ok"
