"""AliExpress legacy gateway signing (CHANNELS.md §6.3 [X3]).

``sign = upper(hex(HMAC-SHA1(app_secret, url_path + concat(sorted(key + value)))))`` over every
request parameter except ``sign`` itself, keys sorted by byte order, values as sent (UTF-8).
The new Open Platform (``api-sg.aliexpress.com``) may sign differently: not covered here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def string_to_sign(path: str, params: Mapping[str, str]) -> bytes:
    """``path`` followed by every ``key + value`` in key order (``sign`` left out)."""
    pairs = "".join(f"{key}{params[key]}" for key in sorted(params) if key != "sign")
    return (path + pairs).encode()


def sign(app_secret: bytes, path: str, params: Mapping[str, str]) -> str:
    """The ``sign`` parameter of a call to ``path`` with ``params``."""
    return hmac.new(app_secret, string_to_sign(path, params), hashlib.sha1).hexdigest().upper()


def verify(app_secret: bytes, path: str, params: Mapping[str, str]) -> bool:
    """True when ``params["sign"]`` signs the other parameters for ``path`` (constant time)."""
    given = params.get("sign", "")
    return hmac.compare_digest(given.encode(), sign(app_secret, path, params).encode())
