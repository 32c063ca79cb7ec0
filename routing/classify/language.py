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

from routing.classify.lexical import LexicalScorer, load_scorer
from routing.classify.market import market_language

__all__ = ["DEFAULT_MIN_CONFIDENCE", "LanguageGuess", "LanguageIdentifier", "language_from_hint"]

# Below this confidence a decision is flagged ``low_confidence`` for a one-click correction in the
# inbox; it is never dropped. routing.min_language_confidence overrides it.
DEFAULT_MIN_CONFIDENCE: Final = 0.6

# Decision rule. The text decides whenever it carries evidence; a hint multiplies its language's
# odds by _HINT_FACTOR, so it wins a near-tie (top less than 3x the hinted language) and nothing
# more; the storefront's market is a weaker prior still (an English-speaking buyer on
# amazon.com.mx stays English). Both factors were set by judgement, not searched, and checked on
# the tuning half only (bench/langid.py --half tuning): a right hint lifts es/pt one-two-word
# accuracy by 3-4 points, a wrong one costs about 5, and neither moves 6+-word texts.
_HINT_FACTOR: Final = 3.0
_MARKET_FACTOR: Final = 1.5

# With no evidence in the text: a hint alone (Telegram locale, marketplace site) is right for
# most buyers but cross-border buyers write in other languages; a market alone, less so.
_HINT_CONFIDENCE: Final = 0.5
_MARKET_CONFIDENCE: Final = 0.4

# lingua's cost peaks on texts of about 100-120 letters (it scores those with every n-gram
# order): capping at 100 characters kept accuracy on the benchmark sentences unchanged and cut
# p99 from 0.9 to 0.5 ms. _SCAN_CHARS bounds the clean-up of a 1 MB e-mail.
_MAX_CHARS: Final = 100
_SCAN_CHARS: Final = 2000
_CANDIDATES: Final = 3

# Runs of ASCII letters, digits and code punctuation, read possessively (each character once, no
# backtracking whatever the input): a run with a digit is an order id, SKU, price or date, which
# carries no language and pulls short texts towards English.
_CODE_RUN = re.compile(r"[0-9A-Za-z#_/.:+=-]++")
_CJK_START: Final = "\u2e80"
_WORD = re.compile(r"[^\W\d_]+")

# Characters that name a language outright, with the other languages (lingua's 75) that use
# them. One counts only when exactly one configured language claims it: it settles Spanish vs
# Portuguese on texts as short as "¿y mi pedido?", and no hint or market can outvote it.
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
    """The language decision recorded on a conversation, with the evidence behind it.

    ``source`` says what decided: ``text`` (the text alone, any hint or market outvoted or
    absent), ``text+hint`` / ``text+market`` (the text, with the hint / the market's language
    agreeing, possibly breaking a near-tie), ``hint`` / ``market`` (the text carries no language:
    emoji, numbers, an order id), ``default`` (nothing at all, the configured default), ``none``
    (nothing and no default: the conversation waits for an agent to pick). ``low_confidence``
    marks a decision below ``min_confidence`` for a one-click correction in the inbox.
    """

    language: str | None
    confidence: float
    source: str
    candidates: tuple[tuple[str, float], ...] = ()
    low_confidence: bool = False


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


def _drop_code(run: re.Match[str]) -> str:
    return " " if any(char.isdigit() for char in run.group()) else run.group()


def _prepare(text: str) -> str:
    """Keep the part of a message that carries language, within the latency budget.

    Linear in the text read, and that is bounded: whitespace splitting, substring tests and one
    possessive pattern, so no input (``a@a@a@...``, a megabyte without spaces) can backtrack.
    """
    kept: list[str] = []
    length = 0
    for token in text[:_SCAN_CHARS].split():
        lowered = token.lower()
        if "@" in token or "://" in token or lowered.startswith("www."):
            # An e-mail address, @handle or URL; Chinese around it (no spaces) stays.
            token = "".join(char for char in token if char >= _CJK_START)
        token = _CODE_RUN.sub(_drop_code, token).strip()
        if not token:
            continue
        kept.append(token)
        length += len(token) + 1
        if length > _MAX_CHARS:
            break
    snippet = " ".join(kept)
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
        # The word-and-spelling step (es<->pt first): only when two configured languages have
        # a table row; loaded once per process, shared by every identifier.
        lexical = load_scorer()
        covered = set(lexical.languages) & set(codes)
        self._lexical: LexicalScorer | None = lexical if len(covered) >= 2 else None
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
        """Relative likelihood of each configured language, best first; empty without evidence."""
        return self._text_evidence(_prepare(text))[0]

    def _text_evidence(self, snippet: str) -> tuple[list[tuple[str, float]], str | None]:
        """Ranked scores, and the language an unambiguous marker names (or None)."""
        if len(self._codes) < 2 or not any(char.isalpha() for char in snippet):
            return [], None
        values = self._detector.compute_language_confidence_values(snippet)
        scores = {self._by_language[value.language]: value.value for value in values}
        if sum(scores.values()) <= 0.0:
            return [], None  # letters of no configured language's script
        lowered = snippet.lower()
        if self._lexical is not None:
            self._lexical.rerank(scores, _WORD.findall(lowered))
        marked = {code for char, code in self._markers.items() if char in lowered}
        for code in marked:
            scores[code] *= _MARKER_FACTOR
        total = sum(scores.values())
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        marker = next(iter(marked)) if len(marked) == 1 else None
        return [(code, score / total) for code, score in ranked], marker

    def _configured(self, code: str | None) -> str | None:
        return code if code in self._codes else None

    def _guess(
        self, language: str | None, confidence: float, source: str,
        candidates: tuple[tuple[str, float], ...],
    ) -> LanguageGuess:
        confidence = round(min(max(confidence, 0.0), 1.0), 4)
        low = language is not None and confidence < self._min_confidence
        return LanguageGuess(language, confidence, source, candidates, low)

    def identify(
        self, text: str, hint: str | None = None, *, market: str | None = None
    ) -> LanguageGuess:
        """Decide the language: the text whenever it carries evidence, fused with the priors.

        ``hint`` is a locale from the channel ("pt-BR", a Telegram ``language_code``); ``market``
        an ISO 3166-1 country ("BR", "MX") whose storefront language is a weaker prior.
        """
        scores, marker = self._text_evidence(_prepare(text))
        rounded = ((code, round(score, 4)) for code, score in scores[:_CANDIDATES])
        candidates = tuple((code, score) for code, score in rounded if score > 0.0)
        hinted = self._configured(language_from_hint(hint))
        local = self._configured(market_language(market)) if market else None
        if len(self._codes) == 1:
            return LanguageGuess(self._codes[0], 0.0, "default", candidates)  # nothing to correct

        if not scores:
            if hinted is not None:
                return self._guess(hinted, _HINT_CONFIDENCE, "hint", candidates)
            if local is not None:
                return self._guess(local, _MARKET_CONFIDENCE, "market", candidates)
            if self._default is not None:
                return self._guess(self._default, 0.0, "default", candidates)
            return self._guess(None, 0.0, "none", candidates)

        # An unambiguous marker (¿ ¡ ñ ã õ) is never outvoted by a prior naming another language.
        if marker is not None:
            hinted = hinted if hinted == marker else None
            local = local if local == marker else None
        fused = dict(scores)
        if hinted is not None:
            fused[hinted] *= _HINT_FACTOR
        if local is not None:
            fused[local] *= _MARKET_FACTOR
        total = sum(fused.values())
        language = max(fused, key=lambda code: fused[code])
        confidence = fused[language] / total
        if language == hinted:
            source = "text+hint"
        elif language == local:
            source = "text+market"
        else:
            source = "text"
        return self._guess(language, confidence, source, candidates)
