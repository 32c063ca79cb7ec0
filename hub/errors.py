"""One error shape for every answer the hub gives: ``{"error": {"code", "message"}}``.

Handlers raise ``ApiError``; ``shape_errors`` (run by the API's front-door middleware, see
``hub.auth.make_auth_middleware``) turns it, every other ``web.HTTPException`` (aiohttp's own
404, 405 and 413 included) and any unexpected exception into that shape, so a client parses one
shape whatever went wrong and wherever (API, webhooks, health). ``code`` is a stable machine
word a client may branch on; ``message`` is for the person reading it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

DEFAULT_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}

# Headers of an aiohttp exception worth keeping when its body is replaced.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


class ErrorDetail(msgspec.Struct, frozen=True):
    """``code`` is stable (a client may branch on it); ``message`` says what to fix."""

    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """Every 4xx and 5xx answer of the hub has this body."""

    error: ErrorDetail


_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """Raised by a handler to answer with an error; the middleware renders it."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or DEFAULT_CODES.get(status, "error")
        self.headers = dict(headers or {})


def error_response(status: int, message: str, code: str | None = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    body = ErrorBody(ErrorDetail(code or DEFAULT_CODES.get(status, "error"), message))
    return web.Response(body=_encoder.encode(body), status=status,
                        content_type="application/json", headers=headers)


def _describe(request: web.Request, exc: web.HTTPException) -> tuple[str, str]:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return "method_not_allowed", f"method {request.method} is not allowed here; use {allowed}"
    if isinstance(exc, web.HTTPNotFound):
        return "not_found", "no such resource"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return "payload_too_large", "request body is larger than hub.max_body_bytes allows"
    text = exc.text if exc.content_type == "text/plain" and exc.text else exc.reason
    return DEFAULT_CODES.get(exc.status, "error"), (text or exc.reason)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def shape_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ``handler``; whatever error comes out leaves in the one shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.code, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _describe(request, exc)
        headers = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
        return error_response(exc.status, message, code, headers)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("%s %s: redis unavailable (%s)", request.method, request.path,
                    type(exc).__name__)
        return error_response(503, "storage is temporarily unavailable; retry shortly",
                              headers={"Retry-After": "1"})
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error")
