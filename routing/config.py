"""The ``[routing]`` section of the config: queues with relaxation steps, rules, agents, SLAs.

Validated at start-up (and on reload) into these Structs; ``validate_routing`` adds the
cross-checks msgspec cannot express (rules naming unknown queues, duplicate ids, levels out of
range) with the key path in every message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from routing.codes import ISO_639_1, ISO_3166_1_ALPHA_2, MARKET_HINTS

Level = int  # proficiency 1..5

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class StepConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Requirements of one relaxation step; ``after_seconds`` counts from entering the queue.

    ``skip_when_unstaffed`` (TaskRouter's ``skip_if``) lets a conversation pass this step at
    once when nobody online could serve it. It is opt-in: by default the step keeps the buyer
    until the next step's ``after_seconds`` even when its agents are away, so a Spanish buyer
    is not handed to an English-only overflow agent the moment the Spanish team steps out.
    """

    after_seconds: float = 0.0
    languages: dict[str, Level] = {}
    markets: list[str] = []
    skills: dict[str, Level] = {}
    skip_when_unstaffed: bool = False


class QueueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    priority: int = 0
    steps: list[StepConfig] = []


class WhenConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """All listed conditions must hold; an empty list means "any"."""

    language: list[str] = []
    market: list[str] = []
    channel: list[str] = []
    skill: list[str] = []


class RuleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    queue: str
    when: WhenConfig = WhenConfig()
    priority: int | None = None


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str = ""
    languages: dict[str, Level] = {}
    markets: list[str] = []
    skills: dict[str, Level] = {}
    capacity: dict[str, int] = msgspec.field(default_factory=lambda: {"chat": 5, "email": 20})
    weight: int = 1
    timezone: str = "UTC"
    working_hours: dict[str, list[tuple[str, str]]] | None = None


class SlaPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Minutes of business time; 0 disables a clock. ``always`` ignores business hours
    (Amazon's 24 h reply duty counts weekends and holidays)."""

    first_response_minutes: float = 0.0
    next_response_minutes: float = 0.0
    resolution_minutes: float = 0.0
    always: bool = False


class BusinessHoursConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timezone: str = "UTC"
    weekly: dict[str, list[tuple[str, str]]] = {}
    holidays: list[str] = []


DEFAULT_KINDS: dict[str, str] = {
    "api": "chat", "telegram": "chat", "whatsapp": "chat", "messenger": "chat",
    "instagram": "chat", "sms": "chat", "twilio": "chat", "email": "email", "amazon": "email",
    "mercadolibre": "email", "ebay": "email", "aliexpress": "email", "shopee": "chat",
}


class RoutingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    default_queue: str = "default"
    languages: list[str] = msgspec.field(
        default_factory=lambda: ["es", "pt", "en", "fr", "de", "it", "zh"])
    default_language: str | None = None
    min_language_confidence: float = 0.6
    sticky_hours: float = 72.0
    reassign_after_no_reply_minutes: float = 0.0
    requeue_priority_boost: int = 1
    sla_breach_priority_boost: int = 5
    channel_kinds: dict[str, str] = {}
    channel_markets: dict[str, str] = {}
    # A label groups channel instances for SLAs and rules: the email instance that receives
    # Amazon's buyer-seller relay is an "email" channel but carries Amazon's 24-hour duty,
    # e.g. channel_labels = { amazon-es = "amazon" } with [routing.sla.amazon].
    channel_labels: dict[str, str] = {}
    queues: list[QueueConfig] = []
    rules: list[RuleConfig] = []
    agents: list[AgentConfig] = []
    sla: dict[str, SlaPolicy] = {}
    business_hours: BusinessHoursConfig | None = None
    skills: dict[str, Any] | None = None

    def kind_of(self, channel_type: str) -> str:
        return self.channel_kinds.get(channel_type) or DEFAULT_KINDS.get(channel_type, "chat")

    def queue(self, name: str) -> QueueConfig:
        for q in self.effective_queues():
            if q.name == name:
                return q
        raise KeyError(name)

    def effective_queues(self) -> list[QueueConfig]:
        """Declared queues plus the default queue (any agent) if it was not declared."""
        queues = [q if q.steps else msgspec.structs.replace(q, steps=[StepConfig()])
                  for q in self.queues]
        if all(q.name != self.default_queue for q in queues):
            queues.append(QueueConfig(name=self.default_queue, steps=[StepConfig()]))
        return queues


def capacity_kinds(cfg: RoutingConfig) -> set[str]:
    """Every kind ``kind_of`` can return: a capacity kind outside this set is never used."""
    return set(DEFAULT_KINDS.values()) | set(cfg.channel_kinds.values()) | {"chat"}


def validate_routing(cfg: RoutingConfig, where: str = "routing", *,
                     channels: Mapping[str, str] | None = None,
                     skills: Collection[str] | None = None,
                     labels: Collection[str] = ()) -> None:
    """Cross-field checks; raises ValueError naming the key path and what was expected.

    ``channels`` (configured channel name -> type) and ``skills`` (what the skill classifier
    can produce) enable the checks that need them: rules on channels and skills, markets per
    channel, SLA sections per channel type. Values that can never match are rejected, not
    ignored: a rule that silently never fires misroutes every conversation it was meant for.
    ``labels`` are those the channels themselves put on conversations (an email mailbox's
    ``amazon`` and sender-rule labels), valid wherever a ``channel_labels`` label is.
    """
    _language_list(cfg, where)
    _codes_and_kinds(cfg, where, channels, labels)
    names: set[str] = set()
    for i, q in enumerate(cfg.queues):
        at = f"{where}.queues[{i}]"
        if not _ID.fullmatch(q.name) or "#" in q.name:
            raise ValueError(f"{at}.name: expected 1-64 of A-Z a-z 0-9 _ . -, got {q.name!r}")
        if q.name in names:
            raise ValueError(f"{at}.name: duplicate queue {q.name!r}")
        names.add(q.name)
        previous = -1.0
        for j, step in enumerate(q.steps):
            sat = f"{at}.steps[{j}]"
            if j == 0 and step.after_seconds != 0:
                raise ValueError(f"{sat}.after_seconds: the first step starts at 0")
            if step.after_seconds <= previous:
                raise ValueError(f"{sat}.after_seconds: expected more than the previous step's")
            previous = step.after_seconds
            _levels(step.languages, f"{sat}.languages")
            _levels(step.skills, f"{sat}.skills")
        if q.steps and (q.steps[-1].languages or q.steps[-1].markets or q.steps[-1].skills):
            # Fine (a hard requirement), but then nothing overflows: say so only in docs.
            pass
    known = {q.name for q in cfg.effective_queues()}
    for i, rule in enumerate(cfg.rules):
        if rule.queue not in known:
            raise ValueError(f"{where}.rules[{i}].queue: unknown queue {rule.queue!r} "
                             f"(declared: {', '.join(sorted(known))})")
        _rule_values(cfg, rule, f"{where}.rules[{i}].when", channels, skills, labels)
    seen: set[str] = set()
    for i, agent in enumerate(cfg.agents):
        at = f"{where}.agents[{i}]"
        if not _ID.fullmatch(agent.id):
            raise ValueError(f"{at}.id: expected 1-64 of A-Z a-z 0-9 _ . -, got {agent.id!r}")
        if agent.id in seen:
            raise ValueError(f"{at}.id: duplicate agent {agent.id!r}")
        seen.add(agent.id)
        _levels(agent.languages, f"{at}.languages")
        _levels(agent.skills, f"{at}.skills")
        for kind, cap in agent.capacity.items():
            if not 0 <= cap <= 50 or not _ID.fullmatch(kind):
                raise ValueError(f"{at}.capacity.{kind}: expected 0..50, got {cap}")
        if agent.weight < 0:
            raise ValueError(f"{at}.weight: expected >= 0 (0 = transfers only)")
    if not 0 <= cfg.min_language_confidence <= 1:
        raise ValueError(f"{where}.min_language_confidence: expected 0..1")
    if cfg.sticky_hours < 0 or cfg.reassign_after_no_reply_minutes < 0:
        raise ValueError(f"{where}: sticky_hours and reassign_after_no_reply_minutes must be >= 0")


def _language_list(cfg: RoutingConfig, where: str) -> None:
    if not cfg.languages:
        raise ValueError(f"{where}.languages: expected at least one ISO 639-1 code")
    for i, code in enumerate(cfg.languages):
        if code not in ISO_639_1:
            raise ValueError(f"{where}.languages[{i}]: unknown language {code!r}, expected a "
                             f"lowercase ISO 639-1 code such as 'es' or 'pt'")
    if cfg.default_language is not None and cfg.default_language not in cfg.languages:
        raise ValueError(f"{where}.default_language: {cfg.default_language!r} is not one of "
                         f"{where}.languages ({', '.join(cfg.languages)})")


def _language_keys(levels: Mapping[str, int], at: str) -> None:
    for code in levels:
        if code not in ISO_639_1:
            raise ValueError(f"{at}.{code}: unknown language {code!r}, expected a lowercase "
                             f"ISO 639-1 code such as 'es'")


def _markets(markets: list[str], at: str) -> None:
    for i, market in enumerate(markets):
        _market(market, f"{at}[{i}]")


def _market(market: str, at: str) -> None:
    if market.upper() in ISO_3166_1_ALPHA_2:
        return
    hint = MARKET_HINTS.get(market.upper())
    also = f" (did you mean {hint!r}?)" if hint else ""
    raise ValueError(f"{at}: unknown market {market!r}, expected an ISO 3166-1 alpha-2 country "
                     f"code such as 'MX' or 'BR'{also}")


def _timezone(name: str, at: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: a directory
        raise ValueError(f"{at}: unknown IANA time zone {name!r}, expected a name such as "
                         f"'America/Mexico_City'") from None


def _codes_and_kinds(cfg: RoutingConfig, where: str,
                     channels: Mapping[str, str] | None, hint_labels: Collection[str]) -> None:
    """Languages, markets, time zones and capacity kinds wherever the config names them."""
    kinds = capacity_kinds(cfg)
    listed = ", ".join(sorted(kinds))
    for i, q in enumerate(cfg.queues):
        for j, step in enumerate(q.steps):
            sat = f"{where}.queues[{i}].steps[{j}]"
            _language_keys(step.languages, f"{sat}.languages")
            _markets(step.markets, f"{sat}.markets")
    for i, agent in enumerate(cfg.agents):
        at = f"{where}.agents[{i}]"
        _language_keys(agent.languages, f"{at}.languages")
        _markets(agent.markets, f"{at}.markets")
        _timezone(agent.timezone, f"{at}.timezone")
        for kind in agent.capacity:
            if kind not in kinds:
                raise ValueError(f"{at}.capacity.{kind}: unknown capacity kind {kind!r}; "
                                 f"channels produce: {listed}")
    types = set(DEFAULT_KINDS) | set(cfg.channel_kinds)
    if channels is not None:
        types |= set(channels.values())
        for name in cfg.channel_markets:
            if name not in channels:
                raise ValueError(f"{where}.channel_markets.{name}: no channel named {name!r} "
                                 f"(channels: {', '.join(sorted(channels)) or 'none'})")
    for name, market in cfg.channel_markets.items():
        _market(market, f"{where}.channel_markets.{name}")
    for kind in cfg.channel_kinds.values():
        if not _ID.fullmatch(kind):
            raise ValueError(f"{where}.channel_kinds: expected kinds of 1-64 of A-Z a-z 0-9 _ . -, "
                             f"got {kind!r}")
    labels = set(cfg.channel_labels.values()) | set(hint_labels)
    for name, label in cfg.channel_labels.items():
        if channels is not None and name not in channels:
            raise ValueError(f"{where}.channel_labels.{name}: no channel named {name!r} "
                             f"(channels: {', '.join(sorted(channels)) or 'none'})")
        if not _ID.fullmatch(label):
            raise ValueError(f"{where}.channel_labels.{name}: expected a label of 1-64 of "
                             f"A-Z a-z 0-9 _ . -, got {label!r}")
    instances = set(channels) if channels is not None else set()
    for name in cfg.sla:
        # Without ``channels`` (a reload of rules already checked with them) an instance or
        # a channel's own label cannot be told from a typo: only checked with them.
        if channels is not None and name not in kinds | types | labels | instances:
            raise ValueError(f"{where}.sla.{name}: no channel instance, label, channel type or "
                             f"capacity kind {name!r}; expected an instance "
                             f"({', '.join(sorted(instances)) or 'none'}), a label of "
                             f"routing.channel_labels ({', '.join(sorted(labels)) or 'none'}), a "
                             f"type ({', '.join(sorted(types))}) or a kind ({listed})")


def _rule_values(cfg: RoutingConfig, rule: RuleConfig, at: str,
                 channels: Mapping[str, str] | None, skills: Collection[str] | None,
                 hint_labels: Collection[str] = ()) -> None:
    """A value no conversation can carry makes the condition (and so the rule) never hold."""
    w = rule.when
    for i, code in enumerate(w.language):
        if code not in cfg.languages:
            raise ValueError(f"{at}.language[{i}]: {code!r} can never match: conversations "
                             f"carry one of routing.languages ({', '.join(cfg.languages)})")
    _markets(w.market, f"{at}.market")
    if channels is not None:
        known = (set(channels) | set(channels.values()) | set(cfg.channel_labels.values())
                 | set(hint_labels))
        for i, name in enumerate(w.channel):
            if name not in known:
                raise ValueError(f"{at}.channel[{i}]: {name!r} can never match: no channel has "
                                 f"that name, type or label (names, types and labels: "
                                 f"{', '.join(sorted(known)) or 'none'})")
    if skills is not None:
        for i, skill in enumerate(w.skill):
            if skill not in skills:
                raise ValueError(f"{at}.skill[{i}]: {skill!r} can never match: the skill rules "
                                 f"produce {', '.join(sorted(skills))}")


def _levels(levels: dict[str, int], at: str) -> None:
    for name, level in levels.items():
        if not 1 <= level <= 5:
            raise ValueError(f"{at}.{name}: expected a level 1..5, got {level}")
