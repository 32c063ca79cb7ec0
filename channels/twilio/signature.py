"""X-Twilio-Signature, computed the way twilio-python's ``RequestValidator`` does it.

Twilio signs the full URL it requested (scheme, host, path, query) followed by every POST
parameter as ``name + value``, names in sorted order and each name's distinct values in sorted
order, with HMAC-SHA1 keyed by the account's auth token, base64-encoded (CHANNELS.md §3).
Twilio is inconsistent about default ports, so the URL is tried with and without ``:443``/
``:80`` (``WebhookAdapter.signed_urls``). Parameters Twilio adds later are covered because
every parameter present is signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from multidict import MultiDict

SIGNATURE_HEADER = "X-Twilio-Signature"
# Present when a webhook is signed with a Twilio SharedKey instead of the auth token
# (``key=...,algorithm=HMAC_SHA256``): the auth token cannot verify those.
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm ``X-Twilio-Webhooks-Signature-Settings`` names
    (``key=...,algorithm=HMAC_SHA256``); none named means HMAC_SHA1, as in the reference."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def signing_string(url: str, params: MultiDict[str]) -> str:
    """URL + sorted ``name value`` pairs; repeated identical values count once, as the
    reference validator's ``sorted(set(values))`` does."""
    parts = [url]
    for name in sorted(set(params.keys())):
        for value in sorted(set(params.getall(name))):
            parts.append(name + value)
    return "".join(parts)


def compute_signature(token: bytes, url: str, params: MultiDict[str]) -> str:
    mac = hmac.new(token, signing_string(url, params).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def signature_matches(token: bytes, urls: Iterable[str], params: MultiDict[str],
                      given: str) -> bool:
    """True when ``given`` is the signature of any of ``urls`` (every one is computed and
    compared in constant time, so the answer's timing does not say which came close)."""
    given_bytes = given.strip().encode("ascii", errors="replace")
    matched = False
    for url in urls:
        expected = compute_signature(token, url, params).encode("ascii")
        matched |= hmac.compare_digest(expected, given_bytes)
    return matched
