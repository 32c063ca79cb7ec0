"""Texts for language identification, read from published sources where packages install them.

Nothing here is written for this project and nothing is copied into the repository: every text
is read at run time from an installed package (the test extra of pyproject.toml and the apt
line of .ci/run install them). ``SOURCES`` names each one with its licence.

Two halves, fixed by a hash, never by how an identifier fares on them:

- a catalog string belongs to the half of ``sha256(msgid)`` (the English source string), so the
  es, pt, fr ... translations of one string always fall in the same half, in every package;
- a word-list entry belongs to the half of ``sha256(word)``, so a word listed for both Spanish
  and Portuguese falls in one half for both.

The first byte of the digest even: ``tuning``; odd: ``held-out``. Derived tables
(``bench/derive_es_pt.py``) and every weight in routing/classify/ are chosen on ``tuning`` only.

A text spelled the same in several configured languages ("pedido", "total", "no") has all of
them in ``acceptable``: it is scored apart, and any of them counts as right.
"""

from __future__ import annotations

import functools
import gettext
import hashlib
import importlib.metadata
import importlib.util
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec

LANGUAGES: Final = ("es", "pt", "en", "fr", "de", "it", "zh")
HALVES: Final = ("tuning", "held-out")
BUCKETS: Final = ("1-2", "3-5", "6-12", "13+")

# Catalog locale directory -> configured language. English is each catalog's msgid.
_LOCALES: Final[dict[str, str]] = {
    **{loc: "es" for loc in ("es", "es_AR", "es_CL", "es_CO", "es_MX", "es_VE")},
    **{loc: "pt" for loc in ("pt", "pt_BR", "pt_PT")},
    **{loc: "fr" for loc in ("fr", "fr_FR")},
    "de": "de",
    "it": "it",
    **{loc: "zh" for loc in ("zh_Hans", "zh_Hant", "zh_CN", "zh_TW")},
}

# Debian word lists: file under /usr/share/dict -> (language, Debian package).
WORDLISTS: Final[dict[str, tuple[str, str]]] = {
    "spanish": ("es", "wspanish"),
    "brazilian": ("pt", "wbrazilian"),
    "portuguese": ("pt", "wportuguese"),
    "american-english": ("en", "wamerican"),
    "french": ("fr", "wfrench"),
    "ngerman": ("de", "wngerman"),
    "italian": ("it", "witalian"),
}
DICT_DIR: Final = Path("/usr/share/dict")

# (name, kind, licence). Versions are read from the installed package at run time.
SOURCES: Final[tuple[tuple[str, str, str], ...]] = (
    ("django", "pip", "BSD-3-Clause (Django's catalogs, django/**/locale/*/LC_MESSAGES/*.mo)"),
    ("django-oscar", "pip", "BSD-3-Clause (oscar/locale/*/LC_MESSAGES/django.mo)"),
    ("wspanish", "deb", "public domain (Debian copyright file)"),
    ("wbrazilian", "deb", "GPL-2"),
    ("wportuguese", "deb", "GPL-2+ or LGPL-2.1+ or MPL-1.1"),
    ("wamerican", "deb", "public domain (SCOWL/MWords)"),
    ("wfrench", "deb", "GPL-2+"),
    ("wngerman", "deb", "GPL-2+"),
    ("witalian", "deb", "GPL-3+"),
)
_PIP_MODULE: Final = {"django": "django", "django-oscar": "oscar"}

# Template placeholders and markup of UI strings: not language.
_MARKUP = re.compile(r"%\([^)\s]{1,40}\)[-#0 +]?\d*(?:\.\d+)?[sdifrx]|%[sdifr]|\{[^{}\s]{0,40}\}"
                     r"|<[^<>]{0,200}>|&[a-z]{2,8};|\\n")
_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class Item(msgspec.Struct, frozen=True):
    """One evaluation text and the languages a bilingual reader would accept for it."""

    text: str
    language: str
    acceptable: frozenset[str]
    source: str
    half: str
    bucket: str
    # What the half was drawn from: the catalog msgid, or the word(s) of a word-list item.
    key: str = ""

    @property
    def shared(self) -> bool:
        return len(self.acceptable) > 1


class MissingSource(RuntimeError):
    """A source package is not installed (see the test extra and .ci/run)."""


def half_of(key: str) -> str:
    """The documented split: even first byte of sha256(key) is tuning, odd is held-out."""
    return HALVES[hashlib.sha256(key.encode("utf-8")).digest()[0] & 1]


def word_count(text: str) -> int:
    """Words of a text; Chinese, written without spaces, counts two characters as a word."""
    words = sum(1 for token in text.split() if any(c.isalpha() for c in token))
    cjk = len(_CJK.findall(text))
    return max(words, (cjk + 1) // 2) if cjk else words


def bucket_of(text: str) -> str:
    n = word_count(text)
    return "1-2" if n <= 2 else "3-5" if n <= 5 else "6-12" if n <= 12 else "13+"


def source_versions() -> dict[str, str]:
    """Installed version of every source, or raises MissingSource naming what to install."""
    versions: dict[str, str] = {}
    for name, kind, _ in SOURCES:
        if kind == "pip":
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                raise MissingSource(f"pip package {name} (pip install -e '.[test]')") from None
        else:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0 or not out.stdout:
                raise MissingSource(f"Debian package {name} (apt-get install {name})")
            versions[name] = out.stdout
    return versions


def clean(text: str) -> str:
    return _SPACE.sub(" ", _MARKUP.sub(" ", text)).strip()


def _catalog_files(package: str) -> Iterator[tuple[str, Path]]:
    spec = importlib.util.find_spec(_PIP_MODULE[package])
    if spec is None or spec.origin is None:
        raise MissingSource(f"pip package {package}")
    root = Path(spec.origin).parent
    for path in sorted(root.glob("**/locale/*/LC_MESSAGES/*.mo")):
        locale = path.parent.parent.name
        if locale in _LOCALES:
            yield _LOCALES[locale], path


@functools.cache
def catalog_strings() -> tuple[tuple[str, str, str, str], ...]:
    """(msgid, language, text, source) for every translated string of every catalog."""
    rows: set[tuple[str, str, str, str]] = set()
    for package in ("django", "django-oscar"):
        for language, path in _catalog_files(package):
            with path.open("rb") as handle:
                catalog: dict[object, str] = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
            for key, value in catalog.items():
                msgid = key[0] if isinstance(key, tuple) else key
                if not isinstance(msgid, str) or not msgid or "\x04" in msgid:
                    continue  # the header, or a string with a context
                if clean(value).casefold() == clean(msgid).casefold():
                    value = ""  # left untranslated: English, not the catalog's language
                for lang, raw in (("en", msgid), (language, value)):
                    text = clean(raw)
                    if sum(c.isalpha() for c in text) >= 2:
                        rows.add((clean(msgid), lang, text, package))
    return tuple(sorted(rows))


@functools.cache
def wordlist(name: str) -> frozenset[str]:
    """Entries of one Debian word list, lowercased; names and abbreviations left out."""
    path = DICT_DIR / name
    if not path.exists():
        raise MissingSource(f"Debian package {WORDLISTS[name][1]} ({path})")
    language = WORDLISTS[name][0]
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if len(word) < 2 or not word.isalpha():
            continue
        if word[0].isupper() and language != "de":
            continue  # proper names; German capitalises every noun
        words.add(word.lower())
    return frozenset(words)


@functools.cache
def lexicon(language: str) -> frozenset[str]:
    """Every word a language's sources spell (word lists plus catalog tokens)."""
    words: set[str] = set()
    for name, (lang, _) in WORDLISTS.items():
        if lang == language:
            words |= wordlist(name)
    for _, lang, text, _ in catalog_strings():
        if lang == language:
            words.update(token.lower() for token in tokens(text))
    return frozenset(words)


_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


@functools.cache
def _catalog_texts_by_language() -> dict[str, frozenset[str]]:
    by: dict[str, set[str]] = {lang: set() for lang in LANGUAGES}
    for _, lang, text, _ in catalog_strings():
        by[lang].add(text.casefold())
    return {lang: frozenset(texts) for lang, texts in by.items()}


def acceptable(text: str, language: str) -> frozenset[str]:
    """Languages in which this exact text (or, up to two words, each of its words) is spelled."""
    folded = text.casefold()
    found = {language}
    short = word_count(text) <= 2
    words = [w.lower() for w in tokens(text)]
    for lang, texts in _catalog_texts_by_language().items():
        spelled = short and words and lang != "zh" and all(w in lexicon(lang) for w in words)
        if folded in texts or spelled:
            found.add(lang)
    return frozenset(found)


def _hash_order(words: frozenset[str], salt: str) -> list[str]:
    return sorted(words, key=lambda w: hashlib.sha256(f"{salt}\0{w}".encode()).digest())


def wordlist_items(half: str, per_language: int = 1200) -> list[Item]:
    """Single words and word pairs from the Debian word lists, in a hash order (no choice)."""
    items: list[Item] = []
    by_language: dict[str, set[str]] = {}
    for name, (lang, _) in WORDLISTS.items():
        by_language.setdefault(lang, set()).update(wordlist(name))
    for lang, words in by_language.items():
        mine = frozenset(w for w in words if half_of(w) == half)
        ordered = _hash_order(mine, "order")
        singles, rest = ordered[:per_language], ordered[per_language : 2 * per_language]
        for word in singles:
            items.append(Item(word, lang, acceptable(word, lang), "wordlist", half, "1-2", word))
        for first, second in zip(rest[0::2], rest[1::2], strict=False):
            text = f"{first} {second}"
            items.append(Item(text, lang, acceptable(text, lang), "wordlist", half, "1-2", text))
    return items


def catalog_items(half: str) -> list[Item]:
    """Every translated UI string of the Django and django-oscar catalogs in this half."""
    seen: set[tuple[str, str]] = set()
    items: list[Item] = []
    for msgid, lang, text, package in catalog_strings():
        if half_of(msgid) != half or (lang, text) in seen:
            continue
        seen.add((lang, text))
        items.append(
            Item(text, lang, acceptable(text, lang), package, half, bucket_of(text), msgid)
        )
    return items


def items(half: str) -> list[Item]:
    if half not in HALVES:
        raise ValueError(f"half: expected one of {HALVES}, got {half!r}")
    return catalog_items(half) + wordlist_items(half)
