"""Quoted history and signatures cut from an email's text for display (the full text is kept
elsewhere).

Agents read the buyer's new words; the twenty previous messages quoted below them are already in
the conversation. Every rule is a per-line test with ``startswith``/``endswith`` or an anchored
regex without nested quantifiers, so the work is linear in the input, and the input is bounded
(``MAX_INPUT_CHARS``): a hostile 10 MB single-line body cannot make this slow.

Recognised (en, es, pt, zh, fr, de):

* reply headers: "On … wrote:", "El … escribió:", "Em … escreveu:", "在…写道：", "Le … a écrit :",
  "Am … schrieb:" — also when the client wrapped the header over two lines;
* Outlook header blocks: a ``From:``/``De:``/``Von:``/``发件人:`` line followed within three
  lines by ``Sent:``/``Enviado:``/``Gesendet:``/``发送时间:``/``Date:``/``To:``…;
* separators "-----Original Message-----", "Mensaje original", "Mensagem original", …;
* ``>`` quoted lines, wherever they are (inline answers between quotes are kept);
* the "-- " signature separator and "Sent from my iPhone"-style device signatures.

When stripping would leave nothing (a message that is only a quote or a forward), the text is
returned whole, minus signatures: showing something beats showing an empty bubble.
"""

from __future__ import annotations

import re

MAX_INPUT_CHARS = 1_000_000
"""Text beyond this is not examined (and not returned): display text, not an archive."""
_MAX_HEADER_LINE = 500
"""A reply header is one short line; a longer line is body text whatever it starts with."""

_REPLY_HEADERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("on ", ("wrote:", "wrote :")),
    ("el ", ("escribió:", "escribió :", "escribio:")),
    ("em ", ("escreveu:", "escreveu :")),
    ("le ", ("a écrit :", "a écrit:", "a ecrit :")),
    ("am ", ("schrieb:", "schrieb :")),
)
_ZH_ENDINGS = ("写道：", "写道:", "寫道：", "寫道:", "写道", "寫道")
_OUTLOOK_FROM = re.compile(r"\*{0,2}(?:from|de|von|da|van|发件人|寄件者)\*{0,2}[ \t]{0,4}[:：]",
                           re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(
    r"\*{0,2}(?:sent|date|to|subject|enviado|enviada|fecha|data|para|asunto|assunto|gesendet|"
    r"an|betreff|envoyé|envoye|à|objet|发送时间|收件人|主题|日期|寄件日期|收件者)\*{0,2}"
    r"[ \t]{0,4}[:：]", re.IGNORECASE)
_SEPARATORS = ("original message", "mensaje original", "mensagem original", "message d'origine",
               "ursprüngliche nachricht", "原始邮件", "原始郵件")
_DEVICE_SIGNATURES = (
    "sent from my ", "sent from outlook", "get outlook for ", "sent from mail for windows",
    "sent from yahoo mail", "enviado desde mi ", "enviado desde outlook", "enviado de mi ",
    "enviado do meu ", "enviado do outlook", "enviado a partir do ", "obtener outlook para ",
    "obter o outlook para ", "发自我的", "从我的iphone发送", "envoyé de mon ", "von meinem ",
)


def strip_quotes(text: str) -> str:
    """The new part of a reply: quoted history and signatures removed; ``text`` (bounded to
    ``MAX_INPUT_CHARS``) whole if nothing would be left."""
    text = text[:MAX_INPUT_CHARS]
    lines = text.splitlines()
    cut = _history_start(lines)
    kept = [line for line in lines[:cut] if not _is_quoted(line)]
    kept = _without_signature(kept)
    result = "\n".join(kept).strip()
    if result:
        return result
    return "\n".join(_without_signature(lines)).strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \t").startswith(">")


def _history_start(lines: list[str]) -> int:
    """Index of the first line of quoted history (a reply header, an Outlook block, an
    "Original Message" separator), or ``len(lines)``."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or len(stripped) > _MAX_HEADER_LINE:
            continue
        if _is_reply_header(stripped) or _is_separator(stripped):
            return index
        if index + 1 < len(lines) and _is_reply_header_start(stripped):
            joined = stripped + " " + lines[index + 1].strip()
            if len(joined) <= _MAX_HEADER_LINE and _is_reply_header(joined):
                return index
        if _OUTLOOK_FROM.match(stripped) and _outlook_block_follows(lines, index):
            return _outlook_rule_above(lines, index)
    return len(lines)


def _is_reply_header_start(line: str) -> bool:
    lowered = line.lower()
    return any(lowered.startswith(start) for start, _ in _REPLY_HEADERS) or line.startswith("在")


def _is_reply_header(line: str) -> bool:
    lowered = line.lower().rstrip()
    for start, endings in _REPLY_HEADERS:
        if lowered.startswith(start) and lowered.endswith(endings):
            return True
    if lowered.startswith("am ") and " schrieb " in lowered and lowered.endswith(":"):
        return True  # German puts the name after the verb: "Am … schrieb Name <addr>:"
    return lowered.endswith(_ZH_ENDINGS) and ("在" in lowered[:3] or "于" in lowered)


def _is_separator(line: str) -> bool:
    if not line.startswith(("-", "_", "=", "—")):
        return False
    core = line.strip("-_=— \t").lower()
    return core in _SEPARATORS


def _outlook_block_follows(lines: list[str], index: int) -> bool:
    for following in lines[index + 1:index + 4]:
        stripped = following.strip()
        if stripped and len(stripped) <= _MAX_HEADER_LINE and _OUTLOOK_NEXT.match(stripped):
            return True
    return False


def _outlook_rule_above(lines: list[str], index: int) -> int:
    """Outlook draws a line of underscores above its header block: cut there too."""
    if index > 0 and set(lines[index - 1].strip()) in ({"_"}, {"-"}):
        return index - 1
    return index


def _without_signature(lines: list[str]) -> list[str]:
    """Lines before the "-- " separator or a device signature ("Sent from my iPhone")."""
    for index, line in enumerate(lines):
        if line.rstrip() == "--":
            return lines[:index]
        lowered = line.strip().lower()
        if len(lowered) <= 80 and lowered.startswith(_DEVICE_SIGNATURES):
            return lines[:index]
    return lines
