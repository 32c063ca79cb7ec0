"""Language identification benchmark: the product against bare lingua, on both halves.

    python -m bench.langid                    # both halves, table + targets
    python -m bench.langid --half tuning      # the only half weights may be chosen on
    python -m bench.langid --json

Texts: bench/langid_corpus.py (Django and django-oscar translation catalogs, Debian word lists,
read from where their packages install them; sources, versions and licences are printed). The
baseline is lingua high-accuracy restricted to the same seven languages, built in the same
process and run on the same texts: its top language, with no hint, never abstaining unless it
returns nothing.

Per language and length (words: 1-2, 3-5, 6-12, 13+ "sentences"), over texts spelled in one
language only: accuracy with abstentions counted as errors (text only, right hint, wrong hint:
es<->pt swapped, es for the others), abstentions, es<->pt confusions. Texts spelled the same in
several languages ("pedido") are scored apart, any of their languages counting as right.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Final

import msgspec

from bench import langid_corpus as corpus

CONFIGURED: Final = corpus.LANGUAGES
WRONG_HINT: Final = {"es": "pt", "pt": "es"}


class Row(msgspec.Struct):
    total: int = 0
    bare: int = 0
    text: int = 0
    abstained: int = 0
    right_hint: int = 0
    wrong_hint: int = 0
    bare_es_pt: int = 0
    text_es_pt: int = 0
    low_confidence: int = 0
    low_confidence_right: int = 0


class HalfReport(msgspec.Struct):
    half: str
    rows: dict[str, dict[str, Row]]  # language -> bucket -> row (texts of one language)
    shared: dict[str, dict[str, Row]]  # the same for texts spelled in several languages
    p50_ms: float
    p99_ms: float
    bare_p50_ms: float
    bare_p99_ms: float


class Report(msgspec.Struct):
    sources: dict[str, str]
    build_seconds: float
    rss_mb: float
    hostile_ms: dict[str, float]
    halves: list[HalfReport]


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else float("nan")


def run(halves: tuple[str, ...]) -> Report:
    sources = corpus.source_versions()
    texts = {half: corpus.items(half) for half in halves}

    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    from routing.classify.language import LanguageIdentifier

    rss_before = _rss_mb()
    started = time.perf_counter()
    product = LanguageIdentifier(CONFIGURED)
    build_seconds = time.perf_counter() - started
    product.identify("warm up")
    rss = _rss_mb() - rss_before
    bare = (
        LanguageDetectorBuilder.from_languages(
            *(Language.from_iso_code_639_1(IsoCode639_1.from_str(c)) for c in CONFIGURED)
        )
        .with_preloaded_language_models()
        .build()
    )

    def lingua(text: str) -> str | None:
        found = bare.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found is not None else None

    hostile = {
        "1 MB without spaces": "a" * 1_000_000,
        "1 MB a@a@a@": "a@" * 500_000,
        "1 MB letters and digits": "a1" * 500_000,
        "1 MB of a buyer's sentence": "Olá, cadê meu pedido? " * 45_455,
    }
    hostile_ms = {}
    for name, text in hostile.items():
        t0 = time.perf_counter()
        product.identify(text)
        hostile_ms[name] = round((time.perf_counter() - t0) * 1e3, 3)

    reports = []
    for half, items in texts.items():
        rows: dict[str, dict[str, Row]] = {
            lang: {b: Row() for b in corpus.BUCKETS} for lang in CONFIGURED
        }
        shared: dict[str, dict[str, Row]] = {
            lang: {b: Row() for b in corpus.BUCKETS} for lang in CONFIGURED
        }
        latencies: list[float] = []
        bare_latencies: list[float] = []
        for item in items:
            row = (shared if item.shared else rows)[item.language][item.bucket]
            ok = item.acceptable
            t0 = time.perf_counter()
            baseline = lingua(item.text)
            t1 = time.perf_counter()
            guess = product.identify(item.text)
            latencies.append(time.perf_counter() - t1)
            bare_latencies.append(t1 - t0)
            right = product.identify(item.text, item.language).language
            wrong = product.identify(item.text, WRONG_HINT.get(item.language, "es")).language
            row.total += 1
            row.bare += baseline in ok
            row.text += guess.language in ok
            row.abstained += guess.language is None
            row.right_hint += right in ok
            row.wrong_hint += wrong in ok
            row.bare_es_pt += baseline not in ok and {baseline, item.language} == {"es", "pt"}
            row.text_es_pt += guess.language not in ok and {guess.language, item.language} == {
                "es",
                "pt",
            }
            row.low_confidence += guess.low_confidence
            row.low_confidence_right += guess.low_confidence and guess.language in ok
        latencies.sort()
        bare_latencies.sort()
        reports.append(
            HalfReport(
                half=half,
                rows=rows,
                shared=shared,
                p50_ms=round(latencies[len(latencies) // 2] * 1e3, 3),
                p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1e3, 3),
                bare_p50_ms=round(bare_latencies[len(bare_latencies) // 2] * 1e3, 3),
                bare_p99_ms=round(bare_latencies[int(len(bare_latencies) * 0.99)] * 1e3, 3),
            )
        )
    return Report(sources, round(build_seconds, 2), round(rss, 1), hostile_ms, reports)


def targets(half: HalfReport) -> list[tuple[str, bool]]:
    """The issue's targets on one half (seven languages configured, text only)."""
    checks: list[tuple[str, bool]] = []
    for lang in ("es", "pt"):
        by = half.rows[lang]
        mid = Row(
            total=by["3-5"].total + by["6-12"].total, text=by["3-5"].text + by["6-12"].text
        )
        acc = _pct(mid.text, mid.total)
        checks.append((f"{lang} >= 97% on 3-12 words ({acc:.1f}%)", acc >= 97.0))
        short = _pct(by["1-2"].text, by["1-2"].total)
        checks.append((f"{lang} >= 90% on 1-2 words ({short:.1f}%)", short >= 90.0))
    sentences = [half.rows[lang]["13+"] for lang in ("es", "pt")]
    confusions = sum(r.text_es_pt for r in sentences)
    total = sum(r.total for r in sentences)
    checks.append(
        (f"es<->pt confusion <= 1% on sentences ({confusions}/{total})", confusions <= 0.01 * total)
    )
    below = [
        f"{lang} {bucket}"
        for table in (half.rows, half.shared)
        for lang, by in table.items()
        for bucket, row in by.items()
        if row.total and row.text < row.bare
    ]
    checks.append((f"never below bare lingua on any row ({', '.join(below) or 'none'})", not below))
    checks.append((f"p99 <= 1 ms per message ({half.p99_ms} ms)", half.p99_ms <= 1.0))
    return checks


def print_report(report: Report) -> None:
    print("Language identification: inboxhub vs bare lingua (high accuracy), both restricted to")
    print(f"{', '.join(CONFIGURED)}. Sources (installed):")
    for name, kind, licence in corpus.SOURCES:
        print(f"   {name} {report.sources[name]} ({kind}): {licence}")
    print(
        f"inboxhub identifier: build {report.build_seconds} s, +{report.rss_mb} MB RSS "
        f"(lingua models + lexical table); 1 MB hostile messages: "
        + ", ".join(f"{k} {v} ms" for k, v in report.hostile_ms.items())
    )
    for half in report.halves:
        print(f"\n== {half.half} half: p50 {half.p50_ms} ms, p99 {half.p99_ms} ms per message "
              f"(bare lingua p50 {half.bare_p50_ms}, p99 {half.bare_p99_ms})")
        print("   lang words     n   lingua  inboxhub abstain  right-hint wrong-hint  "
              "es<->pt (lingua/ours)  low-conf (right)")
        for title, table in (("", half.rows), ("shared ", half.shared)):
            for lang in CONFIGURED:
                for bucket in corpus.BUCKETS:
                    row = table[lang][bucket]
                    if not row.total:
                        continue
                    marker = " <" if row.text < row.bare else ""
                    print(
                        f"   {title + lang:9} {bucket:>5} {row.total:5} "
                        f"{_pct(row.bare, row.total):7.1f}% {_pct(row.text, row.total):7.1f}%"
                        f" {row.abstained:6}  {_pct(row.right_hint, row.total):8.1f}% "
                        f"{_pct(row.wrong_hint, row.total):8.1f}%   {row.bare_es_pt:5} / "
                        f"{row.text_es_pt:<5}        {row.low_confidence:5} "
                        f"({row.low_confidence_right}){marker}"
                    )
        print("   targets:")
        for label, ok in targets(half):
            print(f"      {'PASS' if ok else 'MISS'}  {label}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.langid", description=__doc__)
    parser.add_argument("--half", choices=(*corpus.HALVES, "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    args = parser.parse_args(argv)
    halves = corpus.HALVES if args.half == "both" else (args.half,)
    try:
        report = run(halves)
    except corpus.MissingSource as missing:
        raise SystemExit(f"bench.langid: missing source: {missing}") from None
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
    else:
        print_report(report)


if __name__ == "__main__":
    main()
