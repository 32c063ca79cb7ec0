"""Bot API calls over the hub's one aiohttp session, with Telegram's answers mapped to the
hub's error family.

Why not ``telegram.Bot``: it brings its own httpx connection pool (the hub injects one session
for every channel), needs ``initialize()`` (a ``getMe``) before any call, and raises its own
error tree (``RetryAfter``, ``Forbidden``, ``BadRequest``) that would have to be mapped anyway.
The calls here have the same shapes (JSON body, ``{ok, result}`` or ``{ok: false, error_code,
description, parameters}``) and python-telegram-bot's classes still parse what comes back.

Every call has a timeout, never follows a redirect (``channels.http``) and reads at most a
bounded answer. The bot token is part of every URL, so no URL and no aiohttp exception text
ever reaches an error message or a log line.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import msgspec

from channels import errors
from channels.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from channels.http import read_capped
from channels.secrets import Secret
from channels.telegram.settings import file_base_template, method_base

MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024  # 100 updates of up to ~40 KB each
_FILE_PATH_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./")


class RecipientUnreachable(errors.RecipientUnreachable):
    """Telegram answered 403 for a chat: the buyer blocked the bot (``Forbidden: bot was
    blocked by the user``), deleted their account, or never started it. Retrying cannot
    succeed until the buyer writes to the bot again."""


class ApiError(msgspec.Struct, frozen=True):
    """Telegram's error answer (CHANNELS.md §2, Bot API "Making requests")."""

    ok: bool = False
    error_code: int | None = None
    description: str = ""
    parameters: dict[str, Any] = {}


_error = msgspec.json.Decoder(ApiError)


class BotApi:
    """One bot's Bot API: ``call(method, params)`` returns ``result`` or raises a
    ``ChannelError``; ``download(file_path, max_bytes)`` fetches a file ``getFile`` named."""

    def __init__(self, http: aiohttp.ClientSession, token: Secret, api_base_url: str,
                 timeout: float) -> None:
        self._http = http
        self._base = method_base(api_base_url, token.reveal()).rstrip("/")
        self._file_base = method_base(file_base_template(api_base_url),
                                      token.reveal()).rstrip("/")
        self.timeout = timeout

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *,
                   timeout: float | None = None) -> Any:
        """POST ``params`` as JSON to ``method``; ``timeout`` overrides the default (a long
        poll waits longer than any other call)."""
        body = msgspec.json.encode(dict(params or {}))
        return await self._post(method, body, {"Content-Type": "application/json"},
                                self.timeout if timeout is None else timeout)

    async def upload(self, method: str, params: Mapping[str, str], *, field: str, name: str,
                     content_type: str, data: bytes) -> Any:
        """POST ``params`` and one file as ``multipart/form-data`` (``sendDocument``)."""
        form = aiohttp.FormData()
        for key, value in params.items():
            form.add_field(key, value)
        form.add_field(field, data, filename=name, content_type=content_type)
        # Time for the upload itself: the default plus a second per 256 KiB.
        return await self._post(method, form, {},
                                self.timeout + len(data) / (256 * 1024))

    async def _post(self, method: str, body: bytes | aiohttp.FormData,
                    headers: Mapping[str, str], total: float) -> Any:
        try:
            async with self._http.post(
                f"{self._base}/{method}", data=body, headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=total), allow_redirects=False,
            ) as resp:
                if 300 <= resp.status < 400:
                    raise PermanentError(f"Telegram {method}: HTTP {resp.status} redirect not "
                                         "followed; check api_base_url")
                answer, truncated = await read_capped(resp, MAX_ANSWER_BYTES)
                status, headers = resp.status, resp.headers
        except ChannelError:
            raise
        except TimeoutError:
            raise RetryableError(f"Telegram {method} timed out after {total:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # str(exc) may carry the URL, and with it the token: only the class is named.
            raise RetryableError(f"Telegram {method}: connection failed: "
                                 f"{type(exc).__name__}") from None
        if status >= 400:
            raise api_error(method, status, answer, headers.get("Retry-After"))
        if truncated:
            raise RetryableError(f"Telegram {method}: answer over {MAX_ANSWER_BYTES} bytes")
        try:
            decoded = msgspec.json.decode(answer)
        except msgspec.DecodeError:
            raise RetryableError(f"Telegram {method}: HTTP {status} answer is not JSON"
                                 ) from None
        if not isinstance(decoded, dict) or decoded.get("ok") is not True:
            raise api_error(method, status, answer, None)
        return decoded.get("result")

    async def download(self, file_path: str, max_bytes: int) -> bytes | None:
        """The file's bytes, or None when it is larger than ``max_bytes``."""
        if (not file_path or file_path.startswith("/") or ".." in file_path.split("/")
                or not set(file_path) <= _FILE_PATH_CHARS):
            raise PermanentError("Telegram getFile named an unusable file_path")
        url = f"{self._file_base}/{urllib.parse.quote(file_path)}"
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout * 6),
                                      allow_redirects=False) as resp:
                if resp.status >= 300:
                    detail = f"HTTP {resp.status}"
                    if resp.status in (429,) or resp.status >= 500:
                        raise RetryableError(f"Telegram file download: {detail}")
                    raise PermanentError(f"Telegram file download: {detail}")
                data, truncated = await read_capped(resp, max_bytes)
        except ChannelError:
            raise
        except TimeoutError:
            raise RetryableError("Telegram file download timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"Telegram file download: connection failed: "
                                 f"{type(exc).__name__}") from None
        return None if truncated else data


def api_error(method: str, status: int, answer: bytes, retry_header: str | None
              ) -> ChannelError:
    """Telegram's error answer as the hub's error class, with Telegram's own description."""
    try:
        error = _error.decode(answer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        error = ApiError()
    code = error.error_code or status
    description = " ".join(error.description.split())[:300] or f"HTTP {status}"
    detail = f"Telegram {method}: {code} {description}"
    retry_after = _number(error.parameters.get("retry_after"))
    if retry_after is None:
        retry_after = _number(retry_header)
    if code == 429 or (retry_after is not None and code < 500):
        return RateLimited(detail, retry_after=retry_after)
    if code == 401 or (code == 404 and method != "getFile"):
        # 404 "Not Found" is what Telegram answers for a malformed or revoked token.
        return AuthError(f"{detail}: check bot_token")
    if code == 403:
        return RecipientUnreachable(detail)
    if code in (408, 409) or code >= 500 or status >= 500:
        return RetryableError(detail, retry_after=retry_after)
    return PermanentError(detail)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value))
    if isinstance(value, str):
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None
