"""Prometheus metrics, one registry per app so tests and several apps in a process don't clash.

Labels carry channel instances and outcomes only, never buyer data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingested = Counter(
            "inboxhub_ingested_messages", "Inbound messages by channel instance and outcome",
            ["instance", "outcome"], registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "inboxhub_ingest_seconds", "Time to store one inbound message durably",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.quarantined = Counter(
            "inboxhub_quarantined", "Inputs kept in quarantine", ["instance"],
            registry=self.registry,
        )
        self.routed = Counter(
            "inboxhub_routed_conversations", "Routing decisions by queue", ["queue"],
            registry=self.registry,
        )
        self.sent = Counter(
            "inboxhub_outbound_sent", "Replies accepted by the provider", ["instance"],
            registry=self.registry,
        )
        self.send_failures = Counter(
            "inboxhub_outbound_send_failures", "Failed send attempts by kind",
            ["instance", "kind"], registry=self.registry,
        )
        self.dead_lettered = Counter(
            "inboxhub_outbound_dead_lettered", "Replies that exhausted their attempts",
            ["instance"], registry=self.registry,
        )
        self.rate_limited = Counter(
            "inboxhub_outbound_rate_limited", "Sends rescheduled to keep to a provider's rate "
            "limit (no failure: the reply keeps its place)", ["instance"], registry=self.registry,
        )
        self.task_restarts = Counter(
            "inboxhub_task_restarts", "Background loop restarts after a failure, by reason "
            "(redis: Redis or network error; provider: a poller's provider failed; "
            "nogroup: consumer group recreated; crash: a bug)",
            ["task", "reason"], registry=self.registry,
        )
        self.task_up = Gauge(
            "inboxhub_task_up", "1 while a background loop runs normally, 0 while it backs off "
            "or after it crashed", ["task"], registry=self.registry,
        )
        self.stream_backlog = Gauge(
            "inboxhub_stream_backlog", "Entries waiting or in flight per work stream",
            ["stream"], registry=self.registry,
        )
        # Channel health (hub/channel_health.py). The counters are this process's answers,
        # added at each health flush (every few seconds), not on the webhook path; the gauges
        # are what the evaluator read from Redis, the same in every process (alert on max).
        self.webhook_requests = Counter(
            "inboxhub_webhook_requests", "Webhook POSTs answered, by outcome: accepted, or the "
            "refusal's class (signature, too_large, malformed, unavailable)",
            ["instance", "outcome"], registry=self.registry,
        )
        self.webhook_slow = Counter(
            "inboxhub_webhook_slow_acks", "Webhooks accepted later than the provider's answer "
            "deadline (Mercado Libre: 500 ms): the provider counts them as failed",
            ["instance"], registry=self.registry,
        )
        self.channel_silent = Gauge(
            "inboxhub_channel_silent", "1 while a channel has had no inbound for longer than "
            "its alert_after_silence_minutes", ["instance"], registry=self.registry,
        )
        self.channel_needs_reauth = Gauge(
            "inboxhub_channel_needs_reauth", "1 while an OAuth channel's token refresh is "
            "refused: an operator must load new tokens (inboxhub channels auth)", ["instance"],
            registry=self.registry)
        self.channel_subscription_at_risk = Gauge(
            "inboxhub_channel_subscription_at_risk", "1 at the level (warn, cut) the "
            "provider's push-subscription rule reached; pushes it drops are never replayed",
            ["instance", "level"], registry=self.registry,
        )
        self.channel_last_inbound = Gauge(
            "inboxhub_channel_last_inbound_timestamp_seconds", "When the channel last "
            "delivered anything (a webhook accepted, a poll that stored items), UNIX seconds",
            ["instance"], registry=self.registry,
        )
        self.channel_poll_lag = Gauge(
            "inboxhub_channel_poll_lag_seconds", "Seconds since the channel's stalest polled "
            "account last polled successfully", ["instance"], registry=self.registry,
        )
        self.channel_push_success = Gauge(
            "inboxhub_channel_webhook_success_ratio", "Share of the last 6 h's webhook "
            "pushes answered well (accepted in time)", ["instance"], registry=self.registry,
        )
        self.channel_pushes = Gauge(
            "inboxhub_channel_webhook_pushes_6h", "Webhook pushes answered in the last 6 h",
            ["instance"], registry=self.registry,
        )

        self.fetches = Counter(
            "inboxhub_fetches", "Fetch-after-notify attempts by outcome (fetched: stored; "
            "retrying: failed, tried again after a backoff; failed: given up, kept for an "
            "operator to retry)", ["instance", "outcome"], registry=self.registry,
        )
        self.fetch_backlog = Gauge(
            "inboxhub_fetch_backlog", "Notifications whose fetch is queued (or running), "
            "retrying, or failed, per channel instance", ["instance", "state"],
            registry=self.registry,
        )
        self.fetch_oldest_age = Gauge(
            "inboxhub_fetch_oldest_age_seconds", "How long the oldest notification not "
            "fetched yet (queued or retrying) has waited; 0 when none", ["instance"],
            registry=self.registry,
        )

        # Service KPIs (hub/service_metrics.py, hub/kpis.py). Labels are config-bounded
        # (queues, routing.languages, channel types), never buyers or conversations.
        self.queue_waiting = Gauge(
            "inboxhub_queue_waiting", "Conversations waiting in a routing queue (all steps)",
            ["queue"], registry=self.registry)
        self.queue_oldest_wait = Gauge(
            "inboxhub_queue_oldest_wait_seconds", "How long the queue's longest-waiting "
            "conversation has waited; 0 when none waits", ["queue"], registry=self.registry)
        self.agents_online = Gauge(
            "inboxhub_agents_online", "Agents online (presence applied) who speak a language",
            ["language"], registry=self.registry)
        self.sla_breaches = Counter(
            "inboxhub_sla_breaches", "SLA clocks breached, by queue, as this process's KPI "
            "aggregator counted them (sum over processes)", ["queue"], registry=self.registry)
        self.first_response = Histogram(
            "inboxhub_first_response_seconds", "Buyer's first message to the first agent "
            "reply, wall time, by channel type", ["channel"], registry=self.registry,
            buckets=(60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400))

        self.csat_surveys = Counter(
            "inboxhub_csat_surveys", "Satisfaction surveys: sent, answered, or skipped with "
            "the reason (amazon_forbids_surveys, window_closed, no_reply_path, ...); reason "
            "link on sent and answered: a survey link (no reply path)",
            ["outcome", "reason"], registry=self.registry)
        # Which process answered a scrape: behind one SO_REUSEPORT port (serve --processes N)
        # each scrape reaches one child, and its counters are that child's alone.
        self.process = Gauge(
            "inboxhub_process", "1 for this hub process, labelled with its role "
            "(http, workers, all) and pid; counters are per process", ["role", "pid"],
            registry=self.registry)

    def process_info(self, role: str, pid: int) -> None:
        self.process.labels(role, str(pid)).set(1)

    # -- channels.supervisor.LoopMetrics -----------------------------------------------------

    def loop_up(self, name: str, up: bool) -> None:
        self.task_up.labels(name).set(1 if up else 0)

    def loop_restarted(self, name: str, reason: str) -> None:
        self.task_restarts.labels(name, reason).inc()
