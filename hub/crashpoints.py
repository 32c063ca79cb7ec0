"""Fault injection for the crash tests: ``kill -9`` at a named point of the pipeline.

``INBOXHUB_TEST_CRASH_POINT=<point>`` makes the process SIGKILL itself the first time it passes
that point, e.g. ``router:after-classify`` (between classification and the enqueue step),
``router:after-inbound``, ``router:after-enqueue``, ``router:before-ack``, ``sender:before-ack``.
The tests then prove another process finishes the work exactly once. Unset, a point costs one
string comparison.
"""

from __future__ import annotations

import os
import signal
from typing import Final

ENV: Final = "INBOXHUB_TEST_CRASH_POINT"
_ARMED: Final = os.environ.get(ENV, "")


def crash_point(name: str) -> None:
    if _ARMED and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
