"""Personal data out of error text before it is logged or kept: an error a provider or a library
raises may quote what it was given (an attachment's file name, a phone number, an address, a
buyer's name in quotes), and such text ends up in log lines, channel health and the fetch
queue's ``last_error`` for weeks, where erasing a buyer does not reach.

What is masked: e-mail addresses, runs of 7 or more digits with the separators phone numbers
use (also long ids and card-like numbers; an HTTP status or a port has fewer), and anything in
quotes. What is left is the error's class and wording, which is what an operator acts on.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")
# A '+' or digit, then digits and separators, ending in a digit: at least 7 digits in all.
_NUMBER = re.compile(r"\+?\d(?:[\d\s().-]{0,30}\d)?")
_QUOTED = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"|«[^»\n]{0,200}»")


def _number(match: re.Match[str]) -> str:
    text = match.group(0)
    return "[number]" if sum(c.isdigit() for c in text) >= 7 else text


def redact(text: str) -> str:
    """``text`` with e-mail addresses, long numbers and quoted values masked."""
    text = _EMAIL.sub("[email]", text)
    text = _QUOTED.sub("'…'", text)
    return _NUMBER.sub(_number, text)
