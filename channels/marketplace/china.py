"""What the Chinese cross-border platforms' undocumented APIs share (AliExpress, DHgate):
times written in Beijing wall-clock time or as epoch seconds/milliseconds, and replies that
must be plain text. Both conventions are INFERRED (CHANNELS.md §6.3, §6.5), so they live once
here: a correction to one is a correction to both."""

from __future__ import annotations

import datetime
import re
from typing import Final

# A platform time without a zone is Beijing time (INFERRED).
BEIJING: Final = datetime.timezone(datetime.timedelta(hours=8))
# An HTML tag (or comment / doctype) in a reply: the platforms show text, and a tag would
# either show raw or be stripped by the marketplace (INFERRED), so it is refused before sending.
_HTML: Final = re.compile(r"<\s*(?:[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?\s*/?"
                          r"|/\s*[A-Za-z][A-Za-z0-9-]*\s*|!--.*?--|![A-Za-z][^<>]*)>",
                          re.DOTALL)


def html_in(text: str) -> str | None:
    """The first HTML tag in ``text``, else None."""
    found = _HTML.search(text)
    return found.group(0)[:40] if found else None


def millis(value: str | int | None) -> int | None:
    """A platform time in ms: epoch ms or seconds, or ``YYYY-MM-DD HH:MM:SS`` in Beijing time
    (INFERRED); None when unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        return number if number > 10**11 else number * 1000
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=BEIJING)
    return int(parsed.timestamp() * 1000)
