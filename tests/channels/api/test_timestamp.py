"""X-Inboxhub-Timestamp: when present the signature covers '<timestamp>.<body>', so neither can
be swapped, and an old (or far-future) request is refused: a captured request cannot be
replayed after the dedupe window has forgotten its id. Without the header, and unless the
channel requires it, the plain body signature keeps working."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, TEST_SECRET
from tests.helpers import auth, running_hub, sign

URL = "/webhooks/api/shop"


def _stamped(body: bytes, stamp: str, secret: str = TEST_SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Inboxhub-Timestamp": stamp, "X-Inboxhub-Signature": f"sha256={mac}"}


def _body(i: int = 1) -> bytes:
    return json.dumps({"id": f"ts-{i}", "sender": "ana@example.mx", "text": "hola"}).encode()


async def _stored(client: Any) -> int:
    r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    return sum(c["message_count"] for c in (await r.json())["conversations"])


async def test_fresh_stamped_request_is_stored(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        r = await client.post(URL, data=_body(), headers=_stamped(_body(), str(int(time.time()))))
        assert r.status == 200, await r.text()
        assert await _stored(client) == 1


@pytest.mark.parametrize(("name", "offset", "reason"), [
    ("ten minutes old", -600, "s old"),
    ("ten minutes ahead", 600, "in the future"),
])
async def test_stale_or_future_stamp_is_refused(make_config: Any, name: str, offset: int,
                                                reason: str) -> None:
    async with running_hub(make_config()) as client:
        stamp = str(int(time.time()) + offset)
        r = await client.post(URL, data=_body(), headers=_stamped(_body(), stamp))
        assert r.status == 401, name
        assert reason in (await r.json())["error"]["message"]
        assert await _stored(client) == 0


async def test_the_stamp_cannot_be_swapped_or_dropped(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        old = str(int(time.time()) - 3600)
        captured = _stamped(_body(), old)
        # Swap in a fresh timestamp, keep the captured signature.
        swapped = {**captured, "X-Inboxhub-Timestamp": str(int(time.time()))}
        r = await client.post(URL, data=_body(), headers=swapped)
        assert r.status == 401 and "timestamp and body" in (await r.json())["error"]["message"]
        # Drop the header: the signature was not made over the body alone.
        r = await client.post(URL, data=_body(),
                              headers={"X-Inboxhub-Signature": captured["X-Inboxhub-Signature"]})
        assert r.status == 401
        # A plain body signature with a timestamp header added is refused too.
        r = await client.post(URL, data=_body(), headers={
            "X-Inboxhub-Signature": sign(_body()), "X-Inboxhub-Timestamp": str(int(time.time()))})
        assert r.status == 401
        for bad in ["", "12.5", "\u0661\u0662", "-5", "1" * 20, "now"]:
            r = await client.post(URL, data=_body(), headers=_stamped(_body(), bad))
            assert r.status == 401, bad
            assert "UNIX seconds" in (await r.json())["error"]["message"]
        assert await _stored(client) == 0


async def test_unstamped_signature_still_works_unless_required(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        r = await client.post(URL, data=_body(), headers={"X-Inboxhub-Signature": sign(_body())})
        assert r.status == 200
    async with running_hub(make_config(channel_extra="require_timestamp = true\n"
                                                     "max_timestamp_age_seconds = 60")) as client:
        r = await client.post(URL, data=_body(2), headers={"X-Inboxhub-Signature": sign(_body(2))})
        assert r.status == 401 and "requires it" in (await r.json())["error"]["message"]
        r = await client.post(URL, data=_body(2),
                              headers=_stamped(_body(2), str(int(time.time()) - 120)))
        assert r.status == 401 and "accepts 60 s" in (await r.json())["error"]["message"]
        r = await client.post(URL, data=_body(2),
                              headers=_stamped(_body(2), str(int(time.time()) - 30)))
        assert r.status == 200
