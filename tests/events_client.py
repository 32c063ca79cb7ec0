"""A Server-Sent Events client for tests and the bench: reads ``GET /api/v1/events`` in a task
its context manager owns (cancelled and awaited on exit) and keeps every event it parsed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp


class SseEvent:
    __slots__ = ("data", "id", "kind", "received")

    def __init__(self, event_id: str, kind: str, data: Any, received: float) -> None:
        self.id = event_id
        self.kind = kind
        self.data = data
        self.received = received

    def __repr__(self) -> str:
        return f"SseEvent({self.id}, {self.kind}, {self.data!r})"


class SseClient:
    """``async with SseClient(session_get, url, headers) as sse``; ``sse.events`` fills in."""

    def __init__(self, get: Callable[..., Any], url: str, headers: dict[str, str],
                 on_event: Callable[[SseEvent], None] | None = None) -> None:
        self.get = get
        self.url = url
        self.headers = headers
        self.events: list[SseEvent] = []
        self.comments = 0
        self.ended = asyncio.Event()
        self.on_event = on_event
        self.response: Any = None
        self._task: asyncio.Task[None] | None = None
        self._new = asyncio.Event()

    async def __aenter__(self) -> SseClient:
        self.response = await self.get(self.url, headers=self.headers)
        assert self.response.status == 200, await self.response.text()
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self._task = asyncio.create_task(self._read(), name="test-sse-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.response.close()

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\n")
                if line == "":
                    if "data" in fields:
                        event = SseEvent(fields.get("id", ""), fields.get("event", "message"),
                                         json.loads(fields["data"]), time.perf_counter())
                        self.events.append(event)
                        if self.on_event is not None:
                            self.on_event(event)
                        self._new.set()
                    fields = {}
                elif line.startswith(":"):
                    self.comments += 1
                    self._new.set()
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.ended.set()
            self._new.set()

    async def wait_for(self, check: Callable[[SseEvent], bool], timeout: float = 10.0,
                       ) -> SseEvent:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if check(event):
                    return event
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0 or self.ended.is_set():
                raise AssertionError(f"no matching event within {timeout}s; got {self.events}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    def of(self, conversation_id: str) -> list[SseEvent]:
        return [e for e in self.events if e.data.get("conversation_id") == conversation_id]
