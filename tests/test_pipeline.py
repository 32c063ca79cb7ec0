"""End to end through the real app: webhook -> store -> router -> API -> reply -> operator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis

from hub.keys import STORE
from storage.scripts import Scripts
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import (
    OperatorEndpoint,
    auth,
    eventually,
    running_hub,
    sign,
    signed_post_args,
)


async def _conversations(client: Any, **params: Any) -> list[dict[str, Any]]:
    resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN), params=params)
    assert resp.status == 200
    return (await resp.json())["conversations"]


async def test_message_to_reply_round_trip(make_config: Any, redis: Redis) -> None:
    async with OperatorEndpoint() as operator:
        # ana.agent serves the default queue (offline): with the default agent_scope "pools"
        # she may answer what waits there.
        loaded = make_config(outbound_url=operator.url,
                             extra='[[routing.agents]]\nid = "ana.agent"\n')
        async with running_hub(loaded) as client:
            payload = {"id": "ml-1", "sender": "buyer-1", "name": "Ana",
                       "text": "Hola, ¿dónde está mi pedido?", "language": "es-MX",
                       "market": "mx"}
            resp = await client.post("/webhooks/api/shop", **signed_post_args(payload))
            assert resp.status == 200, await resp.text()

            routed = await eventually(lambda: _routed(client))
            conv = routed[0]
            assert conv["channel"] == "api" and conv["channel_instance"] == "shop"
            assert conv["language"] == "es" and conv["market"] == "MX"
            assert conv["queue"] == "default" and conv["assignee"] is None

            resp = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                     json={"text": "¡Hola Ana! Sale hoy."},
                                     headers=auth(AGENT_TOKEN))
            assert resp.status == 202, await resp.text()
            reply = (await resp.json())["message"]
            assert reply["direction"] == "out" and reply["author"] == "ana.agent"

            await eventually(lambda: _async(len(operator.received) == 1))
            got = operator.received[0]
            assert got["text"] == "¡Hola Ana! Sale hoy."
            assert got["recipient"] == "buyer-1" and got["thread"] == "buyer-1"
            assert got["in_reply_to"] == "ml-1"
            assert operator.reply_ids == [reply["id"]]
            assert operator.bad_signatures == 0

            async def sent_status() -> dict[str, Any] | None:
                r = await client.get(f"/api/v1/conversations/{conv['id']}",
                                     headers=auth(AGENT_TOKEN))
                body = await r.json()
                msgs = body["messages"]
                return body if msgs[-1]["status"] == "sent" else None

            detail = await eventually(sent_status)
            msgs = detail["messages"]
            assert [m["direction"] for m in msgs] == ["in", "out"]
            assert [m["seq"] for m in msgs] == [1, 2]
            assert msgs[0]["text"] == "Hola, ¿dónde está mi pedido?"
            assert msgs[1]["provider_message_id"] == "op-1"


async def _async(value: Any) -> Any:
    return value


async def _routed(client: Any) -> list[dict[str, Any]] | None:
    convs = await _conversations(client)
    return convs if convs and convs[0]["status"] == "queued" else None


async def test_concurrent_redelivery_stores_one_message(make_config: Any) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        args = signed_post_args({"id": "dup-1", "sender": "b", "text": "same message"})

        async def post() -> int:
            r = await client.post("/webhooks/api/shop", **args)
            await r.read()
            return r.status

        statuses = await asyncio.gather(*(post() for _ in range(100)))
        assert statuses == [200] * 100
        convs = await _conversations(client)
        assert len(convs) == 1 and convs[0]["message_count"] == 1
        r = await client.get(f"/api/v1/conversations/{convs[0]['id']}", headers=auth(ADMIN_TOKEN))
        assert len((await r.json())["messages"]) == 1


async def test_messages_keep_sequence_order(make_config: Any) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        for i in range(20):
            r = await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": f"seq-{i}", "sender": "b", "text": f"message {i}"}))
            assert r.status == 200
        convs = await _conversations(client)
        r = await client.get(f"/api/v1/conversations/{convs[0]['id']}", headers=auth(ADMIN_TOKEN))
        msgs = (await r.json())["messages"]
        assert [m["text"] for m in msgs] == [f"message {i}" for i in range(20)]
        assert [m["seq"] for m in msgs] == list(range(1, 21))


async def test_operator_down_retries_then_dead_letters_then_retry_sends(make_config: Any) -> None:
    async with OperatorEndpoint() as operator:
        operator.down = True
        loaded = make_config(outbound_url=operator.url)
        async with running_hub(loaded) as client:
            await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "x1", "sender": "b", "text": "hi"}))
            conv = (await eventually(lambda: _routed(client)))[0]
            r = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                  json={"text": "answer"}, headers=auth(ADMIN_TOKEN))
            mid = (await r.json())["message"]["id"]

            async def failed() -> dict[str, Any] | None:
                r = await client.get(f"/api/v1/conversations/{conv['id']}",
                                     headers=auth(ADMIN_TOKEN))
                m = (await r.json())["messages"][-1]
                return m if m["status"] == "failed" else None

            message = await eventually(failed)
            assert message["attempts"] == 3  # max_attempts in the test config
            assert "503" in message["error"]
            assert operator.received == []

            r = await client.get("/api/v1/dlq", headers=auth(ADMIN_TOKEN))
            entries = (await r.json())["entries"]
            assert [e["message_id"] for e in entries] == [mid]
            assert "RetryableError" in entries[0]["error"]

            # Agents may not retry; supervisors and admins may.
            r = await client.post(f"/api/v1/dlq/{mid}/retry", headers=auth(AGENT_TOKEN))
            assert r.status == 403
            operator.down = False
            r = await client.post(f"/api/v1/dlq/{mid}/retry", headers=auth(ADMIN_TOKEN))
            assert r.status == 202
            await eventually(lambda: _async(len(operator.received) == 1))
            r = await client.get("/api/v1/dlq", headers=auth(ADMIN_TOKEN))
            assert (await r.json())["entries"] == []
            r = await client.post(f"/api/v1/dlq/{mid}/retry", headers=auth(ADMIN_TOKEN))
            assert r.status == 409  # no longer failed


async def test_rate_limit_is_retried_not_failed(make_config: Any) -> None:
    async with OperatorEndpoint() as operator:
        operator.fail_with = [(429, {"Retry-After": "0.1"}), (502, {})]
        loaded = make_config(outbound_url=operator.url)
        async with running_hub(loaded) as client:
            await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "x2", "sender": "b", "text": "hi"}))
            conv = (await eventually(lambda: _routed(client)))[0]
            await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                              json={"text": "answer"}, headers=auth(ADMIN_TOKEN))
            await eventually(lambda: _async(len(operator.received) == 1))
            assert operator.fail_with == []


async def test_permanent_error_dead_letters_at_once(make_config: Any) -> None:
    async with OperatorEndpoint() as operator:
        operator.fail_with = [(400, {})]
        loaded = make_config(outbound_url=operator.url)
        async with running_hub(loaded) as client:
            await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "x3", "sender": "b", "text": "hi"}))
            conv = (await eventually(lambda: _routed(client)))[0]
            await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                              json={"text": "answer"}, headers=auth(ADMIN_TOKEN))

            async def dlq() -> list[Any] | None:
                r = await client.get("/api/v1/dlq", headers=auth(ADMIN_TOKEN))
                return (await r.json())["entries"] or None

            entries = await dlq_wait(dlq)
            assert entries[0]["attempts"] == 1 and "PermanentError" in entries[0]["error"]


async def dlq_wait(check: Any) -> Any:
    return await eventually(check)


async def test_reply_validation_and_idempotency(make_config: Any) -> None:
    async with OperatorEndpoint() as operator:
        loaded = make_config(outbound_url=operator.url, channel_extra="max_text_length = 20")
        async with running_hub(loaded) as client:
            await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "x4", "sender": "b", "text": "hi"}))
            conv = (await eventually(lambda: _routed(client)))[0]
            url = f"/api/v1/conversations/{conv['id']}/replies"
            h = auth(ADMIN_TOKEN)
            r = await client.post(url, json={"text": "x" * 21}, headers=h)
            assert r.status == 422 and "20" in (await r.json())["error"]["message"]
            for bad in (b"{", b'{"text": 5}', b'{"text": ""}', b'{"txt": "a"}', b"[]"):
                r = await client.post(url, data=bad, headers=h)
                assert r.status == 400, bad
            r = await client.post("/api/v1/conversations/0.00ff/replies", json={"text": "a"},
                                  headers=h)
            assert r.status == 404
            r = await client.post("/api/v1/conversations/../../etc/replies", json={"text": "a"},
                                  headers=h)
            assert r.status == 404
            first = await client.post(url, json={"text": "once", "client_key": "k1"}, headers=h)
            second = await client.post(url, json={"text": "once", "client_key": "k1"}, headers=h)
            assert first.status == 202 and second.status == 200
            a, b = (await first.json())["message"], (await second.json())["message"]
            assert a["id"] == b["id"]
            await eventually(lambda: _async(len(operator.received) == 1))
            await asyncio.sleep(0.3)
            assert len(operator.received) == 1


async def test_api_requires_bearer_token(make_config: Any) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"},
                        {"Authorization": f"bearer{ADMIN_TOKEN}"}):
            r = await client.get("/api/v1/conversations", headers=headers)
            assert r.status == 401
            assert "Bearer" in r.headers["WWW-Authenticate"]
        r = await client.get("/api/v1/quarantine", headers=auth(AGENT_TOKEN))
        assert r.status == 403
        r = await client.get("/api/v1/conversations", headers=auth(AGENT_TOKEN))
        assert r.status == 200
        for bad in ("limit=0", "limit=abc", "limit=100000", "before=yesterday"):
            r = await client.get(f"/api/v1/conversations?{bad}", headers=auth(ADMIN_TOKEN))
            assert r.status == 400, bad


async def test_health_ready_metrics_openapi(make_config: Any) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        assert (await client.get("/healthz")).status == 200
        r = await client.get("/readyz")
        assert r.status == 200 and (await r.json())["status"] == "ready"
        await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "m-1", "sender": "b", "text": "hi"}))
        r = await client.get("/metrics")
        text = await r.text()
        assert r.status == 200 and r.content_type == "text/plain"
        assert 'inboxhub_ingested_messages_total{instance="shop",outcome="stored"} 1.0' in text
        assert "inboxhub_stream_backlog" in text
        r = await client.get("/api/v1/openapi.json")
        spec = await r.json()
        assert spec["openapi"].startswith("3.")
        assert "/api/v1/conversations/{id}/replies" in spec["paths"]
        conv_schema = spec["components"]["schemas"]["Conversation"]
        for field in ("id", "channel", "status", "language", "market", "assignee"):
            assert field in conv_schema["properties"]
        assert {"id", "direction", "text", "status"} <= set(
            spec["components"]["schemas"]["MessageView"]["properties"])


async def test_readyz_reports_redis_down(make_config: Any, tmp_path: Any) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        store = client.server.app[STORE]
        original, original_scripts = store.redis, store.scripts
        dead = Redis(unix_socket_path=str(tmp_path / "nope.sock"), socket_connect_timeout=0.5)
        store.redis, store.scripts = dead, Scripts(dead)
        try:
            r = await client.get("/readyz")
            assert r.status == 503
            # Ingest fails -> the webhook is not acknowledged, so the provider retries.
            r = await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "m-down", "sender": "b", "text": "hi"}))
            assert r.status == 503
        finally:
            store.redis, store.scripts = original, original_scripts
            await dead.aclose()
        r = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "m-down", "sender": "b", "text": "hi"}))
        assert r.status == 200
        assert json.loads(await r.text())["duplicates"] == 0


def test_sign_helper_matches_openssl_vector() -> None:
    # printf '{}' | openssl dgst -sha256 -hmac k
    expected = "add853b103fbcc936a194f9eb15e29c4ff08af6e47d5d1bca4f20218e31e4fff"
    assert sign(b"{}", "k") == "sha256=" + expected
