"""Turning Messenger's watermarks into per-message receipts.

Messenger's ``read`` event (and a ``delivery`` event without ``mids``) names no message: it
says "every message sent to this person before ``watermark`` (ms) is read/delivered". The
hub's delivery index (``channels.services.receipts``) is keyed by provider message id, and an
adapter cannot ask the store "which of our messages to PSID X were sent before T". So each
adapter keeps ``SentLog``: the messages it knows it sent to each person, with when.

Two sources feed it:

* ``deliver``: the ``message_id`` Graph returned, stamped with our clock. Our clock and Meta's
  differ, so such an entry counts as below a watermark only when it is ``CLOCK_MARGIN_MS``
  older than it (a late "read" is better than a false one);
* echoes (``message.is_echo``): Meta's own timestamp of our message, exact.

Limits, and why they are acceptable for now: the log is per process and in memory. A receipt
that reaches another hub process, or arrives after a restart, for a message it did not see
sent or echoed is dropped: the message stays at ``sent``. ``delivery`` events that list
``mids`` need no log and are always applied. The durable fix is a store lookup of outbound
messages by (instance, recipient, sent before T), which the delivery index does not offer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Final

CLOCK_MARGIN_MS: Final = 2000
MAX_RECIPIENTS: Final = 10_000
MAX_PER_RECIPIENT: Final = 200
MAX_AGE_MS: Final = 8 * 86400 * 1000  # a reply can go 7 days after the buyer's message

_DELIVERED = 1
_READ = 2


class _Sent:
    __slots__ = ("at_ms", "exact", "reported")

    def __init__(self, at_ms: int, exact: bool) -> None:
        self.at_ms = at_ms
        self.exact = exact
        self.reported = 0


class SentLog:
    """Our sends per recipient, bounded (least recently used recipients and the oldest sends
    are forgotten first)."""

    def __init__(self, *, max_recipients: int = MAX_RECIPIENTS,
                 max_per_recipient: int = MAX_PER_RECIPIENT) -> None:
        self._by_recipient: OrderedDict[str, OrderedDict[str, _Sent]] = OrderedDict()
        self._max_recipients = max_recipients
        self._max_per_recipient = max_per_recipient

    def record(self, recipient: str, mid: str, at_ms: int, *, exact: bool) -> None:
        """Note a send; an exact time (an echo's) replaces an estimated one."""
        sends = self._by_recipient.get(recipient)
        if sends is None:
            sends = self._by_recipient[recipient] = OrderedDict()
            while len(self._by_recipient) > self._max_recipients:
                self._by_recipient.popitem(last=False)
        else:
            self._by_recipient.move_to_end(recipient)
        known = sends.get(mid)
        if known is not None:
            if exact and not known.exact:
                known.at_ms, known.exact = at_ms, True
            return
        sends[mid] = _Sent(at_ms, exact)
        while len(sends) > self._max_per_recipient:
            sends.popitem(last=False)

    def below(self, recipient: str, watermark_ms: int, *, read: bool) -> list[str]:
        """The sends to ``recipient`` before the watermark not yet reported at this level;
        they are marked reported (read sends are forgotten: nothing follows read)."""
        sends = self._by_recipient.get(recipient)
        if not sends:
            return []
        level = _READ if read else _DELIVERED
        oldest = int(time.time() * 1000) - MAX_AGE_MS
        found: list[str] = []
        for mid, sent in list(sends.items()):
            if sent.at_ms < oldest:
                del sends[mid]
                continue
            limit = watermark_ms if sent.exact else watermark_ms - CLOCK_MARGIN_MS
            if sent.at_ms <= limit and sent.reported < level:
                found.append(mid)
                sent.reported = level
                if read:
                    del sends[mid]
        if not sends:
            del self._by_recipient[recipient]
        return found
