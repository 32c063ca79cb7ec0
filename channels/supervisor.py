"""Background loops that outlive every Redis hiccup, with their health in one registry.

Every long-running task of the hub (stream workers, retry release, routing timers, the reload
listener, pollers) is a ``Supervisor.loop``: the loop body is one *iteration* that the supervisor
calls again and again. Whatever an iteration raises, the loop goes on:

* ``redis.exceptions.RedisError`` and ``OSError`` (Redis paused, restarted, failing over, out of
  memory, read-only replica; a network error) mean "wait and try again": capped exponential
  backoff with full jitter, logged once per outage and once on recovery, not per attempt.
  redis-py's ``ConnectionError``/``TimeoutError`` are *not* the built-ins of the same name, which
  is why no loop catches those itself.
* ``NOGROUP`` (a stream or its consumer group was deleted under us) runs the loop's ``prepare``
  hook again, which recreates the groups, and carries on at once.
* ``channels.errors.ChannelError`` from a poller (the provider is down, throttles us, or refuses
  our credentials) backs off the same way: a ``RetryableError`` waits at least its
  ``retry_after``; a ``PermanentError`` such as ``AuthError`` (only an operator can fix it) waits
  the backoff cap each time, so a bad token never turns into a tight retry loop.
* Anything else is a bug: logged with its traceback and marked as a crash (the test suite fails a
  test during which that happens), then retried with the same backoff so that one bad iteration
  never silences a loop for good.

``TaskHealth`` is what ``/readyz`` and ``/metrics`` read: a loop that is backing off or has
crashed makes the hub not ready, by name.

It lives in ``channels/`` (the bottom layer) because polling adapters run their loops with it
too: one supervised loop for the whole hub, not one per adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, Protocol

import msgspec
from redis.exceptions import RedisError, ResponseError

from channels.errors import ChannelError, PermanentError, RetryableError
from channels.redact import redact

log = logging.getLogger(__name__)

# Log records of crashed background tasks carry this attribute (the task's name); the test
# suite's root conftest fails any test during which one was emitted.
CRASH_MARK: Final = "inboxhub_task_crash"

LoopStatus = Literal["starting", "running", "backing_off", "crashed", "stopped"]
_UNHEALTHY: Final = frozenset({"backing_off", "crashed"})

Iteration = Callable[[], Awaitable[bool]]
"""One pass of a loop; returns True when it did work (run again at once), False when idle."""

Hook = Callable[[], Awaitable[None]]


class LoopMetrics(Protocol):
    """Where loop health is exported (the hub's Prometheus metrics)."""

    def loop_up(self, name: str, up: bool) -> None: ...

    def loop_restarted(self, name: str, reason: str) -> None: ...


class LoopHealth(msgspec.Struct):
    """What one supervised loop is doing now; mutable, owned by its supervisor."""

    name: str
    status: LoopStatus = "starting"
    restarts: int = 0
    last_error: str | None = None
    since: float = msgspec.field(default_factory=time.time)


class TaskHealth:
    """Every supervised loop of the process, by name, for readiness and metrics."""

    def __init__(self, metrics: LoopMetrics | None = None) -> None:
        self._loops: dict[str, LoopHealth] = {}
        self._metrics = metrics

    def register(self, name: str) -> LoopHealth:
        if name in self._loops and self._loops[name].status != "stopped":
            raise ValueError(f"a background loop named {name!r} is already running")
        state = LoopHealth(name)
        self._loops[name] = state
        if self._metrics is not None:
            self._metrics.loop_up(name, True)
        return state

    def set_status(self, state: LoopHealth, status: LoopStatus, error: str | None = None) -> None:
        if state.status != status:
            state.status = status
            state.since = time.time()
        if error is not None:
            state.last_error = error
        if self._metrics is not None:
            self._metrics.loop_up(state.name, status not in _UNHEALTHY)

    def restarted(self, state: LoopHealth, reason: str) -> None:
        state.restarts += 1
        if self._metrics is not None:
            self._metrics.loop_restarted(state.name, reason)

    def unhealthy(self) -> dict[str, LoopHealth]:
        """Loops that are backing off or crashed, by name (empty when all is well)."""
        return {name: s for name, s in self._loops.items() if s.status in _UNHEALTHY}

    def snapshot(self) -> list[LoopHealth]:
        return [msgspec.structs.replace(s) for s in self._loops.values()]


class Backoff(msgspec.Struct, frozen=True):
    """Capped exponential backoff with full jitter: retries of many processes spread out."""

    base: float = 0.1
    cap: float = 10.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(failures - 1, 0))
        return random.uniform(ceiling / 2, ceiling)

    def after(self, exc: BaseException, failures: int) -> float:
        """The wait after ``exc``: a provider's Retry-After is a floor; a permanent error
        waits the cap."""
        if isinstance(exc, PermanentError):
            return random.uniform(self.cap / 2, self.cap)
        delay = self.delay(failures)
        if isinstance(exc, RetryableError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        return delay


def describe(exc: BaseException) -> str:
    """An error for a log line or a health record: the class and the message, no payloads, and
    no personal data the message may quote (``channels.redact``)."""
    text = redact(str(exc).splitlines()[0][:300])[:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


class Supervisor:
    """Owns a set of supervised loops: starts them, reports on them, stops them.

    ``stop`` is the shared "finish what you hold and leave" signal; ``cancel_all`` is the hard
    stop after the drain deadline.
    """

    def __init__(self, owner: str, health: TaskHealth, stop: asyncio.Event | None = None,
                 *, backoff: Backoff | None = None) -> None:
        self.owner = owner
        self.health = health
        self.stop = stop or asyncio.Event()
        self.backoff = backoff or Backoff()
        self._tasks: set[asyncio.Task[None]] = set()
        self._children: list[Supervisor] = []

    def child(self, owner: str) -> Supervisor:
        """A supervisor for one component's loops (a polling channel), with its own stop
        signal so the component stops alone; same health registry and backoff, and cancelled
        by this one's ``cancel_all`` should the component not have stopped it."""
        child = Supervisor(owner, self.health, backoff=self.backoff)
        self._children.append(child)
        return child

    def loop(
        self,
        name: str,
        iteration: Iteration,
        *,
        idle_seconds: float,
        prepare: Hook | None = None,
        on_stop: Hook | None = None,
    ) -> asyncio.Task[None]:
        """Run ``iteration`` until stop.

        ``prepare`` (create the consumer groups the loop reads, subscribe, ...) runs before the
        first iteration and again after a ``NOGROUP``; ``on_stop`` runs once at the end, to
        finish in-flight work within the drain deadline.
        """
        state = self.health.register(name)
        task = asyncio.create_task(
            self._run(state, iteration, idle_seconds, prepare, on_stop),
            name=f"{self.owner}:{name}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, state: LoopHealth, iteration: Iteration, idle_seconds: float,
                   prepare: Hook | None, on_stop: Hook | None) -> None:
        failures = 0
        outage_began = 0.0
        prepared = prepare is None
        try:
            while not self.stop.is_set():
                try:
                    if not prepared:
                        assert prepare is not None
                        await prepare()
                        prepared = True
                    if failures == 0:
                        self.health.set_status(state, "running")
                    did_work = await iteration()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if failures == 0:
                        outage_began = time.monotonic()
                    failures += 1
                    if _is_nogroup(exc) and prepare is not None:
                        self.health.restarted(state, "nogroup")
                        log.warning("%s: %s; recreating its consumer groups", state.name,
                                    describe(exc))
                        prepared = False
                        if failures > 1:  # recreating did not help at once: do not spin
                            await self._pause(self.backoff.delay(failures))
                        continue
                    if isinstance(exc, RedisError | OSError | ChannelError):
                        self.health.restarted(
                            state, "provider" if isinstance(exc, ChannelError) else "redis")
                        if state.status != "backing_off":
                            log.warning("%s: %s; retrying with backoff until it recovers",
                                        state.name, describe(exc))
                        self.health.set_status(state, "backing_off", describe(exc))
                    else:
                        self.health.restarted(state, "crash")
                        if state.status != "crashed":
                            log.error("background task %s crashed; restarting it", state.name,
                                      exc_info=exc, extra={CRASH_MARK: state.name})
                        self.health.set_status(state, "crashed", describe(exc))
                    await self._pause(self.backoff.after(exc, failures))
                    continue
                if failures:
                    log.info("%s recovered after %d failed attempts (%.1f s)", state.name,
                             failures, time.monotonic() - outage_began)
                    failures = 0
                    self.health.set_status(state, "running")
                if not did_work:
                    await self._pause(idle_seconds)
        finally:
            if on_stop is not None and not _cancelling():
                await self._quietly(on_stop)
            self.health.set_status(state, "stopped")

    async def _quietly(self, hook: Hook) -> None:
        """Run a recovery or drain hook; its failure is the next iteration's problem."""
        try:
            await hook()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("recovery step failed: %s", describe(exc))

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def wait(self, timeout: float) -> bool:
        """Let loops finish on their own after ``stop`` (they drain); True if all did."""
        if not self._tasks:
            return True
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def cancel_all(self) -> None:
        self.stop.set()
        for child in self._children:
            await child.cancel_all()
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
