"""Two hub processes (two Redis clients, one token store) under Mercado Libre's rotating
refresh tokens, and a 429 storm from the fake's rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.errors import RateLimited
from channels.models import InboundMessage
from storage.tokens import RedisTokenStore, load_token_cipher, new_key
from tests.channels.mercadolibre.harness import adapter, load_tokens
from tests.channels.mercadolibre.provider import MercadoLibreFake
from tests.conftest import RedisServer

PACK = "2000000089077943"
KEY = new_key()


@pytest.fixture
async def fake() -> AsyncIterator[MercadoLibreFake]:
    async with MercadoLibreFake() as running:
        yield running


async def test_rotated_refresh_token_under_two_processes(
        fake: MercadoLibreFake, redis: Redis, redis_server: RedisServer) -> None:
    first = fake.buyer_message(PACK, 1)
    other = Redis(unix_socket_path=redis_server.socket)
    try:
        one_store = RedisTokenStore(redis, load_token_cipher(Path("unused"), KEY))
        two_store = RedisTokenStore(other, load_token_cipher(Path("unused"), KEY))
        await load_tokens(fake, one_store)
        async with adapter(fake, tokens=one_store, load=False) as one, \
                adapter(fake, tokens=two_store, load=False) as two:
            for _ in range(3):  # the access token dies mid-run, three times
                fake.revoke_access()
                results = await asyncio.gather(one.fetch(first["id"]), two.fetch(first["id"]),
                                               one.fetch(first["id"]))
                assert all(isinstance(r[0], InboundMessage) for r in results)
        assert fake.refresh_refused == 0, "a spent (rotated) refresh token was sent again"
        assert len(fake.refresh_live) == 1
        assert (await two_store.state("shop")).status == "ok"
    finally:
        await other.aclose()


async def test_a_429_storm_is_rate_limited_not_lost(fake: MercadoLibreFake) -> None:
    fake.rate_per_minute = 5
    ids = [fake.buyer_message(f"20000000000000{n:02d}", n)["id"] for n in range(1, 6)]
    async with adapter(fake) as meli:
        outcomes = await asyncio.gather(*(meli.fetch(i) for i in ids), return_exceptions=True)
    limited = [o for o in outcomes if isinstance(o, RateLimited)]
    assert limited, "the fake's limit was never hit"
    assert all(o.retry_after and o.retry_after > 0 for o in limited)
    assert all(isinstance(o, RateLimited | list) for o in outcomes), outcomes
