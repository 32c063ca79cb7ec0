"""The SLA-due view of ``GET /api/v1/conversations``: ``sla`` and ``sla_due_within``.

Either parameter orders the list by the soonest running SLA deadline (storage/sla.py), soonest
first, instead of by activity; every other filter and the agent's visibility (hub/scope.py)
apply as usual. A running clock is one routing started and nothing stopped yet: first response
and next response until an agent answers, resolution until the conversation is resolved (or
erased). ``sla=breached`` keeps those already past their deadline; ``sla_due_within=<minutes>``
those due within that many minutes, breached ones included; ``sla=running`` all of them.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import msgspec

from hub import query as q
from hub.errors import ApiError

MAX_DUE_WITHIN_MINUTES: Final = 43_200  # 30 days: longer than any SLA clock worth listing
_MINUTES = re.compile(r"[0-9]{1,9}")


def _minutes(raw: str) -> int:
    if not _MINUTES.fullmatch(raw) or int(raw) > MAX_DUE_WITHIN_MINUTES:
        raise ValueError(f"expected whole minutes in 0..{MAX_DUE_WITHIN_MINUTES}, "
                         f"got {raw[:40]!r}")
    return int(raw)


SLA_PARAMS: Final = (
    q.choice("sla", "running: only conversations with a running SLA clock (first response, "
                    "next response or resolution); breached: only those whose soonest running "
                    "deadline has passed. Orders the list by that deadline, soonest first "
                    "(cursor: the next_cursor of this ordering; before is refused)",
             ("running", "breached")),
    q.QueryParam("sla_due_within",
                 "only conversations whose soonest running SLA deadline is at most this many "
                 f"minutes away, breached ones included (0..{MAX_DUE_WITHIN_MINUTES}); orders "
                 "by deadline, soonest first, like sla",
                 {"type": "integer", "minimum": 0, "maximum": MAX_DUE_WITHIN_MINUTES},
                 _minutes),
)


class SlaOrder(msgspec.Struct, frozen=True):
    """What the SLA parameters ask for: ``breached`` and/or ``within_minutes``."""

    breached: bool
    within_minutes: int | None

    def due_by(self, now: float) -> float | None:
        """The latest deadline listed (None: any running clock)."""
        if self.breached:
            return now
        if self.within_minutes is not None:
            return now + self.within_minutes * 60
        return None


def sla_order(query: dict[str, Any]) -> SlaOrder | None:
    """The SLA ordering the query asks for, None for the activity-ordered list."""
    if "sla" not in query and "sla_due_within" not in query:
        return None
    if "before" in query:
        raise ApiError(400, "before pages the activity order; with sla or sla_due_within "
                            "page with cursor", "invalid_parameter")
    return SlaOrder(query.get("sla") == "breached", query.get("sla_due_within"))


def due_by(order: SlaOrder) -> float | None:
    return order.due_by(time.time())
