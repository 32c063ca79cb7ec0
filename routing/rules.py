"""Ordered routing rules: the first rule whose conditions all hold picks the queue.

No match means the default queue: a conversation is never dropped, whatever its language.
Conditions exist only for facts routing really has (language, market, channel, skill); the
config check rejects the ones it does not (``hub.config`` names them and says why).
"""

from __future__ import annotations

import msgspec

from routing.config import RoutingConfig, RuleConfig


class Facts(msgspec.Struct, frozen=True):
    """What rules can look at, gathered by classification."""

    channel: str
    channel_instance: str
    channel_label: str | None = None
    # The label the channel gave the conversation itself (Amazon's relay in a mailbox):
    # rules match it beside the instance's configured ``channel_label``.
    hint_label: str | None = None
    language: str | None = None
    market: str | None = None
    skill: str | None = None


class RuleMatch(msgspec.Struct, frozen=True):
    queue: str
    priority: int
    rule: str | None  # None: the default queue


def _holds(rule: RuleConfig, facts: Facts) -> bool:
    w = rule.when
    if w.language and facts.language not in w.language:
        return False
    if w.market and (facts.market or "").upper() not in {m.upper() for m in w.market}:
        return False
    if w.channel and not ({facts.channel, facts.channel_instance, facts.channel_label,
                           facts.hint_label} & set(w.channel)):
        return False
    return not (w.skill and facts.skill not in w.skill)


def choose_queue(cfg: RoutingConfig, facts: Facts) -> RuleMatch:
    for rule in cfg.rules:
        if _holds(rule, facts):
            queue = cfg.queue(rule.queue)
            priority = rule.priority if rule.priority is not None else queue.priority
            return RuleMatch(queue=rule.queue, priority=priority, rule=rule.name)
    default = cfg.queue(cfg.default_queue)
    return RuleMatch(queue=default.name, priority=default.priority, rule=None)
