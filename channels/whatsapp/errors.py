"""Graph API failures mapped to the hub's error family (CHANNELS.md §4, pywa's ``errors.py``).

Meta answers a refused call with an HTTP status and ``{"error": {"message", "type", "code",
"error_subcode", "error_data": {"details"}, "fbtrace_id"}}``. The code decides, not the status:
throttling comes as a 400 with code 130429 as well as a 429, and the re-engagement refusal
(131047: the 24-hour window closed) must reach the agent as the same "send a template" state
the window check gives before a send, never as an anonymous 400.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from channels.errors import AuthError, ChannelError, PermanentError, RateLimited, RetryableError
from channels.http import retry_after_seconds
from channels.whatsapp.payloads import GraphErrorBody, graph_error_decoder
from channels.windows import WindowClosed

REENGAGEMENT = 131047
# Throttling, with how long to wait when Meta sends no Retry-After: the pair limit is about
# one message per 6 s to one user; the others are per-number, per-account or per-app windows.
THROTTLED: dict[int, float] = {
    130429: 1.0,    # throughput limit of the number
    131056: 6.0,    # pair rate limit: too many messages to this user
    131048: 60.0,   # spam rate limit
    80007: 60.0,    # WABA rate limit
    4: 60.0,        # app call limit
    613: 60.0,      # calls to this API exceeded the rate
}
# Meta's side is busy or upgrading: the same request can succeed later.
TRANSIENT = frozenset({1, 2, 131000, 131016, 131057, 133004})
AUTH = frozenset({190, 10, 200, 3, 131005})


def describe_error(body: GraphErrorBody) -> str:
    """``(#code) message: details`` in Meta's words, without the trace id."""
    message = body.message or ""
    code = f"(#{body.code})" if body.code is not None else ""
    # Meta's message usually starts with its code already: "(#131047) Re-engagement message".
    text = " ".join(p for p in ((code if not message.startswith(code) else ""), message)
                    if p) or "no error message"
    details = body.error_data.details if body.error_data is not None else None
    if details and details not in text:
        text = f"{text}: {details}"
    if body.error_subcode is not None:
        text = f"{text} (subcode {body.error_subcode})"
    return text[:500]


def window_closed_message(detail: str, template_hint: str) -> str:
    return (f"WhatsApp refused free text: the 24 h customer-service window has closed "
            f"({detail}); send an approved template instead{template_hint}")


def graph_failure(status: int, body: bytes, headers: Mapping[str, str], *,
                  template_hint: str = "") -> ChannelError:
    """The error class of a Graph API answer with ``status`` >= 400."""
    try:
        error: GraphErrorBody | None = graph_error_decoder.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        error = None
    code = error.code if error is not None else None
    detail = (describe_error(error) if error is not None
              else f"HTTP {status} without Graph API error body")
    detail = f"HTTP {status} {detail}"
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if code == REENGAGEMENT:
        return WindowClosed(window_closed_message(detail, template_hint))
    if code in THROTTLED:
        return RateLimited(detail, retry_after=retry_after if retry_after is not None
                           else THROTTLED[code])
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if code in AUTH or status == 401:
        return AuthError(detail)
    if code in TRANSIENT or status >= 500 or status in (408, 409, 425):
        return RetryableError(detail, retry_after=retry_after)
    if status == 403:
        return AuthError(detail)
    return PermanentError(detail)
