"""Shopee Open Platform v2 signing (CHANNELS.md §6.4, documented in the docs copy [S1][S2]).

Shop-level calls: ``sign = hex(HMAC-SHA256(partner_key, partner_id + api_path + timestamp +
access_token + shop_id))``; public (partner-level) calls such as the token refresh sign
``partner_id + api_path + timestamp``. Pushes carry ``Authorization =
hex(HMAC-SHA256(partner_key, callback_url + "|" + raw_body))``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def _hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def shop_sign(partner_key: bytes, *, partner_id: int, path: str, timestamp: int,
              access_token: str, shop_id: int) -> str:
    """The ``sign`` of a shop-level call."""
    base = f"{partner_id}{path}{timestamp}{access_token}{shop_id}".encode()
    return _hex(partner_key, base)


def public_sign(partner_key: bytes, *, partner_id: int, path: str, timestamp: int) -> str:
    """The ``sign`` of a public / partner-level call (token refresh)."""
    return _hex(partner_key, f"{partner_id}{path}{timestamp}".encode())


def push_signature(partner_key: bytes, callback_url: str, body: bytes) -> str:
    """What Shopee puts in a push's ``Authorization`` header: over the raw body bytes."""
    return _hex(partner_key, callback_url.encode() + b"|" + body)


def verify_push(partner_key: bytes, urls: Iterable[str], body: bytes,
                header: str | None) -> bool:
    """True when ``header`` signs ``body`` for one of ``urls`` (constant-time compare)."""
    if not header:
        return False
    given = header.strip().lower().encode()
    ok = False
    for url in urls:
        # Every variant is compared, so the time taken does not say which one matched.
        ok |= hmac.compare_digest(given, push_signature(partner_key, url, body).encode())
    return ok
