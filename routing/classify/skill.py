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
# Keywords of a complaint can sit far into a long e-mail, but not past this. The bound holds
# after folding too: NFKD expands some characters eighteenfold (U+FDFA).
_MAX_CHARS: Final = 5000
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_LANGUAGE = re.compile(r"[a-z]{2}")
_SPACES = re.compile(r"\s+")
_WORD_RUN = re.compile(r"\w+")
_WORD_CHAR = re.compile(r"\w")
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


def _fold(text: str, limit: int | None = None) -> str:
    """Case-, accent- and spacing-insensitive form: "Devolución" and "devolucion" agree.

    ``limit`` bounds the work on the decomposed text (NFKD can multiply its length by 18).
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))[:limit]
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


class _Keyword(msgspec.Struct, frozen=True):
    """A folded keyword and the word boundaries it asks for (none in unspaced scripts)."""

    text: str
    start_bound: bool
    end_bound: bool


def _keyword(folded: str) -> _Keyword:
    return _Keyword(
        folded,
        start_bound=folded[0].isalnum() and not _unspaced(folded[0]),
        end_bound=folded[-1].isalnum() and not _unspaced(folded[-1]),
    )


def _is_word_char(text: str, index: int) -> bool:
    return 0 <= index < len(text) and _WORD_CHAR.match(text, index) is not None


class _Matcher:
    """Finds the leftmost keyword (the longest at a tie) in time linear in the text.

    A regex alternation of a rule's keywords tried every keyword at every position (8 µs per
    character with the shipped rules, half a second on a hostile message). Here a keyword that
    starts at a word boundary is looked up by its first word (the positions of each word are
    indexed once per message); only the rare others (starting with punctuation or an unspaced
    script) are searched with ``str.find``, linear too. The answers are those of the regex
    ``(?<!\\w)kw(?!\\w)|...`` with the longest keyword first.
    """

    __slots__ = ("_anywhere", "_by_head")

    def __init__(self, keywords: Sequence[str]) -> None:
        self._by_head: dict[str, list[_Keyword]] = {}
        self._anywhere: list[_Keyword] = []
        for text in sorted(set(keywords), key=len, reverse=True):
            keyword = _keyword(text)
            head = _WORD_RUN.match(text)
            # Indexable when the text's word at the start must equal the keyword's first word.
            if keyword.start_bound and head is not None and (
                head.end() < len(text) or keyword.end_bound
            ):
                self._by_head.setdefault(head.group(0), []).append(keyword)
            else:
                self._anywhere.append(keyword)

    def search(self, text: str, words: Mapping[str, Sequence[int]]) -> str | None:
        best: tuple[int, int, str] | None = None  # (position, -length, keyword)
        for head, keywords in self._by_head.items():
            for start in words.get(head, ()):
                if best is not None and start > best[0]:
                    break
                hit = next((k for k in keywords if text.startswith(k.text, start)
                            and self._ends_well(text, start, k)), None)
                if hit is not None:
                    found = (start, -len(hit.text), hit.text)
                    best = found if best is None or found < best else best
                    break
        for keyword in self._anywhere:
            position = self._find(text, keyword, len(text) if best is None else best[0] + 1)
            if position is not None:
                found = (position, -len(keyword.text), keyword.text)
                best = found if best is None or found < best else best
        return None if best is None else best[2]

    @staticmethod
    def _ends_well(text: str, start: int, keyword: _Keyword) -> bool:
        return not (keyword.end_bound and _is_word_char(text, start + len(keyword.text)))

    def _find(self, text: str, keyword: _Keyword, before: int) -> int | None:
        """First occurrence starting before ``before`` whose boundaries hold."""
        position = text.find(keyword.text, 0, before + len(keyword.text) - 1)
        while 0 <= position < before:
            if not (keyword.start_bound and _is_word_char(text, position - 1)) and \
                    self._ends_well(text, position, keyword):
                return position
            position = text.find(keyword.text, position + 1, before + len(keyword.text) - 1)
        return None


def _words(folded: str) -> dict[str, list[int]]:
    """Where each maximal word-character run starts (each start is a word boundary)."""
    starts: dict[str, list[int]] = {}
    for match in _WORD_RUN.finditer(folded):
        starts.setdefault(match.group(0), []).append(match.start())
    return starts


class _CompiledRule:
    __slots__ = ("by_folded", "matcher", "order", "rule")

    def __init__(self, rule: SkillRule, order: int) -> None:
        self.rule = rule
        self.order = order
        self.by_folded = {_fold(k).strip("¿?¡!.,;: "): k for k in rule.keywords}
        self.matcher = _Matcher(list(self.by_folded))

    def match(self, folded: str, words: Mapping[str, Sequence[int]] | None = None) -> str | None:
        found = self.matcher.search(folded, _words(folded) if words is None else words)
        return None if found is None else self.by_folded.get(found, found)


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
        folded = _fold(text[:_MAX_CHARS], 2 * _MAX_CHARS)[:_MAX_CHARS]
        words = _words(folded)
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
            matched = item.match(folded, words)
            if matched is not None:
                best, best_priority = (
                    SkillGuess(item.rule.skill, item.rule.name, matched),
                    item.rule.priority,
                )
                break
        for item in self._by_language.get(None, []):
            if best is not None and item.rule.priority <= best_priority:
                break
            matched = item.match(folded, words)
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
