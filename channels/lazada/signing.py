"""Lazada Open Platform request signing (CHANNELS.md §6.6, documented).

Every API call carries ``app_key``, ``timestamp`` (milliseconds), ``sign_method=sha256``, the
seller's ``access_token`` (the token refresh carries none) and ``sign``::

    sign = upper(hex(HMAC-SHA256(app_secret, api_path + concat(sorted(key + value)))))

over every parameter but ``sign`` itself (business parameters included), sorted by key, each
written as its key immediately followed by its value. ``api_path`` is the API's name as the docs
write it (``/im/message/send``), without the ``/rest`` prefix of the host.

The fake in ``tests/channels/lazada/provider.py`` verifies with ``verify_sign`` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

SIGN_METHOD: Final = "sha256"


def sign_base(api_path: str, params: Mapping[str, str]) -> bytes:
    """What is signed: the path, then ``key + value`` for each parameter sorted by key."""
    parts = [api_path]
    parts.extend(f"{key}{params[key]}" for key in sorted(params) if key != "sign")
    return "".join(parts).encode("utf-8")


def sign(app_secret: bytes, api_path: str, params: Mapping[str, str]) -> str:
    """The ``sign`` parameter for a call to ``api_path`` with ``params``."""
    return hmac.new(app_secret, sign_base(api_path, params), hashlib.sha256).hexdigest().upper()


def signed_params(app_secret: bytes, api_path: str, params: Mapping[str, str], *,
                  app_key: str, timestamp_ms: int,
                  access_token: str | None) -> dict[str, str]:
    """``params`` with the system parameters and their ``sign`` added."""
    out = dict(params)
    out.update({"app_key": app_key, "timestamp": str(timestamp_ms), "sign_method": SIGN_METHOD})
    if access_token is not None:
        out["access_token"] = access_token
    out["sign"] = sign(app_secret, api_path, out)
    return out


def verify_sign(app_secret: bytes, api_path: str, params: Mapping[str, str]) -> bool:
    """True when ``params['sign']`` signs the other ``params`` for ``api_path``."""
    given = params.get("sign", "")
    expected = sign(app_secret, api_path, params)
    return hmac.compare_digest(given.encode(), expected.encode())
