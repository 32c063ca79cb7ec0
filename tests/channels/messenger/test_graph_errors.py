"""Graph's error body decides what a failed send is (``channels.messenger.graph``): the same
HTTP 400 can mean "window closed", "rate limited", "token expired" or "buyer gone"."""

from __future__ import annotations

import json

import pytest

from channels.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    RecipientUnreachable,
    ReplyRejected,
    RetryableError,
)
from channels.messenger.graph import DEFAULT_RATE_LIMIT_WAIT, map_graph_error
from channels.windows import WindowClosed


def body(code: int, message: str, subcode: int | None = None, **extra: object) -> bytes:
    error: dict[str, object] = {"message": message, "type": "OAuthException", "code": code,
                                "fbtrace_id": "A1b2C3", **extra}
    if subcode is not None:
        error["error_subcode"] = subcode
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(("status", "raw", "expected", "not_expected"), [
    (400, body(10, "(#10) This message is sent outside of allowed window.", 2018278),
     WindowClosed, RetryableError),
    (400, body(551, "This person isn't available right now.", 1545041), RecipientUnreachable,
     RetryableError),
    (400, body(4, "Application request limit reached"), RateLimited, PermanentError),
    (400, body(613, "Calls to this api have exceeded the rate limit."), RateLimited,
     PermanentError),
    (400, body(80006, "There have been too many messages sent to this Messenger thread."),
     RateLimited, PermanentError),
    (500, body(2, "Service temporarily unavailable"), RetryableError, PermanentError),
    (400, body(1, "An unknown error occurred"), RetryableError, PermanentError),
    (400, body(100, "Something odd", is_transient=True), RetryableError, PermanentError),
    (400, body(190, "Error validating access token: Session has expired", 463), AuthError,
     RetryableError),
    (403, body(200, "Requires pages_messaging permission"), AuthError, RetryableError),
    (400, body(10, "Application does not have permission for this action"), AuthError,
     WindowClosed),
    (400, body(100, "(#100) The parameter recipient is required"), PermanentError,
     RetryableError),
    (502, b"<html>Bad Gateway</html>", RetryableError, PermanentError),
    (429, b"slow down", RateLimited, PermanentError),
    (401, b"", AuthError, RetryableError),
    (404, b"not graph", PermanentError, RetryableError),
])
def test_graph_errors_map_by_code(status: int, raw: bytes, expected: type[ChannelError],
                                  not_expected: type[ChannelError]) -> None:
    error = map_graph_error(status, raw, {}, "messenger")
    assert isinstance(error, expected) and not isinstance(error, not_expected), error


def test_the_refusal_names_the_code_and_graphs_words() -> None:
    error = map_graph_error(400, body(10, "(#10) This message is sent outside of allowed "
                                      "window.", 2018278), {}, "instagram")
    assert isinstance(error, ReplyRejected)
    text = str(error)
    assert "10/2018278" in text and "outside of allowed window" in text
    assert "instagram" in text and "A1b2C3" in text


def test_rate_limits_wait_retry_after_or_a_default() -> None:
    limited = map_graph_error(400, body(613, "limit"), {"Retry-After": "12"}, "messenger")
    assert isinstance(limited, RateLimited) and limited.retry_after == 12
    unspecified = map_graph_error(400, body(613, "limit"), {}, "messenger")
    assert isinstance(unspecified, RateLimited)
    assert unspecified.retry_after == DEFAULT_RATE_LIMIT_WAIT
