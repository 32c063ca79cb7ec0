"""The web inbox's interface catalogs (hub/web/static/i18n): every key the page's scripts and
HTML use exists in English and in Simplified Chinese, no catalog has a key nothing uses or an
empty text, both fill the same {placeholders}, and the HTML carries no visible text of its
own (everything visible comes from a catalog). Pure Python: no browser needed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hub.web.routes import STATIC_DIR

CATALOGS = ("en", "zh")
# t('key') / t("key") in scripts; data-i18n, data-i18n-placeholder, -aria-label, -title.
SCRIPT_KEY = re.compile(r"""\bt\(\s*(['"])([^'"]+)\1""")
HTML_KEY = re.compile(r'data-i18n(?:-placeholder|-aria-label|-title)?="([^"]+)"')
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _catalog(name: str) -> dict[str, str]:
    data = json.loads((STATIC_DIR / "i18n" / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def used_keys() -> set[str]:
    keys: set[str] = set()
    for script in STATIC_DIR.glob("*.js"):
        keys.update(m.group(2) for m in SCRIPT_KEY.finditer(script.read_text(encoding="utf-8")))
    for page in STATIC_DIR.glob("*.html"):
        keys.update(HTML_KEY.findall(page.read_text(encoding="utf-8")))
    return keys


def test_the_page_uses_keys_at_all() -> None:
    keys = used_keys()
    assert {"app.title", "signin.submit", "reply.send", "shortcuts.heading"} <= keys
    assert len(keys) > 100


@pytest.mark.parametrize("name", CATALOGS)
def test_every_used_key_is_in_the_catalog_and_nothing_else(name: str) -> None:
    catalog = _catalog(name)
    used = used_keys()
    assert sorted(used - catalog.keys()) == [], f"untranslated in {name}"
    assert sorted(catalog.keys() - used) == [], f"unused keys in {name}"
    assert [k for k, v in catalog.items() if not isinstance(v, str) or not v.strip()] == []


def test_catalogs_fill_the_same_placeholders() -> None:
    en, zh = _catalog("en"), _catalog("zh")
    assert en.keys() == zh.keys()
    differ = {k: (en[k], zh[k]) for k in en
              if set(PLACEHOLDER.findall(en[k])) != set(PLACEHOLDER.findall(zh[k]))}
    assert differ == {}


def test_chinese_is_translated_not_copied() -> None:
    """Keys whose English and Chinese texts are identical are only the ones that are the
    same in both languages (names and pure placeholders)."""
    en, zh = _catalog("en"), _catalog("zh")
    same = {k for k in en if en[k] == zh[k]}
    assert same == {"lang.en", "lang.zh", "app.signed_in_as"}
    cjk = re.compile(r"[\u4e00-\u9fff]")
    untranslated = [k for k in zh if k not in same and not cjk.search(zh[k])]
    assert untranslated == []


class _TextFinder(HTMLParser):
    """Visible text in the page outside an element whose text comes from a catalog."""

    VOID = frozenset({"meta", "link", "input", "br", "img", "hr", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append((tag, any(name == "data-i18n" for name, _ in attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        text = data.strip()
        if not text or any(translated for _, translated in self.stack):
            return
        # Key names in the shortcut list are keys, not words; "/" and "+" join them.
        if any(tag in ("kbd", "script", "style") for tag, _ in self.stack) or text in "/+":
            return
        self.found.append(text)


def test_the_html_has_no_text_of_its_own() -> None:
    finder = _TextFinder()
    finder.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    assert finder.found == []


def test_no_inline_script_style_or_handler_attributes() -> None:
    """The CSP forbids them; the page must not need them."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert re.findall(r"\sstyle=|<style|\son[a-z]+=", html) == []
    for script in STATIC_DIR.glob("*.js"):
        source = script.read_text(encoding="utf-8")
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source, script.name
        assert "outerHTML" not in source and "document.write" not in source, script.name


def test_the_static_files_are_packaged() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"hub.web" = ["static/*", "static/i18n/*"]' in pyproject
