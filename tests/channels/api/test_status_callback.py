"""The API channel's delivery-status callback, through the running hub: the operator's system
reports what became of a reply at ``POST /webhooks/api/{instance}/status``, signed like inbound
messages, and the agent API shows it on the message."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext
from channels.errors import MalformedPayload
from channels.secrets import Secret
from tests.conftest import ADMIN_TOKEN, TEST_SECRET
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, sign, signed_post_args

STATUS_URL = "/webhooks/api/shop/status"


async def _report(client: Any, payload: Any, **headers: str) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h = {"X-Inboxhub-Signature": sign(body), **headers}
    r = await client.post(STATUS_URL, data=body, headers=h)
    return r.status, await r.json()


async def _sent_reply(client: Any, operator: OperatorEndpoint, text: str) -> dict[str, Any]:
    """A buyer writes, an agent replies, the operator's endpoint accepts it ("op-N")."""
    r = await client.post("/webhooks/api/shop", **signed_post_args(
        {"id": f"in-{text}", "sender": f"buyer-{text}", "text": "hola"}))
    assert r.status == 200
    cid = await eventually(lambda: _conversation_of(client, f"buyer-{text}"))
    r = await client.post(f"/api/v1/conversations/{cid}/replies", json={"text": text},
                          headers=auth(ADMIN_TOKEN))
    assert r.status == 202
    rid = (await r.json())["message"]["id"]
    sent: dict[str, Any] = await eventually(lambda: _message(client, cid, rid, "sent"))
    return sent


async def _conversation_of(client: Any, handle: str) -> str | None:
    r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    for c in (await r.json())["conversations"]:
        if c["contact_handle"] == handle:
            return str(c["id"])
    return None


async def _message(client: Any, cid: str, rid: str, status: str | None = None
                   ) -> dict[str, Any] | None:
    r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
    for m in (await r.json())["messages"]:
        if m["id"] == rid and (status is None or m["status"] == status):
            return m  # type: ignore[no-any-return]
    return None


async def test_the_api_shows_each_reply_s_delivery_state(make_config: Any) -> None:
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url)) as client:
        first = await _sent_reply(client, operator, "one")
        assert first["provider_message_id"].startswith("op-")
        assert first["status_at"] > 0
        # Out of order: read, then the late delivered; by the operator's own id.
        assert (await _report(client, {"id": first["provider_message_id"],
                                       "status": "read", "at": 1_767_225_700}))[0] == 200
        assert (await _report(client, {"id": first["provider_message_id"],
                                       "status": "delivered",
                                       "at": "2026-01-01T00:01:00+00:00"}))[0] == 200
        shown = await _message(client, first["conversation_id"], first["id"])
        assert shown is not None
        assert (shown["status"], shown["status_at"]) == ("read", 1_767_225_700)

        second = await _sent_reply(client, operator, "two")
        # By our reply id, with the replay-protected signature.
        body = json.dumps({"id": second["id"], "status": "failed",
                           "error": "mailbox full"}).encode()
        stamp = str(int(time.time()))
        r = await client.post(STATUS_URL, data=body, headers={
            "X-Inboxhub-Timestamp": stamp,
            "X-Inboxhub-Signature": sign(stamp.encode() + b"." + body)})
        assert r.status == 200, await r.text()
        shown = await _message(client, second["conversation_id"], second["id"])
        assert shown is not None
        assert (shown["status"], shown["error"]) == ("failed", "mailbox full")
        r = await client.get("/api/v1/dlq", headers=auth(ADMIN_TOKEN))
        assert [d["message_id"] for d in (await r.json())["entries"]] == [second["id"]]


async def test_a_hostile_status_callback_changes_nothing(make_config: Any) -> None:
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url)) as client:
        sent = await _sent_reply(client, operator, "three")
        forged = json.dumps({"id": sent["id"], "status": "failed"}).encode()
        r = await client.post(STATUS_URL, data=forged,
                              headers={"X-Inboxhub-Signature": sign(b"other")})
        assert r.status == 401
        status, answer = await _report(client, b'{"id": "x", "status": "bounced"}')
        assert status == 400 and "status" in answer["error"]["message"]
        shown = await _message(client, sent["conversation_id"], sent["id"])
        assert shown is not None and shown["status"] == "sent"
        # Quarantined as a status callback: a retry parses it as one again (and it is
        # still unusable), not as a buyer message missing its sender.
        r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
        [entry] = (await r.json())["entries"]
        r = await client.post(f"/api/v1/quarantine/{entry['id']}/retry",
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 422
        assert "invalid delivery status" in (await r.json())["error"]["message"]


def _adapter() -> ApiChannel:
    settings = ApiChannelSettings(secret=Secret(TEST_SECRET, "test"), outbound_url="http://x")

    async def quarantine(instance: str, raw: bytes, error: str) -> str:
        return ""

    return ApiChannel("shop", settings, AdapterContext(
        http=None, quarantine=quarantine, spawn=lambda c, n: None))  # type: ignore[arg-type]


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500) | st.fixed_dictionaries(
    {"id": values, "status": st.sampled_from(["sent", "delivered", "read", "failed", "x"])
     | values, "error": values, "at": values}).map(lambda v: json.dumps(v).encode()))
def test_parse_status_never_fails_unexpectedly(body: bytes) -> None:
    try:
        update = _adapter().parse_status(body)
    except MalformedPayload as exc:
        assert exc.reason
    else:
        assert update.provider_message_id and update.state in (
            "sent", "delivered", "read", "failed")
        assert update.at is None or update.at >= 0


@pytest.mark.parametrize("at", ["2026-01-01T00:00:00", -1, 1e300])
def test_a_status_time_must_be_a_real_moment(at: Any) -> None:
    with pytest.raises(MalformedPayload):
        _adapter().parse_status(json.dumps({"id": "op-1", "status": "read", "at": at}).encode())
