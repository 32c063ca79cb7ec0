"""Shopee's rotating refresh token under two hub processes: two adapters, two Redis clients,
one token store in real Redis; the expired access token is refreshed once and the old refresh
token (dead after use at Shopee) is never sent twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from channels.services.tokens import OAuthTokens
from storage.tokens import RedisTokenStore, load_token_cipher, new_key
from tests.channels.shopee.provider import ShopeeFake
from tests.channels.shopee.test_shopee import BUYER, KEY, PARTNER_ID, SHOP_ID, Rig
from tests.conftest import RedisServer


async def test_two_processes_rotate_once_through_redis(redis: Redis,
                                                       redis_server: RedisServer) -> None:
    cipher = load_token_cipher(Path("unused"), new_key())
    other = Redis(unix_socket_path=redis_server.socket)
    try:
        async with ShopeeFake(partner_id=PARTNER_ID, partner_key=KEY,
                              shop_id=SHOP_ID) as fake, aiohttp.ClientSession() as session:
            first = RedisTokenStore(redis, cipher)
            second = RedisTokenStore(other, cipher)
            await first.put("shop", OAuthTokens(access_token="at-0", refresh_token="rt-0",
                                                expires_at=time.time() + 4 * 3600))
            a, b = Rig(fake, session, first), Rig(fake, session, second)
            fake.buyer_writes("9001", BUYER, "oi")
            fake.expire_tokens()
            results = await asyncio.gather(a.adapter.fetch("9001"), b.adapter.fetch("9001"))
            assert [len(r) for r in results] == [1, 1]
            assert fake.refreshes == 1
            assert (await second.current("shop")).refresh_token == "rt-1"
    finally:
        await other.aclose()
