"""Builds the routing engine from config; the expensive parts are built once per process."""

from __future__ import annotations

import functools
from typing import Any

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


def build_engine(store: Store, cfg: RoutingConfig) -> RoutingEngine:
    """Call from a worker thread: building the language identifier blocks for a second."""
    identifier = language_identifier(tuple(cfg.languages), cfg.min_language_confidence,
                                     cfg.default_language)
    skills = (SkillClassifier.from_config(cfg.skills, path="routing.skills")
              if cfg.skills is not None else SkillClassifier.default())
    hours: BusinessHours | None = None
    if cfg.business_hours is not None:
        hours = parse_business_hours(msgspec.to_builtins(cfg.business_hours),
                                     "routing.business_hours")
    return RoutingEngine(store, cfg, identifier=identifier, skills=skills, business_hours=hours)
