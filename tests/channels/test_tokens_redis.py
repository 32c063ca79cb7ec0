"""The token-refresh battery on the hub's Redis token store (``storage.tokens``), and what only
Redis has: encryption at rest, the key and its file, a refresh lock left by a dead process, a
refresher that hangs, an operator's load during a refresh, and single-flight across two OS
processes against an OAuth server that rotates refresh tokens (so a broken single-flight loses
the account, as the control test shows)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.errors import AuthError, RetryableError
from channels.services.tokens import OAuthTokens, TokenStore
from channels.testing.tokens import KitOAuthServer
from storage import keys
from storage.tokens import (
    KEY_FILE,
    RedisTokenStore,
    TokenCipher,
    TokenKeyError,
    load_token_cipher,
    new_key,
)
from tests.channels.test_tokens import OAuthChannelKit
from tests.channels.token_worker import GO, READY
from tests.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[2]
KEY = new_key()


def cipher(key: str = KEY) -> TokenCipher:
    return load_token_cipher(Path("unused"), key)


class TestOAuthChannelOnRedis(OAuthChannelKit):
    """inboxhub's own run of the battery: the hub's token store, two Redis clients."""

    @pytest.fixture
    def kit_tokens(self, redis: Redis) -> TokenStore:
        return RedisTokenStore(redis, cipher())

    @pytest.fixture
    async def second_tokens(self, redis_server: RedisServer) -> AsyncIterator[TokenStore]:
        other = Redis(unix_socket_path=redis_server.socket)
        try:
            yield RedisTokenStore(other, cipher())
        finally:
            await other.aclose()


def tokens(n: int = 1, *, expires_at: float | None = None) -> OAuthTokens:
    return OAuthTokens(access_token=f"APP_USR-{n}-access-0123456789",
                       refresh_token=f"TG-{n}-refresh-0123456789", expires_at=expires_at,
                       scope="offline_access")


async def dump(redis: Redis) -> bytes:
    """Every key and value in Redis, as bytes."""
    out = b""
    async for key in redis.scan_iter():
        out += key + b"\n"
        kind = await redis.type(key)
        if kind == b"hash":
            for k, v in (await redis.hgetall(key)).items():
                out += k + b"=" + v + b"\n"
        elif kind == b"string":
            out += (await redis.get(key)) or b""
    return out


async def test_tokens_are_encrypted_at_rest_and_bound_to_their_instance(redis: Redis) -> None:
    store = RedisTokenStore(redis, cipher())
    loaded = tokens(expires_at=2_000_000_000.0)
    state = await store.put("meli", loaded)
    assert (state.status, state.generation, state.refreshable) == ("ok", 1, True)
    raw = await dump(redis)
    assert b"meli" in raw
    assert loaded.access_token.encode() not in raw and loaded.refresh_token
    assert loaded.refresh_token.encode() not in raw
    assert await store.get("meli") == loaded
    # A sealed record copied under another instance's key does not open there.
    blob = await redis.hget(keys.tokens("meli"), "blob")
    await redis.hset(keys.tokens("shopee"), mapping={"blob": blob, "gen": 1})
    with pytest.raises(AuthError, match="do not open"):
        await store.get("shopee")


async def test_a_process_without_the_key_says_so_and_key_rotation_reads_old_records(
        redis: Redis) -> None:
    old, new = new_key(), new_key()
    await RedisTokenStore(redis, cipher(old)).put("meli", tokens())
    stranger = RedisTokenStore(redis, cipher(new))
    with pytest.raises(AuthError) as info:
        await stranger.current("meli")
    assert cipher(old).kid in str(info.value) and "INBOXHUB_TOKEN_KEY" in str(info.value)
    assert old not in str(info.value)
    state = await stranger.state("meli")
    assert state.status == "needs_reauth" and state.last_error
    assert cipher(old).kid in state.last_error
    # Rotation: the new key first seals, the old one still opens what it sealed.
    rotated = RedisTokenStore(redis, cipher(f"{new},{old}"))
    assert await rotated.get("meli") == tokens()
    await rotated.put("meli", tokens(2))
    assert await stranger.get("meli") == tokens(2)
    assert (await rotated.state("meli")).status == "ok"


def test_the_key_file_is_made_once_private_and_refused_when_not(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_token_cipher(data, None)
    path = data / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token_cipher(data, None).kid == first.kid  # reused, not replaced
    assert load_token_cipher(data, "").kid == first.kid  # an empty variable is unset
    path.chmod(0o644)
    with pytest.raises(TokenKeyError, match="chmod 600"):
        load_token_cipher(data, None)
    secret = path.read_text().strip()
    for bad in ("not base64!", "c2hvcnQ=", f"{KEY},short"):
        with pytest.raises(TokenKeyError) as info:
            load_token_cipher(data, bad)
        assert "INBOXHUB_TOKEN_KEY" in str(info.value) and bad not in str(info.value)
    assert secret not in repr(first) and first.kid in repr(first)


async def test_a_lock_left_by_a_dead_process_expires_and_the_refresh_goes_ahead(
        redis: Redis) -> None:
    store = RedisTokenStore(redis, cipher(), lock_seconds=0.5)
    await store.put("meli", tokens(1, expires_at=1.0))
    # A process took the lock and was killed with SIGKILL: nobody will release it.
    await redis.set(keys.token_lock("meli"), "dead-process", px=400)
    calls: list[OAuthTokens] = []

    async def refresher(t: OAuthTokens) -> OAuthTokens:
        calls.append(t)
        return tokens(2, expires_at=2_000_000_000.0)

    got = await store.refresh("meli", refresher, stale=tokens(1, expires_at=1.0))
    assert got == tokens(2, expires_at=2_000_000_000.0) and len(calls) == 1
    assert await redis.exists(keys.token_lock("meli")) == 0
    state = await store.state("meli")
    assert (state.status, state.generation) == ("ok", 2) and state.last_refresh_at


async def test_a_hanging_refresher_gives_up_before_its_lock_expires(
        redis: Redis, redis_server: RedisServer) -> None:
    store = RedisTokenStore(redis, cipher(), refresh_timeout_seconds=0.3, lock_seconds=5)
    other = Redis(unix_socket_path=redis_server.socket)
    try:
        second = RedisTokenStore(other, cipher())
        loaded = tokens(1, expires_at=1.0)
        await store.put("meli", loaded)
        started = asyncio.Event()
        calls = 0

        async def hangs(t: OAuthTokens) -> OAuthTokens:
            nonlocal calls
            calls += 1
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        first = asyncio.create_task(store.refresh("meli", hangs, stale=loaded))
        await started.wait()
        waiter = await asyncio.gather(second.refresh("meli", hangs, stale=loaded),
                                      return_exceptions=True)
        with pytest.raises(RetryableError, match="timed out"):
            await first
        assert isinstance(waiter[0], RetryableError), waiter
        assert calls == 1, "the process that waited refreshed too"
        assert await redis.exists(keys.token_lock("meli")) == 0, "the lock was not released"
        assert await store.get("meli") == loaded, "a failed refresh touched the tokens"
        state = await store.state("meli")
        assert state.status == "expiring" and state.last_error and "timed out" in state.last_error
    finally:
        await other.aclose()


async def test_a_refresh_cancelled_mid_rotation_still_commits_the_new_tokens(
        redis: Redis) -> None:
    """Hub shutdown while the provider rotates: the provider has already invalidated the old
    refresh token, so dropping its answer would lose the account."""
    store = RedisTokenStore(redis, cipher(), refresh_timeout_seconds=5)
    loaded = tokens(1, expires_at=1.0)
    await store.put("meli", loaded)
    asked, answer = asyncio.Event(), asyncio.Event()

    async def rotating(t: OAuthTokens) -> OAuthTokens:
        asked.set()  # the provider has the request; its old refresh token is now dead
        await answer.wait()
        return tokens(2, expires_at=2_000_000_000.0)

    caller = asyncio.create_task(store.refresh("meli", rotating, stale=loaded))
    await asked.wait()
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done(), "the caller stopped before the refresh could commit"
    caller.cancel()  # cancelled again (a second Ctrl-C): the store still owns the refresh
    await asyncio.sleep(0.05)
    answer.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await store.drain(5)  # what the hub does at shutdown
    assert await store.get("meli") == tokens(2, expires_at=2_000_000_000.0)
    assert await redis.exists(keys.token_lock("meli")) == 0
    assert (await store.state("meli")).generation == 2


async def test_tokens_an_operator_loads_during_a_refresh_win(redis: Redis) -> None:
    store = RedisTokenStore(redis, cipher())
    await store.put("meli", tokens(1, expires_at=1.0))
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow(t: OAuthTokens) -> OAuthTokens:
        started.set()
        await finish.wait()
        return tokens(2)

    refresh = asyncio.create_task(store.refresh("meli", slow))
    await started.wait()
    await store.put("meli", tokens(3))  # a new authorization while the refresh runs
    finish.set()
    assert await refresh == tokens(3)
    assert await store.get("meli") == tokens(3)
    assert (await store.state("meli")).generation == 2


async def _workers(redis_server: RedisServer, redis: Redis, oauth: KitOAuthServer,
                   mode: str, n: int = 2) -> list[dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INBOXHUB_TOKEN_KEY": KEY}
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.channels.token_worker", redis_server.socket, "meli",
        oauth.token_url, mode, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE) for _ in range(n)]
    try:
        for _ in procs:  # every worker has read the tokens and waits for the signal
            assert await redis.blpop([READY], timeout=60), "a worker did not start"
        await redis.rpush(GO, *["go"] * n)
        outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    return [json.loads(out) for out, _err in outputs]


async def test_two_processes_refreshing_at_once_refresh_once(
        redis: Redis, redis_server: RedisServer) -> None:
    async with KitOAuthServer() as oauth:
        oauth.refresh_delay = 0.3  # the second process arrives while the first refreshes
        await RedisTokenStore(redis, cipher()).put("meli", oauth.grant())
        results = await _workers(redis_server, redis, oauth, "store")
        newest = oauth.newest_access_token()
        assert newest is not None
        digest = hashlib.sha256(newest.encode()).hexdigest()
        assert results == [{"outcome": "ok", "access_sha256": digest}] * 2, results
        assert oauth.refresh_calls == 1 and oauth.refused_refreshes == 0
        stored = await RedisTokenStore(redis, cipher()).get("meli")
        assert stored is not None and stored.access_token == newest
        assert oauth.refresh_token_live(stored.refresh_token), "the stored token is dead"


async def test_control_without_single_flight_the_account_is_lost(
        redis: Redis, redis_server: RedisServer) -> None:
    """What the test above guards against: two processes refreshing with the same refresh
    token against a provider that rotates; one of them is refused."""
    async with KitOAuthServer() as oauth:
        oauth.refresh_delay = 0.3
        await RedisTokenStore(redis, cipher()).put("meli", oauth.grant())
        results = await _workers(redis_server, redis, oauth, "direct")
        assert sorted(r["outcome"] for r in results) == ["ok", "refused"], results
        assert oauth.refresh_calls == 2
