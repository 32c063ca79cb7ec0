"""HTML mail converted to plain display text by a small linear tokenizer.

Why not a sanitiser or ``html.parser``: the output is text, never HTML, so no allow-list is
needed — every tag is dropped and only character data survives (script, style, head and
template contents are skipped entirely). ``html.parser`` of Python 3.11 is quadratic on crafted
input (16,000 unclosed ``<a `` take 20 s), and a mailbox must not stall on one hostile message.
This tokenizer only moves forward with ``str.find`` and bounded regexes, so it is linear; the
input is also capped (``MAX_HTML_CHARS``). Entities are decoded with ``html.unescape``.
``<blockquote>`` content is prefixed with ``> `` so that quote stripping treats an HTML-only
reply's history like a plain-text one.
"""

from __future__ import annotations

import re
from html import unescape

MAX_HTML_CHARS = 500_000
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "svg", "object"})
_BLOCK = frozenset({
    "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "section", "article", "header", "footer", "dl", "dt", "dd",
})
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


_TAG_NAME = re.compile(r"/?([a-zA-Z][a-zA-Z0-9:-]{0,30})")
_SKIP_END = re.compile(r"</(?:" + "|".join(sorted(_SKIP)) + r")\b[^>]{0,100}>", re.IGNORECASE)


class _Lines:
    """Text accumulated line by line, each line remembering its blockquote depth."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.parts: list[str] = []
        self.quote_depth = 0
        self.line_quote = 0

    def newline(self) -> None:
        text = _SPACES.sub(" ", "".join(self.parts))
        for part in text.split("\n"):
            part = part.strip()
            self.lines.append(("> " * self.line_quote + part) if part else "")
        self.parts = []
        self.line_quote = self.quote_depth

    def tag(self, name: str, closing: bool) -> None:
        if name in _BLOCK:
            self.newline()
        if name == "blockquote":
            self.quote_depth = max(0, self.quote_depth + (-1 if closing else 1))
            self.line_quote = self.quote_depth
        elif name == "li" and not closing:
            self.parts.append("- ")

    def text(self) -> str:
        self.newline()
        out: list[str] = []
        for line in self.lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip()


def html_to_text(html: str) -> str:
    """Display text of an HTML body: no tag survives, entities decoded, blocks on their own
    lines, quoted blocks prefixed with ``> ``; input beyond ``MAX_HTML_CHARS`` is ignored."""
    html = html[:MAX_HTML_CHARS]
    out = _Lines()
    i, n = 0, len(html)
    while i < n:
        lt = html.find("<", i)
        if lt < 0:
            out.parts.append(unescape(html[i:]))
            break
        if lt > i:
            out.parts.append(unescape(html[i:lt]))
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 4)
            i = n if end < 0 else end + 3
            continue
        following = html[lt + 1:lt + 2]
        if not (following.isascii() and (following.isalpha() or following in "/!?")):
            out.parts.append("<")  # "a < b" is text, as a browser shows it
            i = lt + 1
            continue
        gt = html.find(">", lt + 1)
        if gt < 0:
            break  # an unclosed tag runs to the end: nothing after it is text
        i = gt + 1
        match = _TAG_NAME.match(html, lt + 1, gt)
        if match is None:
            continue  # <!doctype>, <?xml?>, </ >
        name = match.group(1).lower()
        closing = html[lt + 1] == "/"
        if name in _SKIP and not closing and html[gt - 1] != "/":
            end_match = _SKIP_END.search(html, i)
            i = n if end_match is None else end_match.end()
            continue
        out.tag(name, closing)
    return out.text()
