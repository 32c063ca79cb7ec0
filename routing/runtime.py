"""Builds the routing engine from config; the expensive parts are built once per process."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import msgspec

from routing.business_hours import BusinessHours, parse_business_hours
from routing.classify.skill import SkillClassifier
from routing.config import RoutingConfig
from routing.engine import RoutingEngine
from storage.store import Store


@functools.lru_cache(maxsize=4)
def language_identifier(languages: tuple[str, ...], min_confidence: float,
                        default: str | None) -> Any:
    """lingua's models take a second and ~150 MB to load: one detector per process."""
    from routing.classify.language import LanguageIdentifier

    return LanguageIdentifier(languages, min_confidence=min_confidence, default=default)


class RoutingParts(NamedTuple):
    """What a routing engine is built from, besides the store."""

    identifier: Any
    skills: SkillClassifier
    hours: BusinessHours | None


def build_parts(cfg: RoutingConfig) -> RoutingParts:
    """Build (and so validate) everything the engine needs; ``inboxhub check`` calls this too.

    Raises ValueError naming the key path. Blocks for about a second the first time (lingua).
    """
    try:
        identifier = language_identifier(tuple(cfg.languages), cfg.min_language_confidence,
                                         cfg.default_language)
    except ValueError as exc:
        raise ValueError(f"routing.languages: {exc}") from None
    skills = (SkillClassifier.from_config(cfg.skills, path="routing.skills")
              if cfg.skills is not None else SkillClassifier.default())
    return RoutingParts(identifier, skills, parse_calendars(cfg))


def parse_calendars(cfg: RoutingConfig) -> BusinessHours | None:
    """The team's business hours and every agent's working hours; returns the team's."""
    hours: BusinessHours | None = None
    if cfg.business_hours is not None:
        hours = parse_business_hours(msgspec.to_builtins(cfg.business_hours),
                                     "routing.business_hours")
    for i, agent in enumerate(cfg.agents):
        if agent.working_hours is not None:
            parse_business_hours({"timezone": agent.timezone,
                                  "weekly": msgspec.to_builtins(agent.working_hours)},
                                 f"routing.agents[{i}].working_hours")
    return hours


def skill_names(skills: SkillClassifier) -> frozenset[str]:
    """The skills the classifier can produce: what a rule's ``skill`` condition may name."""
    return frozenset(rule.skill for rule in skills.rules)


def build_engine(store: Store, cfg: RoutingConfig) -> RoutingEngine:
    """Call from a worker thread: building the language identifier blocks for a second."""
    parts = build_parts(cfg)
    return RoutingEngine(store, cfg, identifier=parts.identifier, skills=parts.skills,
                         business_hours=parts.hours)
