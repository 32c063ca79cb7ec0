"""Channel health: what the adapter plumbing reports about each instance, and the provider rules
that say when a push subscription is about to be cut.

The ``@final`` webhook and polling plumbing (``channels.base``, ``channels.polling``) tells a
``HealthRecorder`` (``AdapterContext.health``; None in a bare kit run) what happened: a webhook
accepted or rejected and how long the answer took, a poll that succeeded, failed or moved the
cursor. Calls are synchronous and cheap (they run on the ingest hot path): the hub's recorder
only counts in process memory and flushes to Redis from one supervised loop
(``storage.health``).

Some providers stop pushing when we answer badly, and what they drop is never sent again:

* Mercado Libre wants HTTP 200 within 500 ms, retries a notification for an hour and then drops
  it; persistent failure disables the topics ("fail back") until they are subscribed again;
* Shopee, once it pushed more than 600 times in 6 h, mails a warning when under 70 % succeeded
  and disables the subscription under 30 %.

An adapter declares its provider's rule as data, ``Capabilities.push_subscription``
(``PushSubscriptionRule.shopee()``, ``.mercadolibre()`` or its own numbers), and the hub raises
an alert (metric and log line) while the rule says ``warn`` or ``cut``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal, Protocol

import msgspec

WebhookOutcome = Literal["accepted", "signature", "too_large", "malformed", "unavailable"]
"""How the plumbing answered one webhook POST: ``accepted`` (2xx, everything stored), or the
class of the refusal: a bad or missing ``signature`` (401/403), a body ``too_large`` (413, an
attachment over the limit too), ``malformed`` (400, kept in quarantine; an attachment of a
refused type), ``unavailable`` (503: not started, or Redis could not store it)."""

REJECTIONS: Final[tuple[WebhookOutcome, ...]] = ("signature", "too_large", "malformed",
                                                 "unavailable")

RiskLevel = Literal["warn", "cut"]

MINUTE: Final = 60.0
WINDOW_SECONDS: Final = 6 * 3600.0
"""How long per-minute webhook counts are kept: the longest rule window (Shopee's 6 h)."""


class HealthRecorder(Protocol):
    """Where the plumbing reports; every method must return at once (no I/O)."""

    def webhook(self, instance: str, outcome: WebhookOutcome, seconds: float) -> None:
        """One webhook POST answered with ``outcome`` after ``seconds`` (handler time)."""
        ...

    def poll_held(self, instance: str, account: str) -> None:
        """This process took the account's lease and starts polling it."""
        ...

    def polled(self, instance: str, account: str, *, items: int, advanced: bool) -> None:
        """A poll succeeded and what it returned is stored (``advanced``: cursor moved)."""
        ...

    def poll_failed(self, instance: str, account: str, error: str) -> None:
        """A poll (or storing what it returned) failed; ``error`` is class and message."""
        ...


class Bucket(msgspec.Struct, frozen=True, array_like=True):
    """One minute of webhook answers: ``minute`` is UNIX seconds // 60; ``failed`` counts
    refusals and acceptances later than the rule's ``ack_within_seconds``."""

    minute: int
    ok: int
    failed: int


class PushRisk(msgspec.Struct, frozen=True):
    """A rule's verdict with the figures behind it (for the log line and the API)."""

    level: RiskLevel | None
    pushes: int
    success_rate: float | None
    failing_seconds: float | None
    reason: str = ""


class PushSubscriptionRule(msgspec.Struct, frozen=True, kw_only=True):
    """When a provider cuts (or warns before cutting) a push subscription, as data.

    Two kinds of test, either or both:

    * a success rate over ``window_seconds``, judged once the window holds at least
      ``min_pushes`` pushes: ``warn`` under ``warn_below``, ``cut`` under ``cut_below``;
    * a failing streak (no push answered well since): ``warn`` after
      ``warn_failing_seconds``, ``cut`` after ``cut_failing_seconds``.

    A push counts as failed when it was refused (any reason: a wrong signing key fails the
    provider's own pushes) or accepted later than ``ack_within_seconds``. Minutes are the
    resolution: the hub keeps per-minute counts for 6 h.
    """

    provider: str
    window_seconds: float = 6 * 3600.0
    min_pushes: int = 1
    warn_below: float | None = None
    cut_below: float | None = None
    ack_within_seconds: float | None = None
    warn_failing_seconds: float | None = None
    cut_failing_seconds: float | None = None

    def __post_init__(self) -> None:
        if not 60.0 <= self.window_seconds <= WINDOW_SECONDS:
            raise ValueError(f"window_seconds must be 60..{WINDOW_SECONDS:g}, "
                             f"got {self.window_seconds!r}")
        for name in ("warn_below", "cut_below"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} is a success rate in (0, 1], got {value!r}")
        if self.min_pushes < 1:
            raise ValueError(f"min_pushes must be >= 1, got {self.min_pushes!r}")

    @classmethod
    def shopee(cls) -> PushSubscriptionRule:
        """Shopee Open Platform push: with more than 600 pushes in 6 h, under 70 % success
        brings warning mails and under 30 % disables the subscription (CHANNELS.md §6.4)."""
        return cls(provider="shopee", window_seconds=6 * 3600.0, min_pushes=601,
                   warn_below=0.70, cut_below=0.30)

    @classmethod
    def mercadolibre(cls) -> PushSubscriptionRule:
        """Mercado Libre notifications: HTTP 200 within 500 ms, else retried for an hour and
        dropped; persistent failure disables the topics (CHANNELS.md §6.1). A streak of
        failed or slow answers warns after 10 minutes (our margin to react) and is a cut
        after an hour (notifications are being dropped, fail-back follows)."""
        return cls(provider="mercadolibre", window_seconds=3600.0, ack_within_seconds=0.5,
                   warn_failing_seconds=600.0, cut_failing_seconds=3600.0)

    def judge(self, buckets: Iterable[Bucket], now: float) -> PushRisk:
        """The verdict over ``buckets`` (any order): the rate over the rule's window, the
        failing streak over every bucket kept."""
        kept = sorted(buckets, key=lambda b: b.minute)
        pushes, rate = window_summary(kept, now, self.window_seconds)
        failing = failing_seconds(kept, now)
        level: RiskLevel | None = None
        reason = ""
        if rate is not None and pushes >= self.min_pushes:
            if self.cut_below is not None and rate < self.cut_below:
                level, reason = "cut", f"success rate under {self.cut_below:.0%}"
            elif self.warn_below is not None and rate < self.warn_below:
                level, reason = "warn", f"success rate under {self.warn_below:.0%}"
        if failing is not None and level != "cut":
            if self.cut_failing_seconds is not None and failing >= self.cut_failing_seconds:
                level = "cut"
                reason = f"failing for {self.cut_failing_seconds / 60:.0f} min or more"
            elif (level is None and self.warn_failing_seconds is not None
                  and failing >= self.warn_failing_seconds):
                level = "warn"
                reason = f"failing for {self.warn_failing_seconds / 60:.0f} min or more"
        return PushRisk(level=level, pushes=pushes, success_rate=rate,
                        failing_seconds=failing, reason=reason)


def failing_seconds(buckets: list[Bucket], now: float) -> float | None:
    """How long pushes have been failing with none answered well since, from the start of the
    first failed minute after the last good one (``buckets`` sorted by minute); None when the
    latest push was answered well or there is none."""
    start: int | None = None
    for bucket in reversed(buckets):
        if bucket.ok:
            break
        if bucket.failed:
            start = bucket.minute
    if start is None:
        return None
    return max(0.0, now - start * MINUTE)


def window_summary(buckets: Iterable[Bucket], now: float,
                   seconds: float = WINDOW_SECONDS) -> tuple[int, float | None]:
    """(pushes, success rate or None) over the last ``seconds``."""
    first = int((now - seconds) // MINUTE) + 1
    ok = failed = 0
    for bucket in buckets:
        if bucket.minute >= first:
            ok += bucket.ok
            failed += bucket.failed
    pushes = ok + failed
    return pushes, (ok / pushes if pushes else None)
