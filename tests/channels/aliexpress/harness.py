"""What the AliExpress tests share: settings for the fake, a buyer message case, and a harness that
drives the poll one round at a time (for the core, token and rate-limit batteries, whose
counts a background poller would disturb)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from channels.aliexpress.adapter import AliExpressChannel, AliExpressSettings
from channels.base import AdapterContext
from channels.polling import Unusable
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens, TokenStore
from channels.testing import FailureKind, InboundCase, IngestGate, SentRecord
from tests.channels.aliexpress.provider import APP_KEY, APP_SECRET, BUYER, SELLER_ID, AliExpressFake


def settings(fake: AliExpressFake, **extra: Any) -> AliExpressSettings:
    fields: dict[str, Any] = {
        "api_base_url": fake.url, "experimental": True, "app_key": APP_KEY,
        "app_secret": Secret(APP_SECRET, "test"), "seller_login_id": fake.seller,
        "seller_id": SELLER_ID, "token_url": fake.token_url, "timeout_seconds": 5.0,
        **extra}
    return AliExpressSettings(**fields)


async def load_tokens(fake: AliExpressFake, tokens: TokenStore, instance: str = "ae",
                      expires_in: float = 86400) -> None:
    access, refresh = fake.grant()
    await tokens.put(instance, OAuthTokens(access_token=access, refresh_token=refresh,
                                           expires_at=time.time() + expires_in))


def buyer_case(n: int, text: str, *, topic: str | None = None) -> InboundCase:
    message = f"7{n:09d}"
    channel = topic or f"3000{n:06d}"
    return InboundCase(
        name=f"message {n}",
        payload={"channelId": channel, "senderLoginId": BUYER, "senderName": "Ana B.",
                 "id": message, "content": text},
        provider_message_id=message, thread_id=channel, sender_handle=BUYER, text=text,
        sender_name="Ana B.")


class PollDriver:
    """The core battery's ``ConformanceHarness``, polling on demand: ``deliver`` publishes the
    message at the fake, runs one poll and stores its items through the kit's ingest exactly
    as the poll loop does (messages through ``store_items``, ``Unusable`` into the
    quarantine, the cursor kept only once everything was stored)."""

    def __init__(self, adapter: AliExpressChannel, fake: AliExpressFake, gate: IngestGate) -> None:
        self.adapter = adapter
        self.fake = fake
        self.gate = gate
        self.cursor: bytes | None = None
        self.quarantined: list[str] = []

    async def poll(self) -> list[str]:
        """One poll, stored; the provider ids of the messages it stored."""
        items, cursor = await self.adapter.poll_once("default", self.cursor)
        stored: list[str] = []
        for item in items:
            if isinstance(item, Unusable):
                self.quarantined.append(item.reason)
                continue
            await self.adapter.store_items([item], self.gate)
            stored.append(getattr(item, "provider_message_id", ""))
        self.cursor = cursor
        return stored

    async def deliver(self, case: InboundCase) -> bool:
        self.fake.publish(case)
        try:
            stored = await self.poll()
        except ConnectionError:  # the kit's closed ingest: nothing acknowledged
            return False
        return case.provider_message_id in stored

    def sent(self) -> list[SentRecord]:
        return self.fake.sent_records()

    def fail_next_send(self, kind: FailureKind) -> None:
        self.fake.fail_next_send(kind)


def context(session: aiohttp.ClientSession, tokens: TokenStore,
            quarantined: list[str] | None = None, **extra: Any) -> AdapterContext:
    kept = quarantined if quarantined is not None else []

    async def quarantine(channel_instance: str, raw: bytes, error: str, *,
                         headers: Mapping[str, str] | None = None) -> str:
        kept.append(error)
        return f"q-{len(kept)}"

    def spawn(coro: Any, name: str) -> Any:
        raise AssertionError("driven by hand: no background tasks")

    return AdapterContext(http=session, quarantine=quarantine, spawn=spawn, tokens=tokens,
                          **extra)
