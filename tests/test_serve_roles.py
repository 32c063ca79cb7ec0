"""``inboxhub serve --role`` and ``--processes`` with real hub processes on a real Redis.

- A ``--role http`` process stores webhooks and routes nothing (the entry waits in the inbound
  stream, its /readyz names no router); a ``--role workers`` process started beside it routes
  what waited, and serves health and metrics but no API.
- ``--processes 2`` on the embedded Redis: one redis-server for the pool, both children answer
  webhooks on the one port (told apart by the pid in /readyz and ``inboxhub_process``), a
  child killed with SIGKILL is replaced, and SIGTERM stops all of it with exit code 0 with every
  acknowledged message stored and routed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from hub.cli import main
from storage.keys import PartitionKeys, partition_of
from tests.conftest import ADMIN_TOKEN, RedisServer, write_config
from tests.helpers import auth, eventually, signed_post_args
from tests.test_crash_recovery import (
    PARTITIONS,
    HubProcess,
    free_port,
    get_json,
    hub_processes,
)


class ServeProcess(HubProcess):
    """``python -m hub --config FILE serve ARGS...``."""

    def __init__(self, config: Path, port: int, log: Path, args: list[str]) -> None:
        super().__init__(config, port, log)
        self.args = args

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "--config", str(self.config), "serve", *self.args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ))


def fresh() -> aiohttp.ClientSession:
    """A session whose every request opens a new connection: SO_REUSEPORT spreads
    connections, not requests, over the processes."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def readyz(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(base + "/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        body["http_status"] = resp.status
        return body


def message(n: int) -> dict[str, str]:
    return {"id": f"m-{n}", "sender": f"buyer-{n}", "text": "Hola, ¿dónde está mi pedido?",
            "language": "es", "market": "mx"}


async def post(http: aiohttp.ClientSession, base: str, n: int) -> None:
    async with http.post(base + "/webhooks/api/shop", **signed_post_args(message(n))) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("args, error", [
    (["--role", "router"], "unknown role 'router' (accepted: http, workers, all)"),
    (["--processes", "0"], "--processes must be between 1 and 64, got 0"),
    (["--processes", "65"], "--processes must be between 1 and 64, got 65"),
    (["--processes", "two"], "expected a whole number of processes, got 'two'"),
    (["--port", "0"], "a port is between 1 and 65535, got 0"),
])
def test_bad_serve_arguments_are_refused_with_the_reason(
        args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--config", "config/example.toml", "serve", *args])
    assert exited.value.code == 2
    assert error in capsys.readouterr().err


async def test_http_role_stores_and_a_workers_process_routes(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None
) -> None:
    port, health_port = free_port(), free_port()
    config = write_config(tmp_path, redis_server.url, port=port)
    inbound = PartitionKeys(partition_of("shop", "buyer-1", PARTITIONS)).inbound
    async with hub_processes() as hubs, aiohttp.ClientSession() as http:
        front = ServeProcess(config, port, tmp_path / "http.log", ["--role", "http"])
        hubs.append(front)
        front.start()
        await front.wait_ready(http)
        ready = await readyz(http, front.base)
        assert ready["status"] == "ready" and ready["role"] == "http", ready
        assert ready["pid"] == front.proc.pid  # type: ignore[union-attr]
        assert not {"router", "sender", "mirror", "routing-timers", "kpi-aggregator",
                    "snooze-wake"} & set(ready["loops"]), ready

        await post(http, front.base, 1)
        await asyncio.sleep(1.5)  # well past what a router takes: none runs
        data = await get_json(http, front.base + "/api/v1/conversations")
        [conversation] = data["conversations"]
        assert conversation["status"] != "queued", conversation
        assert await redis.xlen(inbound) == 1  # stored, waiting for a router

        back = ServeProcess(config, health_port, tmp_path / "workers.log",
                            ["--role", "workers", "--port", str(health_port)])
        hubs.append(back)
        back.start()
        await back.wait_ready(http)
        ready = await readyz(http, back.base)
        assert ready["role"] == "workers" and {"router", "sender", "mirror"} <= set(
            ready["loops"]), ready
        assert "events-reader" not in ready["loops"]
        for path in ("/api/v1/conversations", "/webhooks/api/shop", "/inbox"):
            async with http.get(back.base + path, headers=auth(ADMIN_TOKEN)) as resp:
                assert resp.status == 404, path  # no public routes on a workers process
        async with http.get(back.base + "/metrics") as resp:
            assert resp.status == 200
            assert back.proc is not None
            line = f'inboxhub_process{{pid="{back.proc.pid}",role="workers"}} 1.0'
            assert line in await resp.text()

        async def routed() -> bool:
            data = await get_json(http, front.base + "/api/v1/conversations")
            return bool(data["conversations"][0]["status"] == "queued"
                        and await redis.xlen(inbound) == 0)

        await eventually(routed, timeout=20)
        await post(http, front.base, 2)  # and what comes next is routed as it arrives

        async def both_routed() -> bool:
            data = await get_json(http, front.base + "/api/v1/conversations")
            return [c["status"] for c in data["conversations"]] == ["queued", "queued"]

        await eventually(both_routed, timeout=20)
        for hub in (front, back):
            assert hub.proc is not None
            hub.proc.send_signal(signal.SIGTERM)
        assert await front.wait_exit(15) == 0, front.log_tail()
        assert await back.wait_exit(15) == 0, back.log_tail()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def redis_servers_on(data_dir: Path) -> list[int]:
    """The pids of redis-server processes working in ``data_dir`` (redis chdirs to its
    ``--dir``; its command line is rewritten to a title, so it is not matched)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if comm.startswith("redis-server") and Path(cwd) == data_dir:
            found.append(int(entry.name))
    return found


async def per_process(base: str, want: int, metric: str, timeout: float = 20) -> dict[int, float]:
    """``metric``'s total (label ``outcome="stored"`` where it has one) in each of ``want``
    processes behind the port, scraped over fresh connections until each has answered."""
    seen: dict[int, float] = {}

    async def scrape() -> bool:
        async with fresh() as http, http.get(base + "/metrics") as resp:
            text = await resp.text()
        pid, total = 0, 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "inboxhub_process":
                    pid = int(sample.labels["pid"])
                elif sample.name == metric + "_total" and \
                        sample.labels.get("outcome", "stored") == "stored":
                    total += sample.value
        seen[pid] = total
        return len(seen) >= want

    await eventually(scrape, timeout=timeout)
    return seen


async def test_two_processes_share_the_port_restart_and_stop_cleanly(
    tmp_path: Path, hub_env: None
) -> None:
    port = free_port()
    config = write_config(tmp_path, None, port=port)  # the embedded Redis
    data_dir = (tmp_path / "data").resolve()
    pool = ServeProcess(config, port, tmp_path / "pool.log", ["--processes", "2"])
    sent = 0
    async with hub_processes() as hubs, fresh() as http:
        hubs.append(pool)
        pool.start()
        await pool.wait_ready(http)

        async def pids() -> set[int]:
            found = {(await readyz(http, pool.base))["pid"] for _ in range(40)}
            return found if len(found) == 2 else set()

        first = await eventually(pids, timeout=30)
        assert pool.proc is not None and pool.proc.pid not in first
        assert len(redis_servers_on(data_dir)) == 1, "one embedded redis for the whole pool"

        for _ in range(40):
            sent += 1
            await post(http, pool.base, sent)
        stored = await per_process(pool.base, 2, "inboxhub_ingested_messages")
        assert set(stored) == first
        assert sum(stored.values()) == sent and all(stored.values()), stored

        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> set[int]:
            found = await pids()
            return found if found and victim not in found else set()

        second = await eventually(replaced, timeout=30)
        assert len(second & first) == 1
        assert f"hub process {victim} (slot" in pool.log.read_text()
        assert "exited with signal SIGKILL" in pool.log.read_text()
        for _ in range(10):
            sent += 1
            await post(http, pool.base, sent)
        pool.proc.send_signal(signal.SIGHUP)  # a routing reload reaches every child

        def reloaded() -> bool:
            return pool.log.read_text().count("routing reloaded on SIGHUP") == 2

        await eventually(lambda: asyncio.to_thread(reloaded), timeout=20)

        async def all_routed() -> bool:
            data = await get_json(http, pool.base + "/api/v1/conversations?limit=100")
            statuses = [c["status"] for c in data["conversations"]]
            return len(statuses) == sent and set(statuses) == {"queued"}

        await eventually(all_routed, timeout=30)
        pool.proc.send_signal(signal.SIGTERM)
        assert await pool.wait_exit(20) == 0, pool.log_tail()
        assert not [pid for pid in second if alive(pid)]
        assert redis_servers_on(data_dir) == []


def test_a_port_held_by_a_server_that_does_not_share_it_is_refused() -> None:
    import socket

    from hub.roles import PortInUse
    from hub.serve_processes import reserve_port

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortInUse, match=f"cannot share 127.0.0.1:{port}"):
            reserve_port("127.0.0.1", port)
    held = reserve_port("127.0.0.1", port)  # free again: held, shareable by the children
    try:
        with socket.socket() as child:
            child.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            child.bind(("127.0.0.1", port))
            child.listen()
    finally:
        for sock in held:
            sock.close()
