"""Invariant 5, proven with real processes: a hub killed with SIGKILL between handling a stream
entry and acknowledging it loses nothing, and the hub that reclaims the entry does not repeat
an effect that already happened.

Hub A runs with the worker's test hook ``INBOXHUB_TEST_CRASH_POINT=<worker>:before-ack`` and
SIGKILLs itself right after handling its first entry; hub B (no hook) shares the same Redis and
must reclaim the pending entry once it has been idle for ``claim_idle_seconds`` (1 s here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from storage.keys import PartitionKeys, partition_of
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, RedisServer, write_config
from tests.helpers import OperatorEndpoint, auth, eventually, signed_post_args

PARTITIONS = 2  # write_config's default
CRASH_ENV = "INBOXHUB_TEST_CRASH_POINT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    """``python -m hub --config FILE serve`` as a child process, output kept in a log file."""

    def __init__(self, config: Path, port: int, log: Path, env: dict[str, str] | None = None):
        self.config = config
        self.port = port
        self.log = log
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ)
        env.pop(CRASH_ENV, None)
        env.update(self.extra_env)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "--config", str(self.config), "serve"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"hub exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(self.base + "/readyz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(f"hub not ready within {timeout}s:\n{self.log_tail()}")

    async def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.05)
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.asynccontextmanager
async def hub_processes() -> AsyncIterator[list[HubProcess]]:
    """Every hub appended to the list is killed and reaped on the way out, whatever happens."""
    hubs: list[HubProcess] = []
    try:
        yield hubs
    finally:
        for hub in hubs:
            hub.kill()


def make_hub(tmp_path: Path, name: str, redis_url: str, *, env: dict[str, str] | None = None,
             **config: Any) -> HubProcess:
    home = tmp_path / name
    home.mkdir()
    port = free_port()
    path = write_config(home, redis_url, port=port, **config)
    return HubProcess(path, port, home / "hub.log", env)


async def pending(redis: Redis, stream: str, group: str) -> dict[str, Any]:
    return await redis.xpending(stream, group)  # type: ignore[no-any-return]


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=auth(ADMIN_TOKEN)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def the_conversation(http: aiohttp.ClientSession, hub: HubProcess) -> dict[str, Any]:
    data = await get_json(http, hub.base + "/api/v1/conversations")
    assert len(data["conversations"]) == 1, data
    return data["conversations"][0]  # type: ignore[no-any-return]


async def test_router_killed_before_ack_is_reclaimed_and_finished(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, store: Store, hub_env: None
) -> None:
    buyer = "buyer-router-crash"
    inbound = PartitionKeys(partition_of("shop", buyer, PARTITIONS)).inbound
    payload = {"id": "m-1", "sender": buyer, "text": "Hola, ¿dónde está mi pedido?",
               "language": "es", "market": "mx"}
    async with hub_processes() as hubs, aiohttp.ClientSession() as http:
        a = make_hub(tmp_path, "a", redis_server.url, env={CRASH_ENV: "router:before-ack"})
        hubs.append(a)
        a.start()
        await a.wait_ready(http)

        # The webhook is answered only once the message is durable, before routing runs.
        async with http.post(a.base + "/webhooks/api/shop", **signed_post_args(payload)) as resp:
            assert resp.status == 200, await resp.text()
            stored = (await resp.json())["stored"]
        assert len(stored) == 1
        message_id = stored[0]

        assert await a.wait_exit(15) == -signal.SIGKILL, a.log_tail()
        assert a.proc is not None

        # The entry is still pending, owned by the dead consumer of hub A.
        info = await pending(redis, inbound, "router")
        assert info["pending"] == 1, info
        [(owner, count)] = [(c["name"].decode(), c["pending"]) for c in info["consumers"]]
        assert f"-{a.proc.pid}-" in owner and count == 1
        view = await store.get_message(message_id)
        assert view is not None and view.status == "received"
        conversation_id = view.conversation_id

        b = make_hub(tmp_path, "b", redis_server.url)
        hubs.append(b)
        b.start()
        await b.wait_ready(http)

        async def routed() -> dict[str, Any] | None:
            conv = await the_conversation(http, b)
            return conv if conv["status"] == "queued" else None

        conv = await eventually(routed, timeout=20)
        assert conv["id"] == conversation_id
        assert conv["queue"]
        assert conv["market"] == "MX"
        assert conv["message_count"] == 1

        async def drained() -> bool:
            return (await pending(redis, inbound, "router"))["pending"] == 0 and \
                await redis.xlen(inbound) == 0

        await eventually(drained, timeout=10)

        detail = await get_json(http, f"{b.base}/api/v1/conversations/{conversation_id}")
        assert [m["id"] for m in detail["messages"]] == [message_id]
        assert detail["messages"][0]["text"] == payload["text"]
        # Classified and enqueued once: the redelivered entry did not route the conversation a
        # second time.
        routing = await get_json(http, f"{b.base}/api/v1/conversations/{conversation_id}/routing")
        classified = [r for r in routing["log"] if r.get("event") == "classified"]
        assert len(classified) == 1, routing["log"]
        assert classified[0]["queue"] == conv["queue"]

        # The provider retrying the same webhook is acknowledged and dropped (no duplicate).
        async with http.post(b.base + "/webhooks/api/shop", **signed_post_args(payload)) as resp:
            assert resp.status == 200
            assert (await resp.json()) == {"stored": [message_id], "duplicates": 1}
        detail = await get_json(http, f"{b.base}/api/v1/conversations/{conversation_id}")
        assert len(detail["messages"]) == 1
        assert detail["conversation"]["message_count"] == 1
        assert b.proc is not None and b.proc.poll() is None, b.log_tail()


async def test_sender_killed_before_ack_does_not_send_twice(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, store: Store, hub_env: None
) -> None:
    buyer = "buyer-sender-crash"
    keys = PartitionKeys(partition_of("shop", buyer, PARTITIONS))
    async with OperatorEndpoint() as operator, hub_processes() as hubs, \
            aiohttp.ClientSession() as http:
        a = make_hub(tmp_path, "a", redis_server.url, env={CRASH_ENV: "sender:before-ack"},
                     outbound_url=operator.url)
        hubs.append(a)
        a.start()
        await a.wait_ready(http)

        payload = {"id": "m-1", "sender": buyer, "text": "Where is my parcel?"}
        async with http.post(a.base + "/webhooks/api/shop", **signed_post_args(payload)) as resp:
            assert resp.status == 200, await resp.text()

        async def queued() -> dict[str, Any] | None:
            conv = await the_conversation(http, a)
            return conv if conv["status"] == "queued" else None

        conv = await eventually(queued, timeout=10)
        async with http.post(f"{a.base}/api/v1/conversations/{conv['id']}/replies",
                             json={"text": "It ships today."}, headers=auth(ADMIN_TOKEN)) as resp:
            assert resp.status == 202, await resp.text()
            reply_id = (await resp.json())["message"]["id"]

        assert await a.wait_exit(15) == -signal.SIGKILL, a.log_tail()
        # A delivered the reply and recorded it before dying; only the ack is missing.
        assert operator.reply_ids == [reply_id]
        assert operator.received[0]["text"] == "It ships today."
        view = await store.get_message(reply_id)
        assert view is not None and view.status == "sent"
        assert view.provider_message_id == "op-1"
        assert (await pending(redis, keys.outbox, "sender"))["pending"] == 1

        b = make_hub(tmp_path, "b", redis_server.url, outbound_url=operator.url)
        hubs.append(b)
        b.start()
        await b.wait_ready(http)

        async def drained() -> bool:
            return (await pending(redis, keys.outbox, "sender"))["pending"] == 0 and \
                await redis.xlen(keys.outbox) == 0

        # Once the entry is acknowledged hub B has handled it: any resend would have happened.
        await eventually(drained, timeout=20)
        assert operator.reply_ids == [reply_id]
        assert operator.bad_signatures == 0

        detail = await get_json(http, f"{b.base}/api/v1/conversations/{conv['id']}")
        [out] = [m for m in detail["messages"] if m["direction"] == "out"]
        assert out["id"] == reply_id
        assert out["status"] == "sent"
        assert out["provider_message_id"] == "op-1"
        assert b.proc is not None and b.proc.poll() is None, b.log_tail()
