"""Ownership of background tasks: whoever spawns a task through a ``TaskOwner`` gets it
cancelled and awaited on shutdown, and a task that dies with an error is logged, not lost.

For one-shot tasks (a SIGHUP reload, a channel's own helpers); long-running loops are
``channels.supervisor.Supervisor`` loops, which survive the errors that would end these."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from channels.supervisor import CRASH_MARK

log = logging.getLogger(__name__)


class TaskOwner:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception(),
                      extra={CRASH_MARK: task.get_name()})

    async def wait(self, timeout: float) -> bool:
        """Let tasks finish on their own (they watch a stop event); True if all did."""
        if not self._tasks:
            return True
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def cancel_all(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
