"""Slow and greedy clients: a deadline for the request head, one for the body, and a cap on
open connections.

aiohttp waits as long as a client likes for the first request head (a connection that sends
one byte a second held a slot for 90 s and more) and for a body that stops half way. The head
deadline and the cap live in a protocol wrapper around aiohttp's own request handler, so they
hold before any request object exists; the body deadline is a middleware that runs the handler
under a timeout removed the moment the whole body has arrived, so slow work after that (a
Redis stall while storing) is never cut. A cut client gets a 408 and the connection closes;
a handler cut while reading has stored nothing. Later request heads on a keep-alive
connection are bounded by aiohttp's ``keepalive_timeout``, which ``serve`` sets to the same
head deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEAD_END = b"\r\n\r\n"


def _canned(status: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode() + body


_TOO_MANY = _canned("503 Service Unavailable", "unavailable", "too many open connections",
                    "Retry-After: 1\r\n")
_HEAD_TIMEOUT = _canned("408 Request Timeout", "request_timeout",
                        "request head not received in time")


class ConnectionGuard:
    """Protocol factory for ``loop.create_server``: wraps aiohttp's, counts and times
    connections. Beyond ``max_connections`` a new connection gets a 503 and is closed at once
    (the client retries; nothing waits in our memory)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], *, max_connections: int,
                 header_timeout: float) -> None:
        self.factory = factory
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.active = 0
        self.refused = 0
        self.timed_out = 0

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)


class _GuardedConnection(asyncio.Protocol):
    """Forwards everything to aiohttp's handler; watches only for the end of the first head."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        self._transport = cast(asyncio.Transport, transport)
        if guard.active >= guard.max_connections:
            guard.refused += 1
            log.warning("refusing a connection: %d open (hub.max_connections)", guard.active)
            self._transport.write(_TOO_MANY)
            self._transport.close()
            return
        guard.active += 1
        # Armed before aiohttp's own keep-alive timer (same delay in aiohttp >= 3.14), so the
        # client is told why with a 408 rather than just dropped.
        self._deadline = asyncio.get_running_loop().call_later(guard.header_timeout,
                                                               self._head_too_slow)
        self._inner = guard.factory()
        self._inner.connection_made(transport)

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._guard.timed_out += 1
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_HEAD_TIMEOUT)
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            window = self._tail + data
            if _HEAD_END in window:
                self._deadline.cancel()
                self._deadline = None
            else:
                self._tail = window[-(len(_HEAD_END) - 1):]
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._inner is not None:
            self._guard.active -= 1
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def body_deadline(seconds: float) -> Any:
    """Middleware: the whole request body must arrive within ``seconds`` of the handler's
    start; the deadline is lifted once it has (``StreamReader.on_eof``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists or request.content.is_eof():
            return await handler(request)
        try:
            async with asyncio.timeout(seconds) as deadline:

                def arrived() -> None:
                    with contextlib.suppress(RuntimeError):  # already expired or exited
                        deadline.reschedule(None)

                request.content.on_eof(arrived)
                return await handler(request)
        except TimeoutError:
            if request.content.is_eof():
                raise  # the handler's own timeout, not ours
            log.warning("request body not received within %.1fs; connection closed", seconds)
            response = web.json_response(
                {"error": {"code": "request_timeout",
                           "message": "request body not received in time"}}, status=408)
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            # Without this aiohttp would linger 10 s more reading the rest of the body.
            request.protocol.force_close()
            return response

    return middleware
