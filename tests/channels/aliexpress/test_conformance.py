"""AliExpress runs the conformance kit's batteries that apply to a polling-only OAuth channel: the
core, token-refresh and rate-limit batteries on a poll driven round by round
(``PollDriver``: a background poller would spend the tokens the token battery counts), and
the polling battery on the kit's poll loops; each on the kit's memory services and on the
hub's store, cursors, leases, token store and limiter on real Redis. No webhook battery: AliExpress
pushes no messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from channels.aliexpress.adapter import AliExpressChannel
from channels.base import AdapterContext
from channels.polling import Schedule
from channels.secrets import Secret
from channels.services.cursors import CursorStore
from channels.services.leases import LeaseManager
from channels.services.limits import RateLimiter
from channels.services.tokens import TokenStore
from channels.testing import ChannelConformance, InboundCase, IngestGate, KitStore
from channels.testing.core import MemoryKitStore
from channels.testing.limits import RateLimitBattery
from channels.testing.polling import PollingBattery, PollingHarness, PollingKit
from channels.testing.tokens import KitOAuthServer, MemoryTokenStore, OAuthControl, TokenBattery
from storage.cursors import RedisCursorStore
from storage.kit import StoreKit
from storage.leases import RedisLeaseManager
from storage.limiter import RedisLimiter
from storage.store import Store
from storage.tokens import RedisTokenStore, load_token_cipher, new_key
from tests.channels.aliexpress.harness import PollDriver, buyer_case, context, load_tokens, settings
from tests.channels.aliexpress.provider import AliExpressFake
from tests.conftest import RedisServer

KEY = new_key()


def cases() -> list[InboundCase]:
    return [buyer_case(1, "Olá, quando chega meu pedido?"),
            buyer_case(2, "Can you send it by AliExpress Standard Shipping?")]


class TestAliExpressConformance(ChannelConformance, TokenBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return cases()

    @pytest.fixture
    async def harness(self, ingest_gate: IngestGate, kit_tokens: TokenStore,
                      kit_oauth: OAuthControl) -> AsyncIterator[PollDriver]:
        assert isinstance(kit_oauth, KitOAuthServer)
        async with AliExpressFake(app_key=kit_oauth.client_id,
                                  app_secret=kit_oauth.client_secret) as fake, \
                aiohttp.ClientSession() as session:
            fake.authorize = kit_oauth.authorized
            config = settings(fake, token_url=kit_oauth.token_url,
                              app_key=kit_oauth.client_id,
                              app_secret=Secret(kit_oauth.client_secret, "test"))
            await kit_tokens.put("ae", kit_oauth.grant())
            adapter = AliExpressChannel("ae", config, context(session, kit_tokens))
            yield PollDriver(adapter, fake, ingest_gate)


class TestAliExpressConformanceOnRedis(TestAliExpressConformance):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_tokens(self, redis: Redis) -> TokenStore:
        return RedisTokenStore(redis, load_token_cipher(Path("unused"), KEY))

    @pytest.fixture
    async def second_tokens(self, redis_server: RedisServer) -> AsyncIterator[TokenStore]:
        other = Redis(unix_socket_path=redis_server.socket)
        try:
            yield RedisTokenStore(other, load_token_cipher(Path("unused"), KEY))
        finally:
            await other.aclose()


class TestAliExpressRateLimits(RateLimitBattery):
    """The rate-limit battery alone (its helpers and the token battery's share names): the
    core battery's reply helper, on the same driven poll with the fake's own tokens."""

    _reply = ChannelConformance._reply

    def inbound_cases(self) -> list[InboundCase]:
        return cases()

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    @pytest.fixture
    async def harness(self, ingest_gate: IngestGate) -> AsyncIterator[PollDriver]:
        async with AliExpressFake() as fake, aiohttp.ClientSession() as session:
            tokens = MemoryTokenStore()
            await load_tokens(fake, tokens)
            adapter = AliExpressChannel("ae", settings(fake), context(session, tokens))
            yield PollDriver(adapter, fake, ingest_gate)


class TestAliExpressRateLimitsOnRedis(TestAliExpressRateLimits):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_limiter(self, redis: Redis) -> RateLimiter:
        return RedisLimiter(redis)

    @pytest.fixture
    async def second_limiter(self, redis_server: RedisServer) -> AsyncIterator[RateLimiter]:
        other = Redis(unix_socket_path=redis_server.socket)
        try:
            yield RedisLimiter(other)
        finally:
            await other.aclose()


class _PollView:
    def __init__(self, fake: AliExpressFake) -> None:
        self._fake = fake

    def publish(self, case: InboundCase) -> None:
        self._fake.publish(case)

    def sent(self) -> list[Any]:
        return self._fake.sent_records()

    def fail_next_send(self, kind: Any) -> None:
        self._fake.fail_next_send(kind)


class TestAliExpressPolling(PollingBattery):
    """The polling battery on the kit's poll loops (lease, cursor, takeover)."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    def polling_case(self, n: int) -> InboundCase:
        return buyer_case(n + 10, f"message {n}")

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with AliExpressFake() as fake:
            tokens = MemoryTokenStore()
            await load_tokens(fake, tokens)

            def factory(ctx: AdapterContext) -> AliExpressChannel:
                ctx.tokens = tokens
                adapter = AliExpressChannel("ae", settings(fake, lease_seconds=1.0), ctx)
                adapter.schedule = Schedule(interval_seconds=0.02, timeout_seconds=5.0)
                return adapter

            async with polling_kit.run(_PollView(fake), factory) as harness:
                yield harness


class TestAliExpressPollingOnRedis(TestAliExpressPolling):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)
