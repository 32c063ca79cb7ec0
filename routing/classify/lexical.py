"""Word and spelling evidence for the near-ties of short messages, Spanish vs Portuguese first.

lingua is trained on news sentences; on one to five words its errors are mostly es<->pt (and
es<->it): "Tipo de informe", "Atributos de Linea", "obrigado", "devolução". This step adds a
naive-Bayes score from a table derived from published word lists and translation catalogs
(``bench/derive_langid_tables.py``; sources and licences in the table's header and in
``routing/classify/data/README.md``): the whole word ("<não>", "<muy>", "<pedido>") and its
character 3- to 5-grams ("ção", "ción", "lh", "ñ", "nh"), learned with and without accents so
that "nao", "donde esta" and "ola cade meu pedido" still carry their language.

Only languages the table covers are re-ranked, and only among themselves: the share lingua gave
them together is redistributed, so a language without a table (Chinese, or any other configured
one) keeps exactly lingua's share.
"""

from __future__ import annotations

import functools
import gzip
import math
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Final

__all__ = ["LexicalScorer", "features", "load_scorer", "strip_accents"]

TABLE: Final = "lexical.tsv.gz"
# Orders of the character n-grams in the table; 0 stands for the whole word.
ORDERS: Final = (3, 4, 5)
WORD: Final = 0

# Weight of each feature kind's log-probability against lingua's log-probability: the features of
# one word overlap, so their sum is far more confident than it should be. Chosen by a two-fold
# split of the tuning half (bench/derive_langid_tables.py documents the grid), never on held-out.
_WORD_WEIGHT: Final = 0.3
_CHAR_WEIGHT: Final = 0.1
# Words read per message: a buyer's first sentence names the language; more costs time only.
_MAX_WORDS: Final = 16
_MAX_WORD_LETTERS: Final = 30


def strip_accents(word: str) -> str:
    """'devolução' -> 'devolucao': how buyers type on phones without the accent keys."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def features(word: str) -> Iterator[tuple[int, str]]:
    """The whole word and its character n-grams, each with its order (0 for the word)."""
    padded = f"<{word}>"
    yield WORD, f"={word}"
    for n in ORDERS:
        for i in range(len(padded) - n + 1):
            yield n, padded[i : i + n]


class LexicalScorer:
    """Scores words against the table's languages; loaded once per process (about 30 MB)."""

    def __init__(
        self, languages: tuple[str, ...], table: dict[str, int], defaults: dict[int, int]
    ) -> None:
        self.languages = languages
        # Each row packs one byte-sized value per language (tenths of a nat below the best
        # language) into 16-bit fields of one int: adding two rows adds every language at once,
        # and _MAX_WORDS x features per word stays far below a field's overflow.
        self._table = table
        self._defaults = defaults

    @classmethod
    def parse(cls, lines: Iterable[str]) -> LexicalScorer:
        languages: tuple[str, ...] = ()
        defaults: dict[int, int] = {}
        table: dict[str, int] = {}
        for line in lines:
            line = line.rstrip("\n")
            if line.startswith("#languages\t"):
                languages = tuple(line.split("\t")[1:])
            elif line.startswith("#default\t"):
                _, order, *values = line.split("\t")
                defaults[int(order)] = _pack(values)
            elif line and not line.startswith("#"):
                feature, *values = line.split("\t")
                if len(values) != len(languages):
                    raise ValueError(f"{TABLE}: row {feature!r} needs {len(languages)} values")
                table[sys.intern(feature)] = _pack(values)
        if not languages or set(defaults) != {WORD, *ORDERS}:
            raise ValueError(f"{TABLE}: missing its #languages or #default lines")
        return cls(languages, table, defaults)

    def log_scores(self, words: Sequence[str]) -> list[float]:
        """Weighted log-likelihood of the words under each of the table's languages."""
        table, defaults = self._table, self._defaults
        word_sum = char_sum = 0
        for word in words[:_MAX_WORDS]:
            if len(word) > _MAX_WORD_LETTERS:
                continue
            for order, feature in features(word):
                packed = table.get(feature)
                if packed is None:
                    packed = defaults[order]
                if order == WORD:
                    word_sum += packed
                else:
                    char_sum += packed
        width = len(self.languages)
        return [
            -(_WORD_WEIGHT * w + _CHAR_WEIGHT * c) / 10
            for w, c in zip(_unpack(word_sum, width), _unpack(char_sum, width), strict=True)
        ]

    def rerank(self, scores: dict[str, float], words: Sequence[str]) -> None:
        """Redistribute, in place, the share lingua gave the table's languages among them."""
        covered = [(i, code) for i, code in enumerate(self.languages) if code in scores]
        if len(covered) < 2 or not words:
            return
        mass = sum(scores[code] for _, code in covered)
        if mass <= 0.0:
            return
        lexical = self.log_scores(words)
        # lingua's zero (a language it rules out) stays near zero instead of -inf.
        logits = {code: math.log(max(scores[code], 1e-4)) + lexical[i] for i, code in covered}
        top = max(logits.values())
        weights = {code: math.exp(logit - top) for code, logit in logits.items()}
        total = sum(weights.values())
        for code, weight in weights.items():
            scores[code] = mass * weight / total


_FIELD: Final = 16
_MASK: Final = (1 << _FIELD) - 1


def _pack(values: Sequence[str]) -> int:
    packed = 0
    for i, value in enumerate(values):
        number = int(value)
        if not 0 <= number <= 255:
            raise ValueError(f"{TABLE}: value {value!r} outside 0..255")
        packed |= number << (_FIELD * i)
    return packed


def _unpack(packed: int, width: int) -> list[int]:
    return [(packed >> (_FIELD * i)) & _MASK for i in range(width)]


@functools.cache
def load_scorer() -> LexicalScorer:
    """The committed table, parsed once per process and shared by every identifier."""
    path = resources.files("routing.classify").joinpath("data", TABLE)
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return LexicalScorer.parse(lines)
