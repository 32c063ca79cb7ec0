"""The hub's small error family: every provider failure maps to one of these.

The sender decides what to do from the class alone: retry later (``RetryableError``, honouring
``retry_after``), or give up and dead-letter (``PermanentError`` and its kinds). Inbound errors
map to the HTTP answer a webhook gives.
"""

from __future__ import annotations


class ChannelError(Exception):
    """Base of everything an adapter raises on purpose."""


class RetryableError(ChannelError):
    """Try again later: timeouts, connection errors, 5xx, provider throttling."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The provider said slow down (HTTP 429, Telegram retry_after, WhatsApp 130429)."""


class TokenExpired(RetryableError):
    """The provider refused the OAuth access token (HTTP 401 on a call that carried one).

    Not a human's problem, unlike ``AuthError``: ``channels.tokens.with_token`` refreshes the
    token (one refresh across every hub process) and retries the call once. Raised again by
    the retry, it reaches the sender or the poller as an ordinary retryable failure.
    """


class PermanentError(ChannelError):
    """Retrying the same request cannot succeed (bad recipient, blocked conversation, 4xx)."""


class AuthError(PermanentError):
    """Our credentials were refused; an operator has to fix the configuration (for OAuth
    channels: the refresh was refused or no tokens were loaded, so the instance shows
    ``needs_reauth`` until ``inboxhub channels auth INSTANCE`` loads new ones)."""


class RecipientUnreachable(PermanentError):
    """The buyer cannot be reached on this channel until they write again (Telegram: they
    blocked the bot; Messenger: the person is unavailable). The hub marks the conversation
    ``unreachable`` with this text, refuses replies while it is, and clears the mark when the
    buyer's next message arrives."""

    code = "recipient_unreachable"


class ReplyRejected(PermanentError):
    """The reply breaks a channel rule (too long, window closed) and was never sent."""


class InboundError(Exception):
    """A webhook request we refuse; ``status`` is the HTTP answer."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSignature(InboundError):
    """Missing or wrong signature: fail closed before anything is parsed (invariant 7)."""

    status = 401


class PayloadTooLarge(InboundError):
    status = 413


class MalformedPayload(InboundError):
    """Authentic but unusable input: answered with a reason and kept in quarantine."""

    status = 400
