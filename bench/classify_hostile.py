"""Skill and market classification on hostile 1 MB messages, against an ordinary message.

    python -m bench.classify_hostile

Each figure is the median of several runs; the ratio is against classifying an ordinary
80-character buyer message in the same run, so it says how much worse the worst input is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from routing.classify.market import classify_market
from routing.classify.skill import SkillClassifier

MB = 1024 * 1024
TEXTS: dict[str, str] = {
    "a@a@... (1 MB)": "a@" * (MB // 2),
    "no spaces (1 MB)": "x" * MB,
    "U+FDFA, 18x on NFKD (1 MB)": "\ufdfa" * (MB // 3),
    "one accent, 1M combining marks": "a" + "\u0301" * MB,
    "repeated keyword head 'a ' (1 MB)": "a " * (MB // 2),
}
EVIDENCE: dict[str, dict[str, str]] = {
    "relay address 'x@marketplace.amazon.a.a.…' (1 MB)":
        {"sender_email": "x@marketplace.amazon." + "a." * (MB // 2) + "!"},
    "site 'a.a.a.…!' (1 MB)": {"marketplace_site": "a." * (MB // 2) + "!"},
    "site 'amazon.aaa…!' (1 MB)": {"marketplace_site": "amazon." + "a" * MB + "!"},
}
ORDINARY = "Hola, compré unos audífonos y todavía no llegan, ¿me pueden dar el número de guía?"


def median_ms(fn: Callable[[], object], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    skills = SkillClassifier.default()
    base_skill = median_ms(lambda: skills.classify(ORDINARY, None), 51)
    base_market = median_ms(lambda: classify_market(sender_email="ana@example.com.mx"), 51)
    print(f"baseline: skill {base_skill:.3f} ms, market {base_market:.4f} ms (ordinary input)")
    print(f"{'skill (all languages)':<52} {'ms':>9} {'ratio':>8}")
    for name, text in TEXTS.items():
        ms = median_ms(lambda text=text: skills.classify(text, None))
        print(f"  {name:<50} {ms:9.2f} {ms / base_skill:7.1f}x")
    print(f"{'market':<52} {'ms':>9} {'ratio':>8}")
    for name, kwargs in EVIDENCE.items():
        ms = median_ms(lambda kwargs=kwargs: classify_market(**kwargs))
        print(f"  {name:<50} {ms:9.3f} {ms / base_market:7.1f}x")


if __name__ == "__main__":
    main()
