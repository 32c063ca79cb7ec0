"""The email channel across real hub processes (invariant 5) on the session's real Dovecot.

Each hub is ``python -m hub serve`` with one ``type = "email"`` channel on the same mailbox and
one Redis. Two hubs: exactly one holds the mailbox's lease and has an IMAP session open (the
IDLE one); 20 messages are stored exactly once; the holder killed with SIGKILL is replaced
within the lease's TTL and the messages delivered meanwhile arrive, none lost, none doubled.
One hub killed between storing a batch and checkpointing its cursor (the hub's crash hook
``INBOXHUB_TEST_CRASH_POINT=poller:before-checkpoint``): after a restart it fetches the batch
again and the ingest drops every message of it by Message-ID (or, for a mail without one, by
content digest), so each message is in its conversation once and the cursor catches up.

IMAP sessions are counted from the kernel's view: the TCP connections to Dovecot's port whose
socket belongs to the process (``/proc/PID/fd`` against ``/proc/net/tcp``).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from channels.email.imap import decode_cursor, encode_cursor
from channels.services.cursors import cursor_lease_name
from channels.services.leases import LeaseInfo
from hub.crashpoints import BEFORE_CHECKPOINT
from storage.cursors import RedisCursorStore
from storage.leases import RedisLeaseManager
from storage.store import Store
from tests.conftest import RedisServer
from tests.helpers import eventually
from tests.test_crash_recovery import CRASH_ENV, HubProcess, get_json, hub_processes, make_hub

INSTANCE = "mail"
MAILBOX = "INBOX"
LEASE_SECONDS = 2.0
LEASE = cursor_lease_name(INSTANCE, MAILBOX)
PASSWORD_ENV = "IH_TEST_IMAP_PASSWORD"


def channel_toml(dovecot: Any) -> str:
    return f"""
[[channels]]
name = "{INSTANCE}"
type = "email"
[channels.settings]
address = "ventas@tienda.test"
imap_host = "{dovecot.host}"
imap_port = {dovecot.port}
imap_security = "none"
imap_username = "{dovecot.user}"
imap_password = "env:{PASSWORD_ENV}"
smtp_host = "127.0.0.1"
smtp_port = 9
smtp_security = "none"
lease_seconds = {LEASE_SECONDS}
"""


def email_hub(tmp_path: Path, name: str, redis_url: str, dovecot: Any,
              env: dict[str, str] | None = None) -> HubProcess:
    return make_hub(tmp_path, name, redis_url, extra=channel_toml(dovecot),
                    env={PASSWORD_ENV: dovecot.password, **(env or {})})


class Mails:
    """Distinct buyer mails; ``ids[n]`` is what the hub stores as the provider message id."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.raw: dict[int, bytes] = {}

    def make(self, n: int, *, message_id: bool = True) -> bytes:
        header = f"Message-ID: <m{n}-{self.run}@buyer.test>\r\n" if message_id else ""
        self.raw[n] = (
            f"From: Buyer {n % 3} <buyer{n % 3}@buyer.test>\r\nTo: ventas@tienda.test\r\n"
            f"Subject: pedido {n}\r\nDate: Mon, 2 Mar 2026 10:{n % 60:02d}:00 +0000\r\n"
            f"{header}Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Hola, ¿dónde está mi pedido {n}-{self.run}?\r\n").encode()
        return self.raw[n]

    def text(self, n: int) -> str:
        return f"Hola, ¿dónde está mi pedido {n}-{self.run}?"


async def stored_texts(http: aiohttp.ClientSession, hub: HubProcess) -> list[str]:
    """Every inbound message of the email channel, through the hub's API (one per stored
    message: a duplicate shows as a repeated text)."""
    data = await get_json(http, hub.base + "/api/v1/conversations?limit=200")
    texts: list[str] = []
    for conversation in data["conversations"]:
        detail = await get_json(
            http, f"{hub.base}/api/v1/conversations/{conversation['id']}?limit=500")
        texts += [m["text"].strip() for m in detail["messages"]
                  if m["direction"] == "in" and m["channel_instance"] == INSTANCE]
    return texts


async def ingested(http: aiohttp.ClientSession, hub: HubProcess) -> dict[str, float]:
    """This process's ``inboxhub_ingested_messages`` for the email channel, by outcome."""
    async with http.get(hub.base + "/metrics") as resp:
        text = await resp.text()
    counts = {"stored": 0.0, "duplicate": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "inboxhub_ingested_messages_total" and \
                    sample.labels.get("instance") == INSTANCE:
                counts[sample.labels["outcome"]] = sample.value
    return counts


def pid_of(hub: HubProcess) -> int:
    assert hub.proc is not None
    return hub.proc.pid


def imap_sessions(pid: int, port: int) -> int:
    """Established TCP connections from process ``pid`` to 127.0.0.1:``port``."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0  # gone
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


async def holder(redis: Redis) -> LeaseInfo | None:
    return await RedisLeaseManager(redis, owner="test").holder(LEASE)


async def held_by(redis: Redis, hub: HubProcess) -> LeaseInfo | None:
    lease = await holder(redis)
    return lease if lease is not None and f"-{pid_of(hub)}-" in lease.owner else None


async def cursor_uid(redis: Redis) -> int | None:
    value = await RedisCursorStore(redis).load(INSTANCE, MAILBOX)
    return None if value is None else decode_cursor(value)[1]


def mailbox_uids(dovecot: Any) -> list[int]:
    conn = dovecot.imap()
    try:
        typ, data = conn.uid("SEARCH", "ALL")
        assert typ == "OK", data
        return [int(u) for u in data[0].split()]
    finally:
        conn.logout()


async def test_two_hubs_one_idle_session_and_a_kill_9_takeover(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None, dovecot: Any
) -> None:
    mails = Mails()
    async with hub_processes() as hubs, aiohttp.ClientSession() as http:
        a = email_hub(tmp_path, "a", redis_server.url, dovecot)
        b = email_hub(tmp_path, "b", redis_server.url, dovecot)
        hubs += [a, b]
        for hub in hubs:
            hub.start()
        await asyncio.gather(*(hub.wait_ready(http) for hub in hubs))

        async def the_holder() -> HubProcess | None:
            for hub in hubs:
                if await held_by(redis, hub):
                    return hub
            return None

        polling = await eventually(the_holder, timeout=10)
        standby = b if polling is a else a

        async def one_session() -> bool:
            return (imap_sessions(pid_of(polling), dovecot.port),
                    imap_sessions(pid_of(standby), dovecot.port)) == (1, 0)

        await eventually(one_session, timeout=10)

        first = [mails.make(n) for n in range(1, 21)]
        for batch in range(4):  # spread over time, while both processes run
            for raw in first[batch * 5:(batch + 1) * 5]:
                await dovecot.adeliver(raw)
            await asyncio.sleep(0.3)

        async def stored(hub: HubProcess, count: int) -> list[str] | None:
            texts = await stored_texts(http, hub)
            return texts if len(texts) >= count else None

        texts = await eventually(lambda: stored(standby, 20), timeout=15)
        assert sorted(texts) == sorted(mails.text(n) for n in range(1, 21))
        counts = {hub.base: await ingested(http, hub) for hub in hubs}
        assert counts[polling.base] == {"stored": 20, "duplicate": 0}, counts
        assert counts[standby.base] == {"stored": 0, "duplicate": 0}, counts
        assert await one_session(), "the standby opened an IMAP session"
        last = max(await asyncio.to_thread(mailbox_uids, dovecot))
        await eventually(lambda: _equals(cursor_uid(redis), last))
        dead = await held_by(redis, polling)
        assert dead is not None

        os.kill(pid_of(polling), signal.SIGKILL)
        killed_at = time.monotonic()
        assert await polling.wait_exit(10) == -signal.SIGKILL
        for n in range(21, 26):  # while nobody polls the mailbox
            await dovecot.adeliver(mails.make(n))

        taken = await eventually(lambda: held_by(redis, standby), timeout=LEASE_SECONDS + 10,
                                 interval=0.02)
        takeover = time.monotonic() - killed_at
        print(f"takeover after SIGKILL: {takeover:.2f} s (lease TTL {LEASE_SECONDS} s)")
        # Renewed every TTL/3, so the dead lease ran out at most a TTL after the kill; the
        # margin is for a loaded test machine.
        assert takeover < LEASE_SECONDS + 2.0, f"takeover took {takeover:.2f} s"
        assert taken.fence > dead.fence

        texts = await eventually(lambda: stored(standby, 25), timeout=15)
        doubled = [t for t, c in collections.Counter(texts).items() if c > 1]
        assert not doubled, f"stored twice: {doubled}"
        assert sorted(texts) == sorted(mails.text(n) for n in range(1, 26)), "lost or doubled"
        assert await ingested(http, standby) == {"stored": 5, "duplicate": 0}
        assert imap_sessions(pid_of(standby), dovecot.port) == 1
        last = max(await asyncio.to_thread(mailbox_uids, dovecot))
        await eventually(lambda: _equals(cursor_uid(redis), last))
        # The dead holder's fence can no longer move the cursor back.
        cursors = RedisCursorStore(redis)
        now = await cursors.load(INSTANCE, MAILBOX)
        assert now is not None
        assert not await cursors.save(INSTANCE, MAILBOX, encode_cursor(decode_cursor(now)[0], 1),
                                      fence=dead.fence)
        assert await cursors.load(INSTANCE, MAILBOX) == now


async def test_kill_9_between_store_and_checkpoint_neither_loses_nor_doubles(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, store: Store, hub_env: None,
    dovecot: Any,
) -> None:
    mails = Mails()
    # One mail without a Message-ID: its provider id is the content digest, the dedupe key
    # that must survive the refetch too.
    for n in range(1, 6):
        await dovecot.adeliver(mails.make(n, message_id=n != 3))
    async with hub_processes() as hubs, aiohttp.ClientSession() as http:
        a = email_hub(tmp_path, "a", redis_server.url, dovecot,
                      env={CRASH_ENV: BEFORE_CHECKPOINT})
        hubs.append(a)
        a.start()
        # The first poll fetches and stores the five, then the hub kills itself before the
        # cursor checkpoint.
        assert await a.wait_exit(30) == -signal.SIGKILL, a.log_tail()
        assert await RedisCursorStore(redis).load(INSTANCE, MAILBOX) is None
        texts_in_redis = [m.text.strip() for c in await store.list_conversations(limit=200)
                          for m in await store.get_messages(c.id)]
        assert sorted(texts_in_redis) == sorted(mails.text(n) for n in range(1, 6))

        for n in (6, 7):  # delivered while the hub is down
            await dovecot.adeliver(mails.make(n))
        a.extra_env.pop(CRASH_ENV)  # the same hub, restarted without the hook
        a.start()
        await a.wait_ready(http)

        async def all_seven() -> list[str] | None:
            texts = await stored_texts(http, a)
            return texts if len(texts) >= 7 else None

        texts = await eventually(all_seven, timeout=LEASE_SECONDS + 15)
        last = max(await asyncio.to_thread(mailbox_uids, dovecot))
        await eventually(lambda: _equals(cursor_uid(redis), last))
        texts = await stored_texts(http, a)  # after the checkpoint: the refetch is done
        doubled = [t for t, c in collections.Counter(texts).items() if c > 1]
        assert not doubled, f"stored twice: {doubled}"
        assert sorted(texts) == sorted(mails.text(n) for n in range(1, 8)), "lost or doubled"
        # The restarted process fetched the batch again: five duplicates dropped, two new.
        assert await ingested(http, a) == {"stored": 2, "duplicate": 5}


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
