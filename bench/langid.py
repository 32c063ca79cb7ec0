"""Language identification benchmark: accuracy, es<->pt confusion, speed and memory.

    python -m bench.langid            # every candidate, each in a fresh process
    python -m bench.langid --only inboxhub

Evaluation data: lingua's published test set (bench/data/README.md), never sentences written
for this project. Each candidate runs in its own interpreter so the memory figure is the RSS the
classifier adds (imports plus models), not what an earlier candidate left behind.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

DATA: Final = Path(__file__).parent / "data"
LANGS: Final = ("es", "pt", "en", "fr", "de", "it")
# The candidate set the product is configured with in this run: the six measured languages plus
# Chinese, which inboxhub must always be able to serve.
CONFIGURED: Final = (*LANGS, "zh")
KINDS: Final = ("sentences", "word-pairs")
PRODUCT: Final = "inboxhub"


class LangResult(msgspec.Struct):
    total: int
    correct: int
    es_pt_confusions: int = 0
    # Product only: the text decision cleared the threshold / was right when it did.
    confident: int = 0
    confident_correct: int = 0
    # Product only: the full decision when the channel hint is right / names the other of es, pt.
    with_right_hint: int = 0
    with_wrong_hint: int = 0


class Report(msgspec.Struct):
    name: str
    description: str
    build_seconds: float
    rss_mb: float
    texts_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    results: dict[str, dict[str, LangResult]]
    min_confidence: float | None = None
    languages: tuple[str, ...] = CONFIGURED


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load() -> dict[str, dict[str, list[str]]]:
    return {
        kind: {
            lang: [line for line in (DATA / kind / f"{lang}.txt").read_text().splitlines() if line]
            for lang in LANGS
        }
        for kind in KINDS
    }


Detect = Callable[[str], str | None]


def _build(name: str) -> tuple[str, Detect, object]:
    """Import and build one candidate; returns its description, detect function and object."""
    if name.startswith(PRODUCT):
        from routing.classify.language import LanguageIdentifier

        langs = ("es", "pt", "en") if name.endswith("-es-pt-en") else CONFIGURED
        ident = LanguageIdentifier(langs)

        def product(text: str) -> str | None:
            candidates = ident.identify(text).candidates
            return candidates[0][0] if candidates else None

        desc = f"routing.classify LanguageIdentifier (lingua high accuracy) on {','.join(langs)}"
        return desc, product, ident
    if name.startswith("lingua"):
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        languages = [Language.from_iso_code_639_1(IsoCode639_1.from_str(c)) for c in CONFIGURED]
        builder = LanguageDetectorBuilder.from_languages(*languages)
        builder = builder.with_preloaded_language_models()
        if name == "lingua-low":
            builder = builder.with_low_accuracy_mode()
        detector = builder.build()

        def lingua(text: str) -> str | None:
            found = detector.detect_language_of(text)
            return found.iso_code_639_1.name.lower() if found is not None else None

        mode = "low" if name == "lingua-low" else "high"
        return f"lingua {mode} accuracy, restricted to {','.join(CONFIGURED)}", lingua, detector
    if name == "py3langid":
        from py3langid.langid import MODEL_FILE
        from py3langid.langid import LanguageIdentifier as Py3LangId

        identifier = Py3LangId.from_model_file(MODEL_FILE, norm_probs=True)
        identifier.set_languages(list(CONFIGURED))

        def py3langid(text: str) -> str | None:
            return str(identifier.classify(text)[0])

        return f"py3langid, restricted to {','.join(CONFIGURED)}", py3langid, identifier
    raise SystemExit(f"unknown candidate {name!r}")


def run_one(name: str) -> Report:
    data = _load()
    rss_before = _rss_mb()
    started = time.perf_counter()
    description, detect, built = _build(name)
    build_seconds = time.perf_counter() - started
    detect("warm up")
    rss = _rss_mb() - rss_before

    latencies: list[float] = []
    results: dict[str, dict[str, LangResult]] = {}
    for kind, by_lang in data.items():
        results[kind] = {}
        for lang, texts in by_lang.items():
            result = LangResult(total=len(texts), correct=0)
            for text in texts:
                t0 = time.perf_counter()
                guess = detect(text)
                latencies.append(time.perf_counter() - t0)
                result.correct += guess == lang
                result.es_pt_confusions += {lang, guess} == {"es", "pt"}
            results[kind][lang] = result

    min_confidence = None
    if name.startswith(PRODUCT):
        min_confidence = _fusion(built, data, results)
    huge = "Olá, cadê meu pedido? " * 50_000
    t0 = time.perf_counter()
    detect(huge)
    max_ms = max(max(latencies), time.perf_counter() - t0) * 1e3

    latencies.sort()
    return Report(
        name=name,
        description=description,
        build_seconds=round(build_seconds, 2),
        rss_mb=round(rss, 1),
        texts_per_second=round(len(latencies) / sum(latencies)),
        p50_ms=round(latencies[len(latencies) // 2] * 1e3, 3),
        p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1e3, 3),
        max_ms=round(max_ms, 3),
        results=results,
        min_confidence=min_confidence,
        languages=("es", "pt", "en") if name.endswith("-es-pt-en") else CONFIGURED,
    )


def _fusion(
    built: object,
    data: dict[str, dict[str, list[str]]],
    results: dict[str, dict[str, LangResult]],
) -> float:
    """Measure the product's full decision: threshold, and fusion with right and wrong hints."""
    from routing.classify.language import LanguageIdentifier

    assert isinstance(built, LanguageIdentifier)
    for kind, by_lang in data.items():
        for lang, texts in by_lang.items():
            result = results[kind][lang]
            wrong = {"es": "pt", "pt": "es"}.get(lang, "es")
            for text in texts:
                bare = built.identify(text)
                if bare.source == "text":
                    result.confident += 1
                    result.confident_correct += bare.language == lang
                result.with_right_hint += built.identify(text, lang).language == lang
                result.with_wrong_hint += built.identify(text, wrong).language == lang
    return built.min_confidence


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    - "


def print_report(reports: list[Report]) -> None:
    print("Language identification on lingua's published test data (bench/data/README.md)")
    counts = {k: sum(r.total for r in reports[0].results[k].values()) for k in KINDS}
    print(f"texts: {counts['sentences']} sentences, {counts['word-pairs']} two-word phrases\n")
    header = "  ".join(f"{lang:>6}" for lang in LANGS)
    for report in reports:
        for row in report.results.values():
            for lang in LANGS:
                if lang not in report.languages:
                    row[lang] = LangResult(total=0, correct=0)
        chosen = "   <- used by inboxhub" if report.name == PRODUCT else ""
        print(f"== {report.name}: {report.description}{chosen}")
        print(f"   {'':24}{header}   es<->pt")
        for kind in KINDS:
            row = report.results[kind]
            cells = "  ".join(_pct(row[lang].correct, row[lang].total) for lang in LANGS)
            confusions = row["es"].es_pt_confusions + row["pt"].es_pt_confusions
            print(f"   {'accuracy ' + kind:24}{cells}   {confusions:>4}")
        print(
            f"   speed: {report.texts_per_second:.0f} texts/s, p50 {report.p50_ms} ms, "
            f"p99 {report.p99_ms} ms, max {report.max_ms} ms (incl. a 1 MB message); "
            f"memory +{report.rss_mb} MB RSS; build {report.build_seconds} s"
        )
        if report.min_confidence is not None:
            print(f"   product decision (min_confidence {report.min_confidence}):")
            for kind in KINDS:
                row = report.results[kind]
                cov = "  ".join(_pct(row[lang].confident, row[lang].total) for lang in LANGS)
                prec = "  ".join(
                    _pct(row[lang].confident_correct, row[lang].confident) for lang in LANGS
                )
                right = "  ".join(
                    _pct(row[lang].with_right_hint, row[lang].total) for lang in LANGS
                )
                wrong = "  ".join(
                    _pct(row[lang].with_wrong_hint, row[lang].total) for lang in LANGS
                )
                print(f"   {kind + ' text decides':24}{cov}")
                print(f"   {'  ...and is right':24}{prec}")
                print(f"   {'  with the right hint':24}{right}")
                print(f"   {'  with a wrong hint':24}{wrong}")
        print()
    product = next((r for r in reports if r.name == PRODUCT), None)
    if product is not None:
        _print_targets(product)


def _print_targets(report: Report) -> None:
    sent, pairs = report.results["sentences"], report.results["word-pairs"]
    sent_confusion = sent["es"].es_pt_confusions + sent["pt"].es_pt_confusions
    sent_total = sent["es"].total + sent["pt"].total
    checks = [
        (
            "es, pt >= 97% on sentences (text only)",
            min(sent[lang].correct / sent[lang].total for lang in ("es", "pt")) >= 0.97,
        ),
        (
            "es, pt >= 90% on two-word phrases (text only)",
            min(pairs[lang].correct / pairs[lang].total for lang in ("es", "pt")) >= 0.90,
        ),
        (
            "es, pt >= 90% on two-word phrases (with the channel hint)",
            min(pairs[lang].with_right_hint / pairs[lang].total for lang in ("es", "pt")) >= 0.90,
        ),
        (
            f"es<->pt confusion <= 1% on sentences ({sent_confusion}/{sent_total})",
            sent_confusion <= 0.01 * sent_total,
        ),
        (f"p99 <= 1 ms per message ({report.p99_ms} ms)", report.p99_ms <= 1.0),
        (f"memory <= 300 MB ({report.rss_mb} MB)", report.rss_mb <= 300),
    ]
    print("Targets (ROUTING.md) for the product configuration:")
    for label, ok in checks:
        print(f"   {'PASS' if ok else 'MISS'}  {label}")


CANDIDATES: Final = (PRODUCT, f"{PRODUCT}-es-pt-en", "lingua-high", "lingua-low", "py3langid")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.langid", description=__doc__)
    parser.add_argument("--only", choices=CANDIDATES, help="run one candidate in this process")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    args = parser.parse_args(argv)
    if args.only:
        report = run_one(args.only)
        if args.json:
            sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
        else:
            print_report([report])
        return
    reports = []
    for name in CANDIDATES:
        out = subprocess.run(
            [sys.executable, "-m", "bench.langid", "--only", name, "--json"],
            check=True,
            capture_output=True,
            cwd=Path(__file__).parent.parent,
        ).stdout
        reports.append(msgspec.json.decode(out, type=Report))
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(reports) + b"\n")
    else:
        print_report(reports)


if __name__ == "__main__":
    main()
