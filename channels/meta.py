"""What WhatsApp Cloud API, Messenger and Instagram share: Meta's webhook handshake and signature.

Meta subscribes a webhook with a GET (``hub.mode=subscribe``, ``hub.verify_token``,
``hub.challenge``: echo the challenge as plain text when the token matches, 403 otherwise) and
signs every POST with ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``
(CHANNELS.md §2, §4). The body is hashed exactly as received: Meta escapes non-ASCII as
``\\uXXXX``, so hashing re-serialized JSON would fail every Spanish or Portuguese message.
A missing signature is 401, a wrong one 403, as Meta documents.
"""

from __future__ import annotations

import hmac
from typing import ClassVar

from aiohttp import web

from channels.base import WebhookAdapter
from channels.errors import InvalidSignature
from channels.secrets import Secret
from channels.signing import verify_prefixed_hmac_sha256

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_CHALLENGE_CHARS = 256


class SignatureMismatch(InvalidSignature):
    """A signature is present but does not match the body: Meta documents 403 for this."""

    status = 403


class MetaWebhookAdapter(WebhookAdapter):
    """Base for Meta's channels; a subclass's settings carry ``app_secret`` and
    ``verify_token`` (both ``Secret``)."""

    webhook_methods: ClassVar[frozenset[str]] = frozenset({"GET", "POST"})

    def _app_secret(self) -> Secret:
        secret: Secret = self.settings.app_secret
        return secret

    def _verify_token(self) -> Secret:
        token: Secret = self.settings.verify_token
        return token

    def verify(self, request: web.Request, body: bytes) -> None:
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER}")
        if not verify_prefixed_hmac_sha256(self._app_secret().reveal_bytes(), body, header):
            raise SignatureMismatch(f"wrong {SIGNATURE_HEADER}")

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        """The subscription handshake: constant-time token check, challenge echoed as text."""
        query = request.query
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        expected = self._verify_token().reveal_bytes()
        if (query.get("hub.mode") != "subscribe"
                or not hmac.compare_digest(token.encode("utf-8", "replace"), expected)):
            return web.Response(status=403, text="verification failed")
        if not challenge or len(challenge) > MAX_CHALLENGE_CHARS or not challenge.isprintable():
            return web.Response(status=400, text="missing or unusable hub.challenge")
        return web.Response(text=challenge, content_type="text/plain")
