"""The SMTP side of the email channel: hand one composed message to the submission server.

The message bytes come finished from the compose module (headers already injection-proof);
this module only owns the envelope and the error mapping the outbox decides on: a 4xx reply,
a refused or dropped connection and a timeout are ``RetryableError`` (the server said "later"
or never answered), a 5xx is ``PermanentError`` carrying the server's code and text so the
agent sees why, refused credentials are ``AuthError``. An envelope address containing CR, LF
or NUL is refused before any connection: it would end the SMTP command early and smuggle in
another one.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from channels.errors import AuthError, PermanentError, ReplyRejected, RetryableError

Security = Literal["tls", "starttls", "none"]

_FORBIDDEN = ("\r", "\n", "\x00")


@dataclass(frozen=True)
class SendResult:
    """The server's final answer; ``refused``: recipients it rejected while accepting others."""

    response: str
    refused: dict[str, str]


def check_envelope_address(address: str) -> None:
    """Refuse what would break the SMTP command line (CR/LF/NUL), and empty recipients."""
    if any(c in address for c in _FORBIDDEN):
        raise ReplyRejected("envelope address contains CR, LF or NUL")
    if len(address) > 320:
        raise ReplyRejected("envelope address longer than 320 characters")


def _server_text(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()[:500]


def _map_response(exc: aiosmtplib.SMTPResponseException, what: str) -> Exception:
    text = _server_text(exc)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or exc.code in (530, 534, 535):
        if 400 <= exc.code < 500:
            return RetryableError(f"SMTP {what} deferred: {text}")
        return AuthError(f"SMTP login refused: {text}")
    if 400 <= exc.code < 500:
        return RetryableError(f"SMTP {what} deferred: {text}")
    return PermanentError(f"SMTP {what} refused: {text}")


async def send_message(
    message_bytes: bytes, *, mail_from: str, rcpt_to: Sequence[str], host: str, port: int,
    security: Security, username: str | None = None, password: str | None = None,
    timeout: float = 30.0, oauth_token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> SendResult:
    """Submit ``message_bytes`` to ``rcpt_to`` (envelope, not the headers) over one connection.

    ``security``: ``tls`` = implicit TLS (465), ``starttls`` = required STARTTLS (587), ``none``
    = plaintext, never upgraded opportunistically (only when configured explicitly).
    ``oauth_token`` logs in with XOAUTH2 instead of ``password``."""
    if security not in ("tls", "starttls", "none"):
        raise ValueError(f"unknown SMTP security {security!r}")
    if isinstance(rcpt_to, str):
        raise TypeError("rcpt_to is a sequence of addresses, not one string")
    if not rcpt_to:
        raise ReplyRejected("no recipients")
    check_envelope_address(mail_from)
    for address in rcpt_to:
        check_envelope_address(address)
        if not address:
            raise ReplyRejected("empty recipient address")
    token_generator = None
    if oauth_token is not None:
        token = oauth_token

        async def token_generator() -> str:
            return token

    try:
        refused, response = await aiosmtplib.send(
            message_bytes, sender=mail_from, recipients=list(rcpt_to), hostname=host, port=port,
            username=username, password=None if oauth_token is not None else password,
            oauth_token_generator=token_generator,
            timeout=timeout, use_tls=security == "tls", start_tls=security == "starttls",
            tls_context=ssl_context,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        # every recipient refused: permanent unless every refusal was a 4xx
        texts = "; ".join(f"{r.recipient}: {_server_text(r)}" for r in exc.recipients)
        if exc.recipients and all(400 <= r.code < 500 for r in exc.recipients):
            raise RetryableError(f"SMTP recipients deferred: {texts}") from exc
        raise PermanentError(f"SMTP recipients refused: {texts}") from exc
    except aiosmtplib.SMTPSenderRefused as exc:
        raise _map_response(exc, "sender") from exc
    except aiosmtplib.SMTPDataError as exc:
        raise _map_response(exc, "message") from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _map_response(exc, "session") from exc
    except aiosmtplib.SMTPNotSupported as exc:
        # e.g. STARTTLS or AUTH required by our config but not offered: fix the config
        raise PermanentError(f"SMTP server {host}: {exc}") from exc
    except aiosmtplib.SMTPException as exc:
        if "not supported by server" in str(exc):
            # aiosmtplib says so with a bare SMTPException (STARTTLS/AUTH missing): our config
            # asks for something this server does not offer, retrying will not change that
            raise PermanentError(f"SMTP server {host}: {exc}") from exc
        raise RetryableError(f"SMTP to {host}:{port} failed: {exc}") from exc
    except (OSError, ssl.SSLError) as exc:
        # disconnects, connect errors, timeouts (aiosmtplib's are ConnectionError/TimeoutError)
        raise RetryableError(f"SMTP to {host}:{port} failed: {exc}") from exc
    return SendResult(response=response,
                      refused={k: f"{v.code} {v.message}" for k, v in refused.items()})
