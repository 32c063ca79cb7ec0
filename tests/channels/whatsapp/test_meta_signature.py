"""Meta's webhook verification (``channels.meta.MetaWebhookAdapter``), through the WhatsApp
channel as the hub serves it: ``X-Hub-Signature-256`` over the raw bytes exactly as sent
(Meta escapes non-ASCII as ``\\uXXXX``, so re-serialized JSON must not verify), 401 for a
missing signature and 403 for a wrong one, and the ``hub.challenge`` subscription handshake.
Signatures are computed here with ``hmac``/``hashlib`` directly, not with the hub's helper."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse

from channels.testing import IngestGate
from channels.testing.webhooks import KitQuarantine
from tests.channels.whatsapp import fixtures as f
from tests.channels.whatsapp.graph import APP_SECRET, VERIFY_TOKEN, meta_json
from tests.channels.whatsapp.harness import WhatsAppHarness, WhatsAppKit

TEXT = "¿Llegó? Não chegou ainda 📦 — ñandú"


def signature(body: bytes, secret: str = APP_SECRET, prefix: str = "sha256=") -> str:
    return prefix + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post(harness: WhatsAppHarness, body: bytes, header: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    return (await harness.request("POST", "", body, headers)).status


async def handshake(harness: WhatsAppHarness, query: dict[str, str]) -> tuple[int, bytes, str]:
    answer = await harness.request("GET", "?" + urllib.parse.urlencode(query), b"", {})
    return answer.status, answer.body, answer.headers.get("Content-Type", "")


def subscribe(challenge: str = "1158201444", token: str = VERIFY_TOKEN) -> dict[str, str]:
    return {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": token}


class TestMetaSignature(WhatsAppKit):

    async def test_the_escaped_bytes_as_sent_verify_and_decode(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        body = meta_json(f.text(f.BUYER_MX, "wamid.esc-1", TEXT, "Añá"))
        assert b"\\u00bf" in body and b"\\ud83d\\udce6" in body  # as Meta sends it
        assert body.isascii()
        assert await post(harness, body, signature(body)) == 200
        stored = await ingest_gate.store.inbound(ingest_gate.results[0].message_id)
        assert stored is not None
        assert (stored.text, stored.sender_name) == (TEXT, "Añá")

    async def test_re_serialized_json_does_not_verify(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        escaped = meta_json(f.text(f.BUYER_MX, "wamid.esc-2", TEXT))
        # The same JSON document, written as a hub that re-encodes the parsed body would.
        unescaped = json.dumps(json.loads(escaped), ensure_ascii=False,
                               separators=(",", ":")).encode()
        assert json.loads(unescaped) == json.loads(escaped) and unescaped != escaped
        assert await post(harness, unescaped, signature(escaped)) == 403
        assert await post(harness, escaped, signature(unescaped)) == 403
        spaced = json.dumps(json.loads(escaped)).encode()  # ", " and ": " separators
        assert await post(harness, spaced, signature(escaped)) == 403
        assert ingest_gate.results == [] and await kit_quarantine.entries() == []
        assert await post(harness, unescaped, signature(unescaped)) == 200  # its own bytes

    async def test_missing_is_401_and_wrong_is_403(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        body = meta_json(f.text(f.BUYER_MX, "wamid.sig-1", "hola"))
        assert await post(harness, body, None) == 401
        assert await post(harness, body, "") == 401
        assert await post(harness, body, signature(body, "another app's secret")) == 403
        assert await post(harness, body, signature(body + b" ")) == 403
        assert await post(harness, body, signature(body)[len("sha256="):]) == 403  # no prefix
        sha1 = "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()
        assert await post(harness, body, sha1) == 403  # the old X-Hub-Signature scheme
        assert await post(harness, body, "sha256=" + "0" * 64) == 403
        assert await post(harness, body, "sha256=not-hex-ü") == 403
        assert ingest_gate.results == [] and await kit_quarantine.entries() == []
        assert await post(harness, body, signature(body)) == 200

    async def test_the_signature_is_checked_before_the_body_is_read_as_json(
            self, harness: WhatsAppHarness, kit_quarantine: KitQuarantine) -> None:
        garbage = b"\xff not json at all {"
        assert await post(harness, garbage, None) == 401
        assert await post(harness, garbage, signature(b"other")) == 403
        assert await kit_quarantine.entries() == []
        assert await post(harness, garbage, signature(garbage)) == 400  # authentic: kept
        assert len(await kit_quarantine.entries()) == 1

    async def test_the_handshake_echoes_the_challenge_for_the_right_token(
            self, harness: WhatsAppHarness) -> None:
        status, body, content_type = await handshake(harness, subscribe("1158201444"))
        assert (status, body) == (200, b"1158201444")
        assert content_type.startswith("text/plain")
        status, body, _ = await handshake(harness, subscribe("x" * 256))
        assert (status, body) == (200, b"x" * 256)

    async def test_the_handshake_refuses_a_wrong_or_missing_token(
            self, harness: WhatsAppHarness) -> None:
        for token in ("wrong", VERIFY_TOKEN + "x", VERIFY_TOKEN[:-1], "", "ñandú-🔑"):
            status, body, _ = await handshake(harness, subscribe(token=token))
            assert status == 403, token
            assert b"1158201444" not in body
        no_token = {k: v for k, v in subscribe().items() if k != "hub.verify_token"}
        assert (await handshake(harness, no_token))[0] == 403
        wrong_mode = {**subscribe(), "hub.mode": "unsubscribe"}
        assert (await handshake(harness, wrong_mode))[0] == 403
        no_mode = {k: v for k, v in subscribe().items() if k != "hub.mode"}
        assert (await handshake(harness, no_mode))[0] == 403

    async def test_the_handshake_refuses_a_missing_or_oversized_challenge(
            self, harness: WhatsAppHarness) -> None:
        no_challenge = {k: v for k, v in subscribe().items() if k != "hub.challenge"}
        assert (await handshake(harness, no_challenge))[0] == 400
        assert (await handshake(harness, subscribe("")))[0] == 400
        status, body, _ = await handshake(harness, subscribe("9" * 257))
        assert status == 400 and b"9" * 257 not in body
        status, body, _ = await handshake(harness, subscribe("1\r\nSet-Cookie: x=1"))
        assert status == 400 and b"Set-Cookie" not in body
