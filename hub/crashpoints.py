"""Fault injection for the crash tests: ``kill -9`` at a named point of the pipeline.

``INBOXHUB_TEST_CRASH_POINT=<point>`` makes the process SIGKILL itself the first time it passes
that point, e.g. ``router:after-classify`` (between classification and the enqueue step),
``router:after-inbound``, ``router:after-enqueue``, ``router:before-ack``, ``sender:before-ack``,
``poller:before-checkpoint`` (a polling channel's batch is stored, its cursor not yet saved).
The tests then prove another process finishes the work exactly once. Unset, a point costs one
string comparison.
"""

from __future__ import annotations

import os
import signal
from typing import Final

from channels.services.cursors import CursorStore

ENV: Final = "INBOXHUB_TEST_CRASH_POINT"
_ARMED: Final = os.environ.get(ENV, "")
BEFORE_CHECKPOINT: Final = "poller:before-checkpoint"


def crash_point(name: str) -> None:
    if _ARMED and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


class _CrashBeforeSave:
    """A cursor store that passes ``poller:before-checkpoint`` before every save."""

    def __init__(self, inner: CursorStore) -> None:
        self.inner = inner

    async def load(self, instance: str, name: str) -> bytes | None:
        return await self.inner.load(instance, name)

    async def save(self, instance: str, name: str, value: bytes, *, fence: int) -> bool:
        crash_point(BEFORE_CHECKPOINT)
        return await self.inner.save(instance, name, value, fence=fence)


def crash_before_checkpoint(cursors: CursorStore) -> CursorStore:
    """The pollers' cursor store, wrapped only when ``poller:before-checkpoint`` is armed (the
    plumbing saves a cursor only after storing the batch it covers, so the kill lands between
    the two). Unarmed, ``cursors`` itself: nothing on the path."""
    return _CrashBeforeSave(cursors) if _ARMED == BEFORE_CHECKPOINT else cursors
