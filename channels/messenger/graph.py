"""The Graph API as Messenger and Instagram messaging use it: one request helper and the
mapping of Graph's error body to the hub's error family.

Graph answers every failure with ``{"error": {"message", "type", "code", "error_subcode",
"fbtrace_id"}}`` (mostly as HTTP 400, whatever the cause), so the status line alone cannot say
whether to retry: the code decides (CHANNELS.md §5 lists the send errors):

* 10 with subcode 2018278: the reply is outside the messaging window: ``WindowClosed``, the
  same refusal the hub's own window check gives, so an agent sees one kind of answer;
* 551: the person is not available (blocked the page, deleted the account): permanent;
* 4, 17, 32, 613, 80006: rate limits: ``RateLimited``, retried after ``Retry-After`` or, as
  Graph seldom sends one, after ``DEFAULT_RATE_LIMIT_WAIT``;
* 1, 2 (unknown, temporarily unavailable), ``is_transient`` and any 5xx: retryable;
* 190 (token invalid or expired), 102, 10 otherwise, 200-299 (permissions): ``AuthError``,
  an operator has to fix the page token or the app's permissions;
* anything else: permanent, with Graph's code and message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import msgspec

from channels.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    RecipientUnreachable,
    RetryableError,
)
from channels.http import read_capped, retry_after_seconds
from channels.windows import WindowClosed

MAX_ANSWER_BYTES: Final = 256 * 1024
DEFAULT_RATE_LIMIT_WAIT: Final = 60.0
OUTSIDE_WINDOW_SUBCODE: Final = 2018278
RATE_LIMIT_CODES: Final = frozenset({4, 17, 32, 613, 80006})
TRANSIENT_CODES: Final = frozenset({1, 2})
AUTH_CODES: Final = frozenset({102, 190})
USER_UNAVAILABLE: Final = 551


class GraphError(msgspec.Struct, frozen=True):
    message: str = ""
    type: str = ""
    code: int | None = None
    error_subcode: int | None = None
    fbtrace_id: str | None = None
    is_transient: bool = False


class _ErrorBody(msgspec.Struct, frozen=True):
    error: GraphError


_error_body = msgspec.json.Decoder(_ErrorBody)


def _by_status(status: int, headers: Mapping[str, str]) -> ChannelError:
    detail = f"HTTP {status} without a Graph error body"
    if status == 429:
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        return RateLimited(detail, retry_after=DEFAULT_RATE_LIMIT_WAIT
                           if retry_after is None else retry_after)
    if status in (401, 403):
        return AuthError(detail)
    if status in (408, 409, 425) or status >= 500:
        return RetryableError(detail, retry_after=retry_after_seconds(headers.get("Retry-After")))
    return PermanentError(detail)


def map_graph_error(status: int, body: bytes, headers: Mapping[str, str],
                    channel: str) -> ChannelError:
    """The error family member for a Graph failure answer (module docstring)."""
    try:
        error = _error_body.decode(body).error
    except (msgspec.DecodeError, UnicodeDecodeError):
        error = None
    if error is None or error.code is None:
        # Not Graph's shape (a proxy, a load balancer): the status line is all there is.
        return _by_status(status, headers)
    code, subcode = error.code, error.error_subcode
    words = error.message[:300]
    detail = (f"Graph API error {code}" + (f"/{subcode}" if subcode is not None else "")
              + f" (HTTP {status}): {words}"
              + (f" [fbtrace_id {error.fbtrace_id[:64]}]" if error.fbtrace_id else ""))
    if subcode == OUTSIDE_WINDOW_SUBCODE:
        return WindowClosed(f"{channel} refused the reply as outside the messaging window: "
                            f"{detail}; nothing can be sent until the buyer writes again "
                            "(or, within 7 days, as a human reply with tag HUMAN_AGENT where "
                            "the page has it)")
    if code == USER_UNAVAILABLE:
        return RecipientUnreachable(f"the buyer cannot be reached on {channel} (blocked the "
                                    f"page or left): {detail}")
    if code in RATE_LIMIT_CODES:
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        return RateLimited(detail, retry_after=DEFAULT_RATE_LIMIT_WAIT
                           if retry_after is None else retry_after)
    if code in TRANSIENT_CODES or error.is_transient or status >= 500:
        return RetryableError(detail, retry_after=retry_after_seconds(headers.get("Retry-After")))
    if code in AUTH_CODES or code == 10 or 200 <= code <= 299:
        return AuthError(f"the page access token or the app's permissions were refused: "
                         f"{detail}")
    return PermanentError(detail)


async def graph_request(session: aiohttp.ClientSession, method: str, url: str, *,
                        token: str, timeout: float, json: Any = None,
                        params: Mapping[str, str] | None = None, channel: str) -> Any:
    """One Graph call with the page token as a Bearer header (never in the URL, where it
    would end up in access logs); the decoded JSON answer, or the mapped error raised. A 2xx
    answer that is not JSON, or too big to read whole, is None: the call succeeded (a send
    was made, so it must not be retried) but its answer says nothing usable.

    Redirects are refused (``channels.http``); answers are read up to ``MAX_ANSWER_BYTES``.
    """
    headers = {"Authorization": f"Bearer {token}"}
    data: bytes | None = None
    if json is not None:
        data = msgspec.json.encode(json)
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, params=params, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout),
                               allow_redirects=False) as resp:
        if 300 <= resp.status < 400:
            raise PermanentError(f"HTTP {resp.status} redirect from the Graph API not "
                                 "followed; check api_base_url")
        body, truncated = await read_capped(resp, MAX_ANSWER_BYTES)
        if resp.status >= 400:
            raise map_graph_error(resp.status, body, resp.headers, channel)
    if truncated:
        return None
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
