"""Language of a buyer's message: text identification fused with the channel's hint.

The candidate set is restricted to the languages the seller's team actually serves: on short
texts that lifts accuracy far more than any model choice (ROUTING.md), and a guess outside the
configured set could not be routed anyway. lingua (high-accuracy mode, models shipped in the
wheel) was chosen by measurement, see ``python -m bench.langid``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import msgspec
from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

__all__ = ["DEFAULT_MIN_CONFIDENCE", "LanguageGuess", "LanguageIdentifier", "language_from_hint"]

# The text decides only when its top language has at least this share AND twice the runner-up's:
# the share alone drifts with how many languages are configured ("pedido" is 54/45 pt/es among
# three languages), the lead does not. Chosen on lingua's published test data (bench/data,
# `python -m bench.langid`), weighing a right hint (the usual case) against a wrong one (an
# English-speaking buyer on amazon.com.mx): with seven languages the decision is 100 % on
# sentences and 98.6 % on two-word phrases with a right hint, 97.8 % and 80.5 % with a wrong one.
DEFAULT_MIN_CONFIDENCE: Final = 0.45
_MIN_LEAD: Final = 2.0

# A hint alone (marketplace site, phone country, Telegram locale) is right for most buyers, but
# cross-border buyers write in other languages, so it never claims more than this.
_HINT_CONFIDENCE: Final = 0.5

# lingua's cost peaks on texts of about 100-120 letters (it scores those with every n-gram
# order): capping at 100 characters kept accuracy on the benchmark sentences unchanged and cut
# p99 from 0.9 to 0.5 ms. _SCAN_CHARS bounds the clean-up of a 1 MB e-mail.
_MAX_CHARS: Final = 100
_SCAN_CHARS: Final = 2000
_CANDIDATES: Final = 3

# URLs, e-mail addresses, @handles and numbers are language-neutral and pull short texts
# towards English.
_NOISE = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+|@\w+|\d[\d\s.,:/#-]*")
_SPACES = re.compile(r"\s+")

# Characters that name a language outright, with the other languages (lingua's 75) that use
# them. One counts only when exactly one configured language claims it: it settles Spanish vs
# Portuguese on texts as short as "¿y mi pedido?", the dominant error of every identifier.
_MARKERS: Final[dict[str, frozenset[str]]] = {
    "¿": frozenset({"es"}),
    "¡": frozenset({"es"}),
    "ñ": frozenset({"es", "eu", "tl"}),
    "ã": frozenset({"pt", "vi"}),
    "õ": frozenset({"pt", "et", "vi"}),
}
_MARKER_FACTOR: Final = 10.0

# ISO 639-2/3 codes and retired ISO 639-1 codes seen in channel locales.
_ALIASES: Final[dict[str, str]] = {
    "spa": "es",
    "por": "pt",
    "eng": "en",
    "fra": "fr",
    "fre": "fr",
    "deu": "de",
    "ger": "de",
    "ita": "it",
    "zho": "zh",
    "chi": "zh",
    "cmn": "zh",
    "yue": "zh",
    "jpn": "ja",
    "kor": "ko",
    "nld": "nl",
    "dut": "nl",
    "iw": "he",
    "in": "id",
    "ji": "yi",
}
_TAG = re.compile(r"[A-Za-z]{2,3}(?=$|[-_.@])")


class LanguageGuess(msgspec.Struct, frozen=True):
    """The language decision recorded on a conversation, with the evidence behind it."""

    language: str | None
    confidence: float
    source: str
    candidates: tuple[tuple[str, float], ...] = ()


def language_from_hint(hint: str | None) -> str | None:
    """Reduce a channel's locale ("pt-BR", "es_419", "zh-Hans-CN", "por") to ISO 639-1."""
    if not hint:
        return None
    match = _TAG.match(hint.strip()[:35])
    if match is None:
        return None
    code = match.group(0).lower()
    code = _ALIASES.get(code, code)
    return code if len(code) == 2 else None


def _lingua_language(code: str) -> Language:
    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
    except ValueError:
        raise ValueError(f"language {code!r}: not an ISO 639-1 code lingua can identify") from None


def _prepare(text: str) -> str:
    """Keep the part of a message that carries language, within the latency budget."""
    snippet = _NOISE.sub(" ", text[:_SCAN_CHARS])
    snippet = _SPACES.sub(" ", snippet).strip()
    if len(snippet) > _MAX_CHARS:
        cut = snippet.rfind(" ", 0, _MAX_CHARS)
        snippet = snippet[: cut if cut > 0 else _MAX_CHARS]
    # Lone surrogates (from broken JSON escapes) cannot cross into lingua's Rust core.
    return snippet.encode("utf-8", "replace").decode("utf-8")


class LanguageIdentifier:
    """Identifies a message's language among the configured ones and fuses the channel hint.

    Building loads every configured language's models (about 20 MB each, over a second):
    do it once at start-up, before serving.
    """

    def __init__(
        self,
        languages: Sequence[str],
        *,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        default: str | None = None,
    ) -> None:
        codes: list[str] = []
        for raw in languages:
            code = language_from_hint(raw)
            if code is None:
                raise ValueError(f"language {raw!r}: expected an ISO 639-1 code such as 'es'")
            if code not in codes:
                codes.append(code)
        if not codes:
            raise ValueError("languages: expected at least one language")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence: expected a number in [0, 1], got {min_confidence}")
        default_code = language_from_hint(default)
        if default is not None and default_code not in codes:
            raise ValueError(f"default: {default!r} is not one of the configured languages")

        self._codes: tuple[str, ...] = tuple(codes)
        self._by_language = {_lingua_language(code): code for code in codes}
        self._min_confidence = min_confidence
        # With one language there is nothing to tell apart: it answers every message.
        self._default = default_code if len(codes) > 1 else codes[0]
        self._markers = {
            char: next(iter(users & set(codes)))
            for char, users in _MARKERS.items()
            if len(users & set(codes)) == 1
        }
        self._detector: LanguageDetector = (
            LanguageDetectorBuilder.from_languages(*self._by_language)
            .with_preloaded_language_models()
            .build()
        )

    @property
    def languages(self) -> tuple[str, ...]:
        return self._codes

    @property
    def min_confidence(self) -> float:
        return self._min_confidence

    def text_scores(self, text: str) -> list[tuple[str, float]]:
        """Relative likelihood of each configured language, best first; empty without letters."""
        snippet = _prepare(text)
        if len(self._codes) < 2 or not any(char.isalpha() for char in snippet):
            return []
        values = self._detector.compute_language_confidence_values(snippet)
        scores = {self._by_language[value.language]: value.value for value in values}
        lowered = snippet.lower()
        for char, code in self._markers.items():
            if char in lowered:
                scores[code] *= _MARKER_FACTOR
        total = sum(scores.values())
        if total <= 0.0:
            return []
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        return [(code, score / total) for code, score in ranked]

    def identify(self, text: str, hint: str | None = None) -> LanguageGuess:
        """Decide the language: confident text wins, else the hint, else the default."""
        scores = self.text_scores(text)
        candidates = tuple((code, round(score, 4)) for code, score in scores[:_CANDIDATES] if score)
        hinted = language_from_hint(hint)
        if hinted not in self._codes:
            hinted = None
        top, top_score = scores[0] if scores else (None, 0.0)
        runner_up = scores[1][1] if len(scores) > 1 else 0.0
        confident = top_score >= self._min_confidence and top_score >= _MIN_LEAD * runner_up

        if top is not None and confident:
            if top == hinted:
                boosted = 1.0 - (1.0 - top_score) * (1.0 - _HINT_CONFIDENCE)
                return LanguageGuess(top, round(boosted, 4), "text+hint", candidates)
            return LanguageGuess(top, round(top_score, 4), "text", candidates)
        if hinted is not None:
            if top == hinted:
                boosted = 1.0 - (1.0 - top_score) * (1.0 - _HINT_CONFIDENCE)
                return LanguageGuess(hinted, round(boosted, 4), "text+hint", candidates)
            return LanguageGuess(hinted, _HINT_CONFIDENCE, "hint", candidates)
        if self._default is not None:
            return LanguageGuess(self._default, 0.0, "default", candidates)
        return LanguageGuess(None, 0.0, "none", candidates)
