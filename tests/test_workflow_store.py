"""The workflow data on a real Redis: the snooze alarm (due, stale, resilient to a Redis that
is away), the bound on notes, nothing written for an unknown or erased conversation, the
buyer's next message reopening, and erasure taking notes and snoozes with the conversation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.models import InboundMessage
from channels.supervisor import Backoff, Supervisor, TaskHealth
from hub.workflow_api import SnoozeWake
from storage import lifecycle, workflow
from storage.store import Store, UnknownConversation
from storage.workflow import ConversationFull, Resolved, Workflow
from tests.helpers import eventually


def msg(pid: str, thread: str = "t1", sender: str = "s1") -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance="shop", provider_message_id=pid,
                          thread_id=thread, sender_handle=sender, text="¿y mi pedido? 📦")


async def _conversation(store: Store, thread: str = "t1") -> str:
    return (await store.ingest(msg(f"{thread}-1", thread))).conversation_id


async def _record(store: Store, cid: str) -> dict[bytes, bytes]:
    k = store.keys_for(cid)
    assert k is not None
    raw: dict[bytes, bytes] = await store.redis.hgetall(k.conversation(cid))
    return raw


async def test_snoozed_conversations_wake_at_their_time(store: Store) -> None:
    flow = Workflow(store)
    a, b, c = [await _conversation(store, t) for t in ("a", "b", "c")]
    now = time.time()
    await flow.set_status(a, "snoozed", now + 100)
    await flow.set_status(b, "snoozed", now + 200)
    await flow.set_status(c, "snoozed", now + 50)
    await flow.set_status(c, "open")  # opened by hand: its alarm is stale
    assert await flow.wake_due(now) == []
    assert await flow.wake_due(now + 150) == [a]
    assert (await store.get_conversation(a)).work_status == "open"  # type: ignore[union-attr]
    assert (await store.get_conversation(b)).work_status == "snoozed"  # type: ignore[union-attr]
    await flow.set_status(b, "snoozed", now + 400)  # snoozed again, later: one alarm, moved
    assert await flow.wake_due(now + 300) == []
    assert await flow.wake_due(now + 500) == [b]
    for k in store.partition_keys():
        assert await store.redis.zcard(k.snoozed) == 0


async def test_many_due_at_once_wake_in_batches(store: Store) -> None:
    flow = Workflow(store)
    ids = [await _conversation(store, f"t{i}") for i in range(workflow.WAKE_BATCH + 30)]
    now = time.time()
    for cid in ids:
        await flow.set_status(cid, "snoozed", now + 10)
    assert sorted(await flow.wake_due(now + 11)) == sorted(ids)


async def test_the_buyer_writing_again_reopens(store: Store) -> None:
    flow = Workflow(store)
    cid = await _conversation(store)
    await flow.set_status(cid, "snoozed", time.time() + 3600)
    await store.ingest(msg("t1-2"))
    conversation = await store.get_conversation(cid)
    assert conversation is not None
    assert conversation.work_status == "open" and conversation.snoozed_until is None
    assert await flow.wake_due(time.time() + 7200) == []  # the alarm left behind is dropped
    await flow.set_status(cid, "pending")
    await store.ingest(msg("t1-2"))  # a redelivery is no new message: still pending
    assert (await store.get_conversation(cid)).work_status == "pending"  # type: ignore[union-attr]
    await store.ingest(msg("t1-3"))
    assert (await store.get_conversation(cid)).work_status == "open"  # type: ignore[union-attr]


async def test_resolved_unknown_and_erased_conversations(store: Store) -> None:
    flow = Workflow(store)
    cid = await _conversation(store)
    await store.update_conversation(cid, {"status": "resolved"})
    assert (await store.get_conversation(cid)).work_status == "resolved"  # type: ignore[union-attr]
    with pytest.raises(Resolved):
        await flow.set_status(cid, "pending")
    for unknown in ("0.00ff00ff", "1.00ff00ff"):
        with pytest.raises(UnknownConversation):
            await flow.set_status(unknown, "snoozed", time.time() + 60)
        with pytest.raises(UnknownConversation):
            await flow.add_note(unknown, "ana", "hola")
        with pytest.raises(UnknownConversation):
            await flow.set_priority(unknown, "high")
    for junk in ("nope", "9.zz"):
        with pytest.raises(UnknownConversation):
            await flow.add_note(junk, "ana", "hola")
    assert await store.redis.keys("ih:{p*}:conv:0.00ff00ff*") == []
    assert await store.redis.keys("ih:{p*}:conv:1.00ff00ff*") == []


async def test_notes_are_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow, "MAX_NOTES", 3)
    flow = Workflow(store)
    cid = await _conversation(store)
    for n in range(3):
        await flow.add_note(cid, "ana", f"nota {n}")
    with pytest.raises(ConversationFull):
        await flow.add_note(cid, "ana", "una más")
    notes, more = await flow.notes(cid)
    assert [n.text for n in notes] == ["nota 0", "nota 1", "nota 2"] and more is None


async def test_erasure_takes_notes_and_alarms(store: Store) -> None:
    flow = Workflow(store)
    cid = await _conversation(store)
    await flow.add_note(cid, "ana", "el comprador se llama Ana Pérez")
    await flow.set_status(cid, "snoozed", time.time() + 3600)
    fp = await lifecycle.footprint(store, cid)
    assert fp is not None
    await lifecycle.detach(store, fp, only_resolved_before=None)
    await lifecycle.delete_conversations(store, [fp])
    k = store.keys_for(cid)
    assert k is not None
    assert not await store.redis.exists(k.conversation_notes(cid))
    assert await store.redis.zscore(k.snoozed, cid) is None
    with pytest.raises(UnknownConversation):
        await flow.add_note(cid, "ana", "tarde")
    assert not await store.redis.exists(k.conversation(cid))


async def test_the_alarm_survives_redis_being_away(store: Store, tmp_path: Path) -> None:
    """Like every loop: a Redis it cannot reach backs off (and shows in readiness), and the
    alarms are served once Redis answers again."""
    cid = await _conversation(store)
    await Workflow(store).set_status(cid, "snoozed", time.time() + 0.2)
    away = Redis(unix_socket_path=str(tmp_path / "no-redis.sock"), socket_timeout=0.2)
    wake = SnoozeWake(Workflow(Store(away, partitions=store.partitions)))
    health = TaskHealth()
    supervisor = Supervisor("workflow-test", health, backoff=Backoff(base=0.01, cap=0.05))
    supervisor.loop("snooze-wake", wake.iteration, idle_seconds=0.05)
    try:
        await eventually(lambda: _status(health, "backing_off"))
        assert (await store.get_conversation(cid)).work_status == "snoozed"  # type: ignore[union-attr]
        wake.flow = Workflow(store)  # Redis is back
        await eventually(lambda: _woken(store, cid))
        await eventually(lambda: _status(health, "running"))
    finally:
        supervisor.stop.set()
        await supervisor.wait(2.0)
        await supervisor.cancel_all()
        await away.aclose()


async def _status(health: TaskHealth, want: str) -> bool:
    await asyncio.sleep(0)
    return any(s.name == "snooze-wake" and s.status == want for s in health.snapshot())


async def _woken(store: Store, cid: str) -> bool:
    conversation = await store.get_conversation(cid)
    return conversation is not None and conversation.work_status == "open"
