"""The Lazada adapter against the fake, with the kit's in-memory token store, quarantine and
fetch queue: what the Lazada tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp

from channels.base import AdapterContext
from channels.lazada.adapter import LazadaChannel, LazadaSettings
from channels.secrets import Secret
from channels.services.tokens import TokenStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.tokens import MemoryTokenStore
from channels.testing.webhooks import MemoryQuarantine
from tests.channels.lazada.provider import APP_KEY, APP_SECRET, LazadaFake


def settings(fake: LazadaFake, **extra: Any) -> LazadaSettings:
    values: dict[str, Any] = {"country": "MY", "timeout_seconds": 5, **extra}
    return LazadaSettings(api_base_url=fake.url, app_key=APP_KEY,
                          app_secret=Secret(APP_SECRET, "test"), seller_id=fake.seller,
                          token_url=fake.token_url, **values)


async def load_tokens(fake: LazadaFake, tokens: TokenStore, instance: str = "shop",
                      expires_in: float | None = None) -> None:
    await tokens.put(instance, fake.grant(expires_in))


@contextlib.asynccontextmanager
async def adapter(fake: LazadaFake, *, tokens: TokenStore | None = None, load: bool = True,
                  **extra: Any) -> AsyncIterator[LazadaChannel]:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        return task

    store = tokens if tokens is not None else MemoryTokenStore()
    if load:
        await load_tokens(fake, store)
    async with aiohttp.ClientSession() as http:
        context = AdapterContext(http=http, quarantine=MemoryQuarantine(), spawn=spawn,
                                 tokens=store, fetches=MemoryFetchQueue())
        yield LazadaChannel("shop", settings(fake, **extra), context)
        for task in tasks:
            task.cancel()
