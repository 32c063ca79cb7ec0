"""The Telegram channel's settings and the facts it states (CHANNELS.md §2).

``api_base_url`` takes python-telegram-bot's ``base_url`` form: a ``{token}`` in it is replaced
by the bot token, any other string gets the token appended. File downloads go to the same
host with ``/file`` before the ``/bot`` segment (``https://api.telegram.org/file/bot<token>/
<file_path>``), as the Bot API documents and PTB's ``base_file_url`` defaults to.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Final, Literal

import msgspec

from channels.polling import PollingSettings
from channels.secrets import Secret
from channels.services.limits import RateLimit

DEFAULT_API_BASE_URL: Final = "https://api.telegram.org/bot"
MAX_TEXT_LENGTH: Final = 4096  # per sendMessage, after entity parsing (UTF-16 code units)
MAX_SPLIT_PARTS: Final = 10  # a split reply is at most this many messages
MAX_DOWNLOAD_BYTES: Final = 20 * 1024 * 1024  # getFile serves files up to 20 MB
# Bot FAQ, mirrored in PTB's FloodLimit: about 1 message/s per chat, about 30/s per bot.
RATE_LIMITS: Final = (RateLimit("recipient", 1.0), RateLimit("account", 30.0))
# The updates we subscribe to (setWebhook / getUpdates ``allowed_updates``): buyer messages,
# their edits, and my_chat_member, which says when a buyer blocked the bot.
ALLOWED_UPDATES: Final = ("message", "edited_message", "my_chat_member")
WEBHOOK_PORTS: Final = frozenset({443, 80, 88, 8443})
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class TelegramSettings(PollingSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``mode``: ``webhook`` (Telegram POSTs to ``/webhooks/telegram/{instance}``; needs
    ``webhook_secret``) or ``polling`` (``getUpdates`` long polls, one poller per bot under a
    lease). ``long_messages``: a reply over 4096 characters is ``split`` into up to
    ``MAX_SPLIT_PARTS`` messages on paragraph or word boundaries, or ``refuse``d."""

    bot_token: Secret
    webhook_secret: Secret | None = None
    api_base_url: str = DEFAULT_API_BASE_URL
    mode: Literal["webhook", "polling"] = "webhook"
    long_messages: Literal["split", "refuse"] = "split"
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    long_poll_seconds: Annotated[int, msgspec.Meta(ge=0, le=50)] = 25
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        file_base_template(self.api_base_url)  # raises on a URL with no /bot segment
        if self.mode == "webhook" and self.webhook_secret is None:
            raise ValueError("mode 'webhook' needs webhook_secret (env:NAME or file:PATH): "
                             "Telegram echoes it on every POST and nothing else proves a "
                             "POST came from Telegram")
        secret = self.webhook_secret.reveal() if self.webhook_secret is not None else ""
        if secret and not _SECRET_TOKEN.fullmatch(secret):  # empty: not resolved (read-only)
            raise ValueError("webhook_secret must be 1-256 characters of A-Z a-z 0-9 _ - "
                             "(Telegram's secret_token alphabet)")


def method_base(api_base_url: str, token: str) -> str:
    """PTB's ``base_url`` rule: ``{token}`` substituted, else the token appended."""
    if "{token}" in api_base_url:
        return api_base_url.replace("{token}", token)
    return api_base_url + token


def file_base_template(api_base_url: str) -> str:
    """``.../bot{token}`` -> ``.../file/bot{token}`` (the last path segment starting with
    ``bot`` gets ``file/`` before it)."""
    parts = urllib.parse.urlsplit(api_base_url)
    segments = parts.path.split("/")
    for i in range(len(segments) - 1, -1, -1):
        if segments[i].startswith("bot"):
            path = "/".join([*segments[:i], "file", *segments[i:]])
            return urllib.parse.urlunsplit(parts._replace(path=path))
    raise ValueError(f"api_base_url {api_base_url!r} has no /bot path segment; expected "
                     "python-telegram-bot's form such as http://host:port/bot{token}")
