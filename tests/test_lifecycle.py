"""Retention: resolved conversations untouched past ``storage.resolved_retention_days`` are
deleted with everything they own (``storage.lifecycle.purge_expired``, one pass per call), and
so is a contact left with no conversation; open and recent conversations are kept."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from storage import keys, lifecycle
from storage.store import Store
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub, sign
from tests.test_erasure import dump_everything

# -- retention --------------------------------------------------------------------------------


async def _message(client: Any, i: str, sender: str, thread: str | None = None) -> str:
    payload = f'{{"id": "{i}", "sender": "{sender}", "text": "hola {i}"'
    payload += f', "thread": "{thread}"}}' if thread else "}"
    body = payload.encode()
    r = await client.post("/webhooks/api/shop", data=body,
                          headers={"X-Inboxhub-Signature": sign(body)})
    assert r.status == 200
    [mid] = (await r.json())["stored"]
    return str(mid)


async def test_retention_deletes_old_resolved_conversations_only(make_config: Any,
                                                                 store: Store,
                                                                 redis: Redis) -> None:
    async with running_hub(make_config()) as client:
        async def conv_of(mid: str) -> str:
            view = await store.get_message(mid)
            assert view is not None
            return view.conversation_id

        old_resolved = await conv_of(await _message(client, "a1", "alice"))
        old_open = await conv_of(await _message(client, "b1", "bob"))
        carol_resolved = await conv_of(await _message(client, "c1", "carol", "t1"))
        carol_open = await conv_of(await _message(client, "c2", "carol", "t2"))
        await asyncio.sleep(1.0)
        cutoff_at = time.time()
        await asyncio.sleep(0.2)
        new_resolved = await conv_of(await _message(client, "d1", "dave"))
        everyone = [old_resolved, old_open, carol_resolved, carol_open, new_resolved]

        async def routed() -> bool:
            return bool(await redis.exists(*(keys.routing_state(c) for c in everyone)) == 5)

        await eventually(routed)
        for cid in (old_resolved, carol_resolved, new_resolved):
            r = await client.post(f"/api/v1/conversations/{cid}/resolve",
                                  headers=auth(ADMIN_TOKEN))
            assert r.status == 200

        async def mirrored() -> bool:
            convs = await store.get_conversations([old_resolved, carol_resolved, new_resolved])
            return all(c.status == "resolved" for c in convs)

        await eventually(mirrored)
        alice = (await store.get_conversation(old_resolved)).contact_id  # type: ignore
        carol = (await store.get_conversation(carol_resolved)).contact_id  # type: ignore
        now = time.time()
        deleted = await lifecycle.purge_expired(store, now, retention_seconds=now - cutoff_at)
        assert deleted == 2
        for cid in (old_resolved, carol_resolved):
            r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
            assert r.status == 404
        for cid in (old_open, carol_open, new_resolved):
            r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
            assert r.status == 200
        # Nothing of the purged conversations is left; Alice had no other conversation, so her
        # contact went too; Carol still has one, so hers stays.
        dump = await dump_everything(redis)
        gone = [old_resolved, carol_resolved, alice, "hola a1", "hola c1", "alice"]
        assert [(k, v) for k, v in dump for n in gone if n.encode() in k + b" " + v] == []
        assert any(carol.encode() in k for k, _ in dump)
        # Nothing more is due: the next pass deletes nothing.
        assert await lifecycle.purge_expired(store, now, retention_seconds=now - cutoff_at) == 0
        # Alice writing again starts afresh.
        fresh = await conv_of(await _message(client, "a2", "alice"))
        assert fresh != old_resolved
        assert (await store.get_conversation(fresh)).message_count == 1  # type: ignore


async def test_retention_finishes_a_pass_that_crashed_half_way(store: Store,
                                                               redis: Redis) -> None:
    from channels.models import InboundMessage

    result = await store.ingest(InboundMessage(
        channel_type="api", channel_instance="shop", provider_message_id="x1", thread_id="x",
        sender_handle="xavier", text="hola xavier"))
    await store.update_conversation(result.conversation_id, {"status": "resolved"})
    fp = await lifecycle.footprint(store, result.conversation_id)
    assert fp is not None
    # The crash: detached (record and thread link gone), nothing else deleted yet.
    assert await lifecycle.detach(store, fp, only_resolved_before=time.time() + 10)
    now = time.time() + 100
    assert await lifecycle.purge_expired(store, now, retention_seconds=50) == 1
    dump = await dump_everything(redis)
    assert [(k, v) for k, v in dump
            if result.conversation_id.encode() in k + v or b"xavier" in k + v] == []


async def test_retention_off_by_default(store: Store) -> None:
    assert await lifecycle.purge_expired(store, time.time(), retention_seconds=0) == 0


async def test_the_running_hub_applies_retention_on_its_own(make_config: Any, store: Store,
                                                            redis: Redis) -> None:
    """The retention loop is wired into the hub: a resolved conversation past the retention
    (here 0.5 s) disappears without anyone calling the purge."""
    loaded = make_config(extra="", overrides={"storage": {"resolved_retention_days": 0.5 / 86400}})
    async with running_hub(loaded) as client:
        mid = await _message(client, "r1", "rita")
        view = await store.get_message(mid)
        assert view is not None
        cid = view.conversation_id
        await eventually(lambda: redis.exists(keys.routing_state(cid)))
        r = await client.post(f"/api/v1/conversations/{cid}/resolve", headers=auth(ADMIN_TOKEN))
        assert r.status == 200

        async def gone() -> bool:
            return await store.get_conversation(cid) is None

        await eventually(gone, timeout=10)
