"""Derive routing/classify/data/lexical.tsv.gz from the tuning half of the published sources.

    python -m bench.derive_langid_tables            # rewrites the committed table
    python -m bench.derive_langid_tables --check    # fails if the committed table differs

What goes in (bench/langid_corpus.py names every source, version and licence):

- word-list entries of wspanish, wbrazilian, wportuguese, wamerican, wfrench, wngerman,
  witalian whose word is in the tuning half (at most ``CAP`` per language, in a hash order);
- every token of the Django and django-oscar catalog strings whose msgid is in the tuning half.

Each source gets the same total weight in every language (``MASS``), so a long word list does
not drown a catalog's running text ("de", "não", "pedido" keep their real frequencies), and a
language with a long list is not favoured. Every word is also learned without its accents, at
half weight, for buyers who type "nao" or "donde esta". The table keeps, per feature, the
log-probability of each language minus the best one (rounded to 0.01), and per feature kind the
value of an unseen feature; features seen less than ``MIN_MASS`` in total are left to that default.

How the constants here and the weights in routing/classify/lexical.py were chosen: a second hash
(``sha256("fold\\0" + key)``) splits the tuning half in two; tables derived from one fold were
scored on the other with lingua (``--exclude-fold 1`` writes such a table). On that fold, with
all seven languages configured, word weight 0.3 and n-gram weight 0.1 (orders 3-5) lifted es
one/two-word accuracy from 73.0 % to 88.3 %, pt from 76.7 % to 94.2 %, 3-5 words es 89.1 -> 97.0 %,
pt 93.2 -> 97.7 %; smoothing 0.1 beat 0.5 and 2; giving the catalogs four times the word
lists' weight, and adding aspell-es's expanded forms, both made es worse. The held-out half played
no part.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import math
import sys
from pathlib import Path
from typing import Final

from bench import langid_corpus as corpus
from routing.classify.lexical import ORDERS, TABLE, WORD, features, strip_accents

OUT: Final = Path(__file__).parent.parent / "routing" / "classify" / "data" / TABLE
LANGUAGES: Final = ("es", "pt", "en", "fr", "de", "it")
CAP: Final = 80_000
MASS: Final = 50_000.0
SMOOTHING: Final = 0.1
MIN_MASS: Final = 2.0
ACCENTLESS_WEIGHT: Final = 0.5
PRUNE: Final = 2


def fold_of(key: str) -> int:
    return hashlib.sha256(f"fold\0{key}".encode()).digest()[0] & 1


def _counts(exclude_fold: int | None) -> dict[str, collections.Counter[str]]:
    counts: dict[str, collections.Counter[str]] = {
        lang: collections.Counter() for lang in LANGUAGES
    }
    kinds: dict[str, int] = {}

    def add(lang: str, word: str, weight: float) -> None:
        bare = strip_accents(word)
        variants = [(word, weight)] + ([(bare, weight * ACCENTLESS_WEIGHT)] if bare != word else [])
        for variant, w in variants:
            for order, feature in features(variant):
                counts[lang][feature] += w
                kinds[feature] = order

    def keep(key: str) -> bool:
        if corpus.half_of(key) != "tuning":
            return False
        return exclude_fold is None or fold_of(key) != exclude_fold

    words: dict[str, set[str]] = {}
    for name, (lang, _) in corpus.WORDLISTS.items():
        words.setdefault(lang, set()).update(corpus.wordlist(name))
    for lang in LANGUAGES:
        mine = [w for w in words[lang] if keep(w)]
        mine.sort(key=lambda w: hashlib.sha256(f"cap\0{w}".encode()).digest())
        mine = mine[:CAP]
        for word in mine:
            add(lang, word, MASS / len(mine))
    tokens: dict[str, list[str]] = {lang: [] for lang in LANGUAGES}
    for msgid, lang, text, _ in corpus.catalog_strings():
        if lang in tokens and keep(msgid):
            tokens[lang].extend(token.lower() for token in corpus.tokens(text))
    for lang in LANGUAGES:
        for word in tokens[lang]:
            add(lang, word, MASS / len(tokens[lang]))
    counts["__kinds__"] = collections.Counter(kinds)  # feature -> order, smuggled for _table
    return counts


def _table(counts: dict[str, collections.Counter[str]]) -> list[str]:
    kinds = counts.pop("__kinds__")
    orders = (WORD, *ORDERS)
    vocab = {order: 0 for order in orders}
    for order in kinds.values():
        vocab[order] += 1
    totals = {(lang, order): 0.0 for lang in LANGUAGES for order in orders}
    for lang in LANGUAGES:
        for feature, n in counts[lang].items():
            totals[lang, kinds[feature]] += n

    def logp(n: float, lang: str, order: int) -> float:
        return math.log((n + SMOOTHING) / (totals[lang, order] + SMOOTHING * vocab[order]))

    def relative(values: list[float]) -> list[int]:
        """Tenths of a nat below the best language, capped at 25.5 (one byte each)."""
        top = max(values)
        return [min(255, round((top - v) * 10)) for v in values]

    versions = corpus.source_versions()
    lines = [
        "# Derived by bench/derive_langid_tables.py from the tuning half of:",
        *(f"#   {name} {versions[name]} ({kind}), {licence}"
          for name, kind, licence in corpus.SOURCES),
        "# Values: tenths of a nat by which log P(feature | language)"
        " is below the best language's.",
        f"# Rows within {PRUNE} tenths of their kind's unseen default everywhere are left out.",
        f"# cap {CAP} words/language, mass {MASS:g}/source, smoothing {SMOOTHING},"
        f" min mass {MIN_MASS}",
        "#languages\t" + "\t".join(LANGUAGES),
    ]
    defaults = {order: relative([logp(0.0, lang, order) for lang in LANGUAGES]) for order in orders}
    for order in orders:
        lines.append(f"#default\t{order}\t" + "\t".join(map(str, defaults[order])))
    rows = []
    for feature, order in kinds.items():
        if sum(counts[lang][feature] for lang in LANGUAGES) < MIN_MASS:
            continue
        values = relative([logp(counts[lang][feature], lang, order) for lang in LANGUAGES])
        if max(abs(v - d) for v, d in zip(values, defaults[order], strict=True)) <= PRUNE:
            continue  # scores as an unseen feature would
        rows.append(feature + "\t" + "\t".join(map(str, values)))
    lines.extend(sorted(rows))
    return lines


def derive(exclude_fold: int | None = None) -> bytes:
    text = "\n".join(_table(_counts(exclude_fold))) + "\n"
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.derive_langid_tables", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed table")
    parser.add_argument("--exclude-fold", type=int, choices=(0, 1), help="leave one fold out")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    data = derive(args.exclude_fold)
    if args.check:
        same = args.out.exists() and gzip.decompress(args.out.read_bytes()) == gzip.decompress(data)
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from the sources'}")
        sys.exit(0 if same else 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
