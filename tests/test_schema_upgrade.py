"""Upgrades: the previous release's data loads and is upgraded to the current schema; data of
a newer release is refused with a clear error.

``tests/fixtures/release1-data`` is an embedded-Redis data directory written by the previous
release's own code (``tests/fixtures/make_release1_data.py``, commit b90baeb)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from hub.cli import main
from hub.config import load_config
from storage import keys, schema
from tests.conftest import ADMIN_TOKEN, write_config
from tests.helpers import auth, running_hub, sign

FIXTURE = Path(__file__).parent / "fixtures" / "release1-data"


@pytest.fixture
def release1_dir(hub_env: None) -> Iterator[Path]:
    """A copy of the previous release's data directory (short path: unix socket limit)."""
    base = Path(tempfile.mkdtemp(prefix="ihrel-", dir="/tmp"))
    shutil.copytree(FIXTURE, base / "data")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_previous_release_data_loads_through_the_api(release1_dir: Path) -> None:
    loaded = load_config(write_config(release1_dir, None))  # embedded Redis on the copy
    async with running_hub(loaded) as client:
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        assert r.status == 200
        convs = {c["contact_handle"]: c for c in (await r.json())["conversations"]}
        assert set(convs) == {"lucia@example.com.mx", "joao@example.com.br"}
        lucia = convs["lucia@example.com.mx"]
        assert lucia["contact_name"] == "Lucía" and lucia["message_count"] == 3
        assert convs["joao@example.com.br"]["status"] == "resolved"
        # Upgraded records are in the filter indexes (schema 3): filtered lists find them.
        r = await client.get("/api/v1/conversations?status=resolved", headers=auth(ADMIN_TOKEN))
        assert [c["contact_handle"] for c in (await r.json())["conversations"]] == [
            "joao@example.com.br"]
        r = await client.get("/api/v1/conversations?channel=shop", headers=auth(ADMIN_TOKEN))
        assert len((await r.json())["conversations"]) == 2
        # ... and in the search index (schema 4): search finds what release 1 stored.
        r = await client.get("/api/v1/search?q=novedad", headers=auth(ADMIN_TOKEN))
        assert [c["id"] for c in (await r.json())["conversations"]] == [lucia["id"]]
        r = await client.get(f"/api/v1/conversations/{lucia['id']}", headers=auth(ADMIN_TOKEN))
        messages = (await r.json())["messages"]
        assert [(m["direction"], m["text"]) for m in messages] == [
            ("in", "Hola, ¿dónde está mi pedido 1001?"), ("in", "¿Alguna novedad?"),
            ("out", "Sale mañana.")]
        # The old quarantine entry (no size, no headers) is listed and can be retried.
        r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
        [entry] = (await r.json())["entries"]
        assert "Expected `str`" in entry["error"]
        r = await client.post(f"/api/v1/quarantine/{entry['id']}/retry",
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 422 and (await r.json())["result"]["kept_as"]
        # And new traffic lands beside the old.
        body = b'{"id": "new-1", "sender": "lucia@example.com.mx", "thread": "pedido-1",' \
               b' "text": "Gracias"}'
        r = await client.post("/webhooks/api/shop", data=body,
                              headers={"X-Inboxhub-Signature": sign(body)})
        assert r.status == 200
        r = await client.get(f"/api/v1/conversations/{lucia['id']}", headers=auth(ADMIN_TOKEN))
        assert [m["seq"] for m in (await r.json())["messages"]] == [1, 2, 3, 4]


async def test_previous_release_data_is_upgraded_to_the_current_schema(
        release1_dir: Path) -> None:
    loaded = load_config(write_config(release1_dir, None))
    from hub.redis_connection import open_redis

    async with open_redis(loaded.config) as (client, _owned):
        assert await client.get(keys.SCHEMA_VERSION) is None
        assert await schema.ensure_schema(client) == 1
        assert await client.get(keys.SCHEMA_VERSION) == str(schema.CURRENT).encode()
        rows = await client.xrange(keys.QUARANTINE)
        expected = sum(len(f[b"raw"]) + len(f[b"error"]) for _, f in rows)
        assert int(await client.get(keys.QUARANTINE_BYTES)) == expected > 0
        assert await schema.ensure_schema(client) == schema.CURRENT  # idempotent


async def test_empty_store_is_stamped_and_a_future_one_refused(redis: Redis) -> None:
    assert await schema.ensure_schema(redis) == schema.CURRENT
    assert await redis.get(keys.SCHEMA_VERSION) == str(schema.CURRENT).encode()
    await redis.set(keys.SCHEMA_VERSION, schema.CURRENT + 1)
    with pytest.raises(schema.SchemaTooNew, match="written by a newer release"):
        await schema.ensure_schema(redis)
    await redis.set(keys.SCHEMA_VERSION, "\u00b3")
    with pytest.raises(schema.SchemaTooNew, match="not a schema version"):
        await schema.ensure_schema(redis)


async def test_cli_refuses_a_store_of_a_newer_release(make_config: Any, redis: Redis,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    asyncio.get_running_loop()
    loaded = make_config()
    await redis.set(keys.SCHEMA_VERSION, schema.CURRENT + 5)
    code = await asyncio.to_thread(main, ["quarantine", "list", "--config", str(loaded.path)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"schema version {schema.CURRENT + 5}" in err and "newer" in err


async def test_the_hub_refuses_to_start_on_a_store_of_a_newer_release(make_config: Any,
                                                                       redis: Redis) -> None:
    await redis.set(keys.SCHEMA_VERSION, schema.CURRENT + 1)
    with pytest.raises(schema.SchemaTooNew):
        async with running_hub(make_config()):
            pass
    assert await redis.get(keys.SCHEMA_VERSION) == str(schema.CURRENT + 1).encode()


async def test_the_hub_warns_at_start_when_an_external_redis_can_lose_data(
        make_config: Any, caplog: pytest.LogCaptureFixture) -> None:
    # The session Redis runs with AOF off, as an operator's careless one might.
    async with running_hub(make_config()):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "hub.app"
                and r.levelname == "WARNING"]
    assert any("appendonly" in w or "AOF" in w for w in warnings), warnings
