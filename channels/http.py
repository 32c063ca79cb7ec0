"""Outbound HTTP for adapters: never follow a redirect, never read an unbounded answer.

A redirect is refused, not followed: a 307/308 makes a client send the same body again to
wherever ``Location`` points, so an endpoint that was moved, misconfigured or taken over
would receive the signed reply and the buyer's data at an address nobody configured. It is a
``PermanentError`` naming the redirect, dead-lettered for an operator to fix the URL.

An answer is read up to ``max_bytes`` (64 KiB by default) and no further. The status line
decides success: a 2xx answer bigger than the cap still means "delivered" (its first bytes are
what the adapter gets, ``truncated`` set), since retrying a delivered reply would send it
twice; a 4xx/5xx answer is mapped by ``channels.base.map_http_error`` as usual.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import aiohttp
import msgspec

from channels.errors import PermanentError

MAX_RESPONSE_BYTES = 64 * 1024
_CHUNK = 16 * 1024


class HttpAnswer(msgspec.Struct, frozen=True):
    """A provider's answer, read up to the cap."""

    status: int
    body: bytes
    truncated: bool


async def post(session: aiohttp.ClientSession, url: str, *, data: bytes,
               headers: Mapping[str, str], timeout: float,
               max_bytes: int = MAX_RESPONSE_BYTES) -> HttpAnswer:
    """POST ``data``; raise for a redirect or an error status, else return the capped answer.

    Errors: ``PermanentError`` for any 3xx, ``aiohttp.ClientResponseError`` for >= 400 (with
    the headers, so a 429's Retry-After is honoured), aiohttp/OS errors and timeouts as is.
    """
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with session.post(url, data=data, headers=dict(headers), timeout=client_timeout,
                            allow_redirects=False) as resp:
        if 300 <= resp.status < 400:
            location = resp.headers.get("Location", "(no Location header)")[:200]
            raise PermanentError(
                f"HTTP {resp.status} redirect to {location} not followed: replies go only to "
                "the configured URL; update it if the endpoint moved"
            )
        body, truncated = await read_capped(resp, max_bytes)
        resp.raise_for_status()
    return HttpAnswer(status=resp.status, body=body, truncated=truncated)


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the body, and whether more was there (left unread: the
    connection is then closed rather than reused)."""
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        chunk = await resp.content.read(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    return body[:max_bytes], size > max_bytes


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date),
    never negative; None when absent or unreadable. Every adapter honours it the same way."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - time.time())
