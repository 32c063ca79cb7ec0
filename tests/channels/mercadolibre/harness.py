"""The adapter against the fake, with the kit's in-memory token store, quarantine, fetch queue
and attachment store: what the Mercado Libre tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp

from channels.base import AdapterContext
from channels.mercadolibre.adapter import MercadoLibreChannel, MercadoLibreSettings
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens, TokenStore
from channels.testing.attachments import MemoryAttachmentStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.tokens import MemoryTokenStore
from channels.testing.webhooks import MemoryQuarantine
from tests.channels.mercadolibre.provider import APP, CLIENT_SECRET, MercadoLibreFake


def settings(fake: MercadoLibreFake, **extra: Any) -> MercadoLibreSettings:
    return MercadoLibreSettings(api_base_url=fake.url, seller_id=fake.seller, client_id=APP,
                                client_secret=Secret(CLIENT_SECRET, "test"),
                                timeout_seconds=5, **extra)


async def load_tokens(fake: MercadoLibreFake, tokens: TokenStore, instance: str = "shop",
                      expires_in: float = 3600) -> None:
    import time
    access, refresh = fake.grant()
    await tokens.put(instance, OAuthTokens(access_token=access, refresh_token=refresh,
                                           expires_at=time.time() + expires_in))


@contextlib.asynccontextmanager
async def adapter(fake: MercadoLibreFake, *, tokens: TokenStore | None = None,
                  attachments: bool = True, load: bool = True, **extra: Any
                  ) -> AsyncIterator[MercadoLibreChannel]:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        return task

    store = tokens if tokens is not None else MemoryTokenStore()
    if load:
        await load_tokens(fake, store)
    async with aiohttp.ClientSession() as http:
        context = AdapterContext(
            http=http, quarantine=MemoryQuarantine(), spawn=spawn, tokens=store,
            fetches=MemoryFetchQueue(),
            attachments=MemoryAttachmentStore() if attachments else None)
        yield MercadoLibreChannel("shop", settings(fake, **extra), context)
        for task in tasks:
            task.cancel()
