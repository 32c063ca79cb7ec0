"""HMAC helpers shared by adapters that sign or verify over raw bytes."""

from __future__ import annotations

import hashlib
import hmac


def hmac_sha256_hex(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_prefixed_hmac_sha256(key: bytes, body: bytes, header: str | None,
                                prefix: str = "sha256=") -> bool:
    """Check a ``sha256=<hex>`` header (API channel, Meta's X-Hub-Signature-256) in constant time.

    The comparison runs on the raw request bytes as received, never on re-serialized JSON.
    """
    if not header or not header.startswith(prefix):
        return False
    given = header[len(prefix):].strip().lower().encode("ascii", errors="replace")
    expected = hmac_sha256_hex(key, body).encode("ascii")
    return hmac.compare_digest(given, expected)
