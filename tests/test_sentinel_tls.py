"""``rediss+sentinel://``: the sentinels, the master and replication all on TLS only (a test
CA made in tests/redis_sentinel.py), the hub verifying certificates. Started for this module
only, when it runs; marked ``sentinel`` like tests/test_sentinel.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.sentinel import MasterNotFoundError, SentinelManagedSSLConnection

from hub.config import load_config
from hub.keys import REDIS, STORE
from hub.redis_connection import open_redis
from tests.conftest import need_service, write_config
from tests.helpers import running_hub, signed_post_args
from tests.redis_sentinel import RedisSentinelServer, SentinelUnavailable

pytestmark = pytest.mark.sentinel


@pytest.fixture(scope="module")
def tls_sentinel() -> Iterator[RedisSentinelServer]:
    try:
        setup = RedisSentinelServer(tls=True)
    except SentinelUnavailable as exc:
        need_service(str(exc))
        raise
    yield setup
    setup.stop()


async def test_the_hub_stores_through_tls_sentinels_and_verifies_them(
        tmp_path: Path, hub_env: None, monkeypatch: pytest.MonkeyPatch,
        tls_sentinel: RedisSentinelServer) -> None:
    """With the CA trusted (SSL_CERT_FILE, OpenSSL's own variable) a webhook is stored on the
    TLS master; without it the connection is refused for an unverifiable certificate, never
    made in plain text or unverified."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_sentinel.ca_file))
    loaded = load_config(write_config(tmp_path, tls_sentinel.url))
    async with running_hub(loaded) as client:
        r = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "tls-1", "sender": "tls-buyer", "text": "hola"}))
        assert r.status == 200, await r.text()
        assert await client.app[STORE].get_message((await r.json())["stored"][0]) is not None
        pool = client.app[REDIS].connection_pool
        assert pool.connection_class is SentinelManagedSSLConnection
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    with pytest.raises(MasterNotFoundError, match=r"(?i)certificate verify failed"):
        async with open_redis(loaded.config) as (bare, _owned):
            await bare.ping()
