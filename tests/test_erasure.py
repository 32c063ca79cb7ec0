"""Erasure of a buyer: ``DELETE /api/v1/contacts/{id}`` leaves nothing of theirs in Redis.

The buyer has two conversations (one assigned to an agent, one waiting), an agent's reply
that failed and was dead-lettered, a reply idempotency key, SLA and no-reply timers, a sticky
agent and a quarantined body. After the erasure every key of the database is SCANned, and
every value of every string, hash, list, set, sorted set and stream is read, for the buyer's
handle, name, ids and message text: nothing is found. Another buyer's data is untouched, the
agent's capacity is free again (and goes to the buyer waiting behind), and the audit entry
says what was done without saying about whom."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from storage import keys
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub, sign

HANDLE = "ana.souza@example.com.br"
NAME = "Ana Beatriz Souza"
TEXT = "Meu pedido ZX-4711 chegou quebrado"
ROUTING = """
[routing]
languages = ["es", "pt", "en"]
sticky_hours = 24
reassign_after_no_reply_minutes = 30

[[routing.queues]]
name = "default"
[[routing.queues.steps]]
[[routing.queues.steps]]
after_seconds = 600

[routing.sla.chat]
first_response_minutes = 60
resolution_minutes = 600

[[routing.agents]]
id = "ana.agent"
name = "Agent"
languages = { es = 5, pt = 5, en = 5 }
capacity = { chat = 1 }
"""


async def _post(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    r = await client.post("/webhooks/api/shop", data=body,
                          headers={"X-Inboxhub-Signature": sign(body)})
    assert r.status in (200, 400), await r.text()
    return await r.json()  # type: ignore[no-any-return]


async def _conversations(client: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    return (await r.json())["conversations"]  # type: ignore[no-any-return]


async def dump_everything(redis: Redis) -> list[tuple[bytes, bytes]]:
    """(key, one value or field or member) for every key in the database."""
    out: list[tuple[bytes, bytes]] = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        out.append((key, key))
        if kind == "string":
            out.append((key, await redis.get(key) or b""))
        elif kind == "hash":
            for f, v in (await redis.hgetall(key)).items():
                out += [(key, f), (key, v)]
        elif kind == "list":
            out += [(key, v) for v in await redis.lrange(key, 0, -1)]
        elif kind == "set":
            out += [(key, v) for v in await redis.smembers(key)]
        elif kind == "zset":
            out += [(key, v) for v in await redis.zrange(key, 0, -1)]
        elif kind == "stream":
            for eid, fields in await redis.xrange(key):
                out.append((key, eid))
                for f, v in fields.items():
                    out += [(key, f), (key, v)]
        else:
            raise AssertionError(f"unexpected key type {kind} for {key!r}")
    return out


async def test_nothing_of_the_buyer_is_left(make_config: Any, store: Store,
                                            redis: Redis) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        r = await client.post("/api/v1/agents/ana.agent/status", json={"status": "online"},
                              headers=auth(AGENT_TOKEN))
        assert r.status == 200
        for i, thread in enumerate(["order-1", "order-2"]):
            await _post(client, {"id": f"ana-m{i}", "sender": HANDLE, "name": NAME,
                                 "thread": f"ana-{thread}", "text": f"{TEXT} ({thread})"})
        # Authentic but unusable: quarantined, with the buyer's handle in it.
        bad = await _post(client, {"id": "ana-bad", "sender": HANDLE, "text": 5})
        assert "error" in bad

        async def ana_conversations() -> list[dict[str, Any]]:
            convs = [c for c in await _conversations(client) if c["contact_handle"] == HANDLE]
            # The assignee reaches the record through the routing events' mirror, a moment
            # after the queue.
            ready = len(convs) == 2 and all(c["queue"] for c in convs) and \
                any(c["assignee"] == "ana.agent" for c in convs)
            return convs if ready else []

        ana = await eventually(ana_conversations)
        contact_id = ana[0]["contact_id"]
        assert {c["contact_id"] for c in ana} == {contact_id}
        assigned = next(c for c in ana if c["assignee"] == "ana.agent")
        # The agent answers (the endpoint is unreachable: retried, then dead-lettered).
        r = await client.post(f"/api/v1/conversations/{assigned['id']}/replies",
                              json={"text": "Sinto muito, Ana!", "client_key": "k-ana-1"},
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 202
        reply_id = (await r.json())["message"]["id"]

        async def dead() -> bool:
            return any(d.message_id == reply_id for d in await store.list_dead_letters())

        await eventually(dead, timeout=20)
        # Another buyer waits behind Ana's conversations (the agent has capacity 1).
        await _post(client, {"id": "bob-m1", "sender": "bob@example.com", "name": "Bob",
                             "text": "Where is my parcel?"})

        async def bob() -> dict[str, Any] | None:
            convs = [c for c in await _conversations(client)
                     if c["contact_handle"] == "bob@example.com" and c["queue"]]
            return convs[0] if convs else None

        bob_conv = await eventually(bob)
        assert bob_conv["assignee"] in (None, "")

        ids = {contact_id, reply_id, *(c["id"] for c in ana)}
        for c in ana:
            r = await client.get(f"/api/v1/conversations/{c['id']}", headers=auth(ADMIN_TOKEN))
            ids |= {m["id"] for m in (await r.json())["messages"]}
        needles = [HANDLE, NAME, TEXT, "ZX-4711", "ana-m0", "ana-m1", "ana-bad",
                   "ana-order-1", "ana-order-2", "k-ana-1", "Sinto muito", *ids]
        before = await dump_everything(redis)
        for needle in needles:  # the setup really did spread the buyer everywhere
            assert any(needle.encode() in v for _, v in before), needle
        assert any(k == keys.sticky(contact_id).encode() for k, _ in before)

        r = await client.delete(f"/api/v1/contacts/{contact_id}", headers=auth(AGENT_TOKEN))
        assert r.status == 403
        r = await client.delete(f"/api/v1/contacts/{contact_id}", headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()
        erased = (await r.json())["erased"]
        assert erased["conversations"] == 2 and erased["messages"] == 3
        assert erased["quarantined"] == 1

        # The freed capacity goes to the buyer who was waiting.
        async def bob_assigned() -> bool:
            c = await bob()
            return c is not None and c["assignee"] == "ana.agent"

        await eventually(bob_assigned)
        r = await client.get(f"/api/v1/conversations/{bob_conv['id']}", headers=auth(ADMIN_TOKEN))
        assert [m["text"] for m in (await r.json())["messages"]] == ["Where is my parcel?"]
        r = await client.delete(f"/api/v1/contacts/{contact_id}", headers=auth(ADMIN_TOKEN))
        assert r.status == 404

        leftovers = [(key, value) for key, value in await dump_everything(redis)
                     for needle in needles if needle.encode() in key + b" " + value]
        assert leftovers == []

        [audit] = await redis.xrange(keys.AUDIT)
        fields = {k.decode(): v.decode() for k, v in audit[1].items()}
        assert fields["action"] == "erase_contact" and fields["by"] == "admin"
        assert fields["conversations"] == "2" and fields["messages"] == "3"

        # A new message from the same buyer is a new conversation, nothing revived.
        await _post(client, {"id": "ana-m9", "sender": HANDLE, "text": "Olá de novo"})

        async def fresh() -> list[dict[str, Any]]:
            return [c for c in await _conversations(client) if c["contact_handle"] == HANDLE]

        [new] = await eventually(fresh)
        assert new["id"] not in ids and new["contact_id"] != contact_id
        assert new["message_count"] == 1


async def test_an_interrupted_erasure_is_finished_by_the_next(store: Store,
                                                              redis: Redis) -> None:
    from channels.models import InboundMessage
    from hub.erasure import erase_contact
    from routing.classify.skill import SkillClassifier
    from routing.config import RoutingConfig
    from routing.engine import RoutingEngine
    from storage import lifecycle

    engine = RoutingEngine(store, RoutingConfig(), identifier=None,
                           skills=SkillClassifier.default())
    results = [await store.ingest(InboundMessage(
        channel_type="api", channel_instance="shop", provider_message_id=f"z{i}",
        thread_id=f"zoe-{i}", sender_handle="zoe@example.org", text=f"hola zoe {i}"))
        for i in range(2)]
    [contact] = {(await store.get_conversation(r.conversation_id)).contact_id  # type: ignore
                 for r in results}
    # The first run died right after detaching one conversation.
    fp = await lifecycle.footprint(store, results[0].conversation_id)
    assert fp is not None and await lifecycle.detach(store, fp, only_resolved_before=None)
    report = await erase_contact(store, engine, contact, actor="admin")
    assert report.conversations == 2 and report.messages == 2
    needles = [b"zoe", contact.encode(), *(r.conversation_id.encode() for r in results)]
    assert [(k, v) for k, v in await dump_everything(redis)
            for n in needles if n in k + b" " + v] == []
