"""One hub process's refresh, for tests/channels/test_tokens_redis.py: run as
``python -m tests.channels.token_worker SOCKET INSTANCE TOKEN_URL MODE``.

It reads the instance's tokens with the hub's Redis token store (key from
``INBOXHUB_TOKEN_KEY``), says it is ready (``RPUSH ih-test:ready``), waits for the go signal
(``BLPOP ih-test:go``) so every worker refreshes at the same moment, then refreshes: through
the store's single-flight (MODE ``store``) or straight at the provider with the tokens it read
(MODE ``direct``: what a hub without single-flight would do). Prints one JSON line:
``{"outcome": "ok" | "refused" | "failed", "access_sha256": ...}`` (digests, not tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from channels.errors import AuthError, ChannelError
from channels.secrets import Secret
from channels.testing.tokens import KitOAuthServer
from channels.tokens import OAuth2Refresher
from storage.tokens import RedisTokenStore, load_token_cipher

READY = "ih-test:ready"
GO = "ih-test:go"


async def main(socket: str, instance: str, token_url: str, mode: str) -> dict[str, str]:
    redis = Redis(unix_socket_path=socket, socket_timeout=30)
    try:
        # The key comes from the environment, as on every process of a multi-host hub.
        cipher = load_token_cipher(Path("unused"), os.environ["INBOXHUB_TOKEN_KEY"])
        store = RedisTokenStore(redis, cipher)
        tokens = await store.get(instance)
        assert tokens is not None, "no tokens loaded"
        async with aiohttp.ClientSession() as http:
            refresher = OAuth2Refresher(http, token_url, client_id=KitOAuthServer.client_id,
                                        client_secret=Secret(KitOAuthServer.client_secret,
                                                             "test"))
            await redis.rpush(READY, str(os.getpid()))
            await redis.blpop([GO], timeout=30)
            try:
                if mode == "store":
                    new = await store.refresh(instance, refresher, stale=tokens)
                else:
                    new = await refresher(tokens)
            except AuthError:
                return {"outcome": "refused"}
            except ChannelError as exc:
                return {"outcome": "failed", "error": str(exc)}
        digest = hashlib.sha256(new.access_token.encode()).hexdigest()
        return {"outcome": "ok", "access_sha256": digest}
    finally:
        await redis.aclose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))), flush=True)
