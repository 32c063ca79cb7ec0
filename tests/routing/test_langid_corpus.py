"""The evaluation sets of bench.langid, read from installed published sources (issue #13).

Needs the test extra (django, django-oscar) and the Debian word lists of .ci/run: skipped with
the reason on a laptop without them, a failure under CI=true.
"""

from __future__ import annotations

import pytest

from bench import langid_corpus as corpus
from routing.classify.language import LanguageIdentifier
from tests.conftest import need_service


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    try:
        return corpus.source_versions()
    except corpus.MissingSource as missing:
        need_service(f"language-identification corpus: {missing}")
        raise


def test_every_source_is_installed_and_named_with_a_licence(sources: dict[str, str]) -> None:
    assert set(sources) == {name for name, _, _ in corpus.SOURCES}
    assert all(licence for _, _, licence in corpus.SOURCES)


def test_the_split_is_a_fixed_hash_and_keeps_translations_together(
    sources: dict[str, str],
) -> None:
    assert corpus.half_of("Order") == corpus.half_of("Order")
    halves_of: dict[str, set[str]] = {}
    for msgid, _, _, _ in corpus.catalog_strings():
        halves_of.setdefault(msgid, set()).add(corpus.half_of(msgid))
    assert all(len(halves) == 1 for halves in halves_of.values())
    both = {corpus.half_of(msgid) for msgid in halves_of}
    assert both == set(corpus.HALVES)


def test_held_out_es_pt_catalog_texts_beat_bare_lingua(sources: dict[str, str]) -> None:
    """The product on 3-12-word texts it was never tuned on, beside lingua on the same texts."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    items = [
        item
        for item in corpus.catalog_items("held-out")
        if item.language in {"es", "pt"} and item.bucket in {"3-5", "6-12"} and not item.shared
    ]
    assert len(items) > 1000
    product = LanguageIdentifier(corpus.LANGUAGES)
    bare = LanguageDetectorBuilder.from_languages(
        *(Language.from_iso_code_639_1(IsoCode639_1.from_str(c)) for c in corpus.LANGUAGES)
    ).build()
    ours = lingua = 0
    for item in items:
        ours += product.identify(item.text).language == item.language
        found = bare.detect_language_of(item.text)
        lingua += found is not None and found.iso_code_639_1.name.lower() == item.language
    assert ours > lingua
    assert ours >= 0.97 * len(items)
