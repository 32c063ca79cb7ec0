"""How an agent's workflow priority (``POST /api/v1/conversations/{id}/priority``) counts in
routing.

Routing orders a pool's waiting conversations by a combined priority, then by age: the
queue's or rule's priority, plus the boosts routing adds itself (``requeue_priority_boost`` per
requeue, ``sla_breach_priority_boost`` per breached clock), plus the offset of the workflow
level below. The offsets are chosen against the default boosts: ``high`` goes ahead of normal
and requeued work but behind a breached conversation (+5); ``urgent`` goes ahead of a breach
and a few requeues, so an agent's explicit "urgent" is served first unless the rules already
made something else far more urgent; ``low`` lets everything else by.
"""

from __future__ import annotations

from typing import Final

# One entry per level of storage.records.Priority (tests/test_priority_routing.py checks it).
WORKFLOW_PRIORITY_OFFSET: Final[dict[str, int]] = {
    "low": -2,
    "normal": 0,
    "high": 2,
    "urgent": 10,
}


def workflow_offset(level: str) -> int:
    """The routing offset of a workflow level; an unknown level (a record written by hand)
    counts as ``normal`` rather than failing the routing of a buyer's message."""
    return WORKFLOW_PRIORITY_OFFSET.get(level, 0)

