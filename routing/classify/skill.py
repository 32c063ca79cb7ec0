"""Skill a conversation needs, from the entry point and keyword rules per language.

Rules live in TOML so a seller can add their buyers' vocabulary without code; the rule that
fired and the keyword it matched are recorded, so an agent can see why a chat reached them.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Final

import msgspec

__all__ = ["ENTRY_POINT_RULE", "SkillClassifier", "SkillGuess", "SkillRule"]

ENTRY_POINT_RULE: Final = "entry_point"
_DEFAULT_FILE: Final = "default_skills.toml"
# Keywords of a complaint can sit far into a long e-mail, but not past this.
_MAX_CHARS: Final = 5000
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_LANGUAGE = re.compile(r"[a-z]{2}")
_SPACES = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


class SkillRule(msgspec.Struct, frozen=True):
    """Keywords that, in a message of ``language`` (None: any), signal ``skill``."""

    name: str
    skill: str
    language: str | None
    keywords: tuple[str, ...]
    priority: int = 0


class SkillGuess(msgspec.Struct, frozen=True):
    """The skill decision and what caused it (a rule name, or "entry_point")."""

    skill: str | None
    rule: str | None = None
    matched: str | None = None


class _RuleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    skill: str
    keywords: list[str]
    language: str | None = None
    priority: int | None = None


class _SkillsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rule: list[_RuleConfig]
    priority: dict[str, int] = msgspec.field(default_factory=dict)


def _fold(text: str) -> str:
    """Case-, accent- and spacing-insensitive form: "Devolución" and "devolucion" agree."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _SPACES.sub(" ", stripped.casefold()).strip()


def _unspaced(char: str) -> bool:
    """Scripts written without spaces, where a word boundary cannot be asked for."""
    point = ord(char)
    return (
        0x0E00 <= point <= 0x0EFF  # Thai, Lao
        or 0x3040 <= point <= 0x30FF  # kana
        or 0x3400 <= point <= 0x4DBF
        or 0x4E00 <= point <= 0x9FFF
        or 0xF900 <= point <= 0xFAFF  # CJK ideographs
    )


def _pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    parts = []
    for keyword in sorted({_fold(k).strip("¿?¡!.,;: ") for k in keywords}, key=len, reverse=True):
        part = re.escape(keyword)
        if keyword[0].isalnum() and not _unspaced(keyword[0]):
            part = r"(?<!\w)" + part
        if keyword[-1].isalnum() and not _unspaced(keyword[-1]):
            part += r"(?!\w)"
        parts.append(part)
    return re.compile("|".join(parts))


class _CompiledRule:
    __slots__ = ("by_folded", "order", "pattern", "rule")

    def __init__(self, rule: SkillRule, order: int) -> None:
        self.rule = rule
        self.order = order
        self.pattern = _pattern(rule.keywords)
        self.by_folded = {_fold(k).strip("¿?¡!.,;: "): k for k in rule.keywords}

    def match(self, folded: str) -> str | None:
        found = self.pattern.search(folded)
        return self.by_folded.get(found.group(0), found.group(0)) if found else None


class SkillClassifier:
    """Keyword rules by language; the highest-priority match wins (dispute over presale)."""

    def __init__(self, rules: Sequence[SkillRule], *, priorities: Mapping[str, int] | None = None):
        self._priorities = dict(priorities or {})
        compiled = [_CompiledRule(rule, order) for order, rule in enumerate(rules)]
        # Highest priority first; at equal priority the message's language before neutral
        # rules (see classify), then the order of the configuration.
        compiled.sort(key=lambda c: (-c.rule.priority, c.order))
        self._by_language: dict[str | None, list[_CompiledRule]] = {}
        for item in compiled:
            self._by_language.setdefault(item.rule.language, []).append(item)
        self._rules = tuple(rules)

    @property
    def rules(self) -> tuple[SkillRule, ...]:
        return self._rules

    @classmethod
    def from_config(cls, data: Mapping[str, Any], *, path: str = "") -> SkillClassifier:
        """Validate a TOML-shaped table; a ValueError names the key path and what was expected."""
        prefix = f"{path}." if path else ""
        priorities = data.get("priority")
        if isinstance(priorities, Mapping):
            # msgspec names a bad dict value "priority[...]"; name the skill instead.
            for skill, value in priorities.items():
                if not isinstance(value, int) or isinstance(value, bool):
                    got = type(value).__name__
                    raise ValueError(f"{prefix}priority.{skill}: Expected `int`, got `{got}`")
        try:
            config = msgspec.convert(dict(data), _SkillsConfig)
        except msgspec.ValidationError as exc:
            message, _, where = str(exc).partition(" - at `$")
            where = where.rstrip("`").lstrip(".")
            raise ValueError(f"{prefix}{where or '(root)'}: {message}") from None

        for skill in config.priority:
            if not _NAME.fullmatch(skill):
                raise ValueError(f"{prefix}priority.{skill}: expected a lowercase skill name")
        seen: set[str] = set()
        rules = []
        for index, item in enumerate(config.rule):
            where = f"{prefix}rule[{index}]"
            if not _NAME.fullmatch(item.name) or item.name in seen:
                raise ValueError(
                    f"{where}.name: expected a unique lowercase name, got {item.name!r}"
                )
            seen.add(item.name)
            if config.priority and item.skill not in config.priority:
                known = ", ".join(sorted(config.priority))
                raise ValueError(
                    f"{where}.skill: unknown skill {item.skill!r}; expected one of {known}"
                )
            if item.language is not None and not _LANGUAGE.fullmatch(item.language):
                raise ValueError(f"{where}.language: expected an ISO 639-1 code such as 'es'")
            keywords = tuple(k for k in item.keywords if _fold(k).strip("¿?¡!.,;: "))
            if not keywords or len(keywords) != len(item.keywords):
                raise ValueError(
                    f"{where}.keywords: expected a non-empty list of non-blank strings"
                )
            priority = (
                item.priority if item.priority is not None else config.priority.get(item.skill, 0)
            )
            rules.append(SkillRule(item.name, item.skill, item.language, keywords, priority))
        return cls(rules, priorities=config.priority)

    @classmethod
    def default(cls) -> SkillClassifier:
        """The shipped en/es/pt buyer vocabulary (routing/classify/default_skills.toml)."""
        text = resources.files(__package__).joinpath(_DEFAULT_FILE).read_text(encoding="utf-8")
        return cls.from_config(tomllib.loads(text), path=_DEFAULT_FILE)

    def classify(
        self, text: str, language: str | None, *, entry_point_skill: str | None = None
    ) -> SkillGuess:
        """Pick the skill: the best keyword rule, unless the entry point ranks higher."""
        folded = _fold(text[:_MAX_CHARS])
        if language is not None:
            language = language.replace("_", "-").split("-", 1)[0].lower() or None
        if language is None:
            # Unknown language: every language's rules may speak, neutral ones last.
            groups = [rules for key, rules in self._by_language.items() if key is not None]
            candidates = sorted(
                (rule for group in groups for rule in group),
                key=lambda c: (-c.rule.priority, c.order),
            )
        else:
            candidates = self._by_language.get(language, [])
        best: SkillGuess | None = None
        best_priority = 0
        for item in candidates:
            matched = item.match(folded)
            if matched is not None:
                best, best_priority = (
                    SkillGuess(item.rule.skill, item.rule.name, matched),
                    item.rule.priority,
                )
                break
        for item in self._by_language.get(None, []):
            if best is not None and item.rule.priority <= best_priority:
                break
            matched = item.match(folded)
            if matched is not None:
                best, best_priority = (
                    SkillGuess(item.rule.skill, item.rule.name, matched),
                    item.rule.priority,
                )
                break

        if entry_point_skill:
            entry_priority = self._priorities.get(entry_point_skill, 0)
            if best is None or entry_priority > best_priority:
                return SkillGuess(entry_point_skill, ENTRY_POINT_RULE, None)
        return best if best is not None else SkillGuess(None)
