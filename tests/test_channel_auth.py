"""Operators load OAuth tokens and see their state: ``PUT``/``GET /api/v1/channels/{instance}/
auth`` and ``inboxhub channels auth|tokens``. Tokens go in; only the state comes out, in no
answer, printout or log line is a token, and bad input is refused with the reason. The hub
wires the store into its channels: a reply goes out with the loaded tokens, refreshed by the
running hub when the provider refuses them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.errors import AuthError
from channels.testing.tokens import KitOAuthServer
from hub.cli import main
from hub.config import LoadedConfig
from storage.store import Store
from storage.tokens import KEY_ENV, RedisTokenStore, load_token_cipher
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.plugins import oauth_api

ACCESS = "APP_USR-1234567890-access-token-abcdef"
REFRESH = "TG-0987654321-refresh-token-uvwxyz"
SECRETS = (ACCESS, REFRESH)


def meli_toml(*, send_url: str = "http://127.0.0.1:9/none",
              token_url: str = "http://127.0.0.1:9/oauth/token") -> str:
    return f"""
[[channels]]
name = "meli"
type = "{oauth_api.TYPE}"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "{send_url}"
token_url = "{token_url}"
client_id = "{KitOAuthServer.client_id}"
client_secret = "env:IH_TEST_OAUTH_CLIENT"
timeout_seconds = 5
"""


@pytest.fixture(autouse=True)
def _oauth_channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    oauth_api.register(monkeypatch)
    monkeypatch.setenv("IH_TEST_OAUTH_CLIENT", KitOAuthServer.client_secret)
    monkeypatch.delenv(KEY_ENV, raising=False)  # the key file in the data directory
    yield


@pytest.fixture
def loaded(make_config: Any) -> LoadedConfig:
    config: LoadedConfig = make_config(extra=meli_toml())
    return config


def token_store(loaded: LoadedConfig, store: Store) -> RedisTokenStore:
    """The store the hub and the CLI use: same Redis, same key file."""
    return RedisTokenStore(store.redis, load_token_cipher(loaded.config.data_dir, None))


def body(**fields: Any) -> bytes:
    return json.dumps({"access_token": ACCESS, "refresh_token": REFRESH,
                       "expires_in": 21600, "scope": "offline_access read", **fields}).encode()


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a token appeared where it must not"


@pytest.fixture
async def hub(loaded: LoadedConfig) -> AsyncIterator[TestClient]:
    async with running_hub(loaded) as client:
        yield client


# -- the admin API -----------------------------------------------------------------------------


async def test_put_loads_the_tokens_and_answers_only_their_state(
        hub: TestClient, loaded: LoadedConfig, store: Store,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await hub.get("/api/v1/channels/meli/auth", headers=auth(ADMIN_TOKEN))
    assert resp.status == 200
    assert (await resp.json())["status"] == "missing"
    resp = await hub.put("/api/v1/channels/meli/auth", data=body(user_id=123456,
                                                                 token_type="bearer"),
                         headers=auth(ADMIN_TOKEN))
    text = await resp.text()
    assert resp.status == 200, text
    state = json.loads(text)
    assert state["instance"] == "meli" and state["status"] == "ok"
    assert state["refreshable"] is True and state["generation"] == 1
    assert state["scope"] == "offline_access read" and state["expires_at"] > 0
    resp = await hub.get("/api/v1/channels/meli/auth", headers=auth(ADMIN_TOKEN))
    got = await resp.text()
    assert json.loads(got)["generation"] == 1
    stored = await token_store(loaded, store).get("meli")
    assert stored is not None and (stored.access_token, stored.refresh_token) == SECRETS
    no_secrets(text, got, caplog.text)


@pytest.mark.parametrize(("provider", "answer"), [
    ("ebay", {"access_token": ACCESS, "expires_in": 7200, "refresh_token": REFRESH,
              "refresh_token_expires_in": 47304000, "token_type": "User Access Token"}),
    ("shopee", {"access_token": ACCESS, "refresh_token": REFRESH, "expire_in": 14400,
                "request_id": "e3e3e7f3f1e2", "error": "", "message": "",
                "shop_id_list": [1234567], "merchant_id_list": []}),
])
async def test_a_providers_token_answer_loads_as_it_came(
        hub: TestClient, loaded: LoadedConfig, store: Store, provider: str,
        answer: dict[str, Any]) -> None:
    resp = await hub.put("/api/v1/channels/meli/auth", data=json.dumps(answer).encode(),
                         headers=auth(ADMIN_TOKEN))
    text = await resp.text()
    assert resp.status == 200, text
    state = json.loads(text)
    lifetime = answer.get("expires_in") or answer["expire_in"]
    assert state["status"] == "ok" and state["refreshable"] is True
    assert abs(state["expires_at"] - (state["loaded_at"] + lifetime)) < 5
    stored = await token_store(loaded, store).get("meli")
    assert stored is not None and (stored.access_token, stored.refresh_token) == SECRETS
    no_secrets(text)


async def test_only_admins_unknown_instances_and_channels_without_oauth(
        hub: TestClient) -> None:
    for headers, status in (({}, 401), (auth(AGENT_TOKEN), 403)):
        for method in ("GET", "PUT"):
            resp = await hub.request(method, "/api/v1/channels/meli/auth", data=body(),
                                     headers=headers)
            assert resp.status == status
    resp = await hub.put("/api/v1/channels/nope/auth", data=body(), headers=auth(ADMIN_TOKEN))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await hub.put("/api/v1/channels/shop/auth", data=body(), headers=auth(ADMIN_TOKEN))
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "not_oauth" and "does not use OAuth" in error["message"]


@pytest.mark.parametrize(("name", "payload", "reason"), [
    ("not JSON", b"{access_token", "malformed"),
    ("not an object", b'["x"]', "Expected `object`"),
    ("no access token", json.dumps({"refresh_token": REFRESH}).encode(), "access_token"),
    ("empty access token", body(access_token=""), "access_token"),
    ("unknown field", body(password="hunter2"), "password"),
    ("both expiries", body(expires_at=2_000_000_000), "not both"),
    ("negative lifetime", body(expires_in=-5), "expires_in"),
    ("a header injection", body(access_token=ACCESS + "\r\nX-Evil: 1"), "visible ASCII"),
    ("a space", body(refresh_token="TG 1"), "visible ASCII"),
    ("too long", body(access_token="a" * 9000), "access_token"),
    ("a lifetime of centuries", body(expires_in=1e12), "expires_in"),
    ("a misspelt refresh token", json.dumps({"access_token": ACCESS,
                                            "refresh_tokn": REFRESH}).encode(), "refresh_tokn"),
    ("Shopee's error answer", json.dumps({"access_token": ACCESS, "error": "error_auth",
                                          "message": "Invalid code", "request_id": "r"}
                                         ).encode(), "error_auth"),
    ("both Shopee's and the standard lifetime", body(expire_in=14400), "not both"),
])
async def test_malformed_tokens_are_a_400_that_repeats_no_token(
        hub: TestClient, name: str, payload: bytes, reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await hub.put("/api/v1/channels/meli/auth", data=payload, headers=auth(ADMIN_TOKEN))
    text = await resp.text()
    assert resp.status == 400, (name, text)
    error = json.loads(text)["error"]
    assert error["code"] == "invalid_body" and reason in error["message"], error
    no_secrets(text, caplog.text)
    resp = await hub.get("/api/v1/channels/meli/auth", headers=auth(ADMIN_TOKEN))
    assert (await resp.json())["status"] == "missing", "a refused body was stored"


async def test_oversized_tokens_are_a_413(hub: TestClient) -> None:
    resp = await hub.put("/api/v1/channels/meli/auth",
                         data=body(scope="s", token_type="x" * 10) + b" " * 70_000,
                         headers=auth(ADMIN_TOKEN))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_the_routes_are_in_the_openapi_document(hub: TestClient) -> None:
    resp = await hub.get("/api/v1/openapi.json")
    doc = await resp.json()
    path = doc["paths"]["/api/v1/channels/{instance}/auth"]
    assert path["put"]["x-minimum-role"] == path["get"]["x-minimum-role"] == "admin"
    assert path["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
        .endswith("/TokenLoad")
    assert {"200", "400", "404", "413", "422"} <= set(path["put"]["responses"])
    state = doc["components"]["schemas"]["TokenState"]
    assert "access_token" not in state["properties"]
    assert set(state["properties"]["status"]["enum"]) == {"ok", "expiring", "needs_reauth",
                                                          "missing"}


async def test_the_hub_sends_with_the_loaded_tokens_and_refreshes_them(
        make_config: Any, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """End to end: tokens loaded through the API reach the channel through the hub's wiring
    (``AdapterContext.tokens``); the provider refuses them, the hub refreshes and sends."""
    caplog.set_level(logging.DEBUG)
    async with KitOAuthServer() as oauth:
        sent: list[dict[str, Any]] = []

        async def messages(request: web.Request) -> web.Response:
            if not oauth.authorized(request.headers.get("Authorization")):
                return web.json_response({"error": "invalid_token"}, status=401)
            sent.append(await request.json())
            return web.json_response({"id": f"ml-{len(sent)}"})

        app = web.Application()
        app.router.add_post("/messages", messages)
        provider = TestServer(app, host="127.0.0.1")
        await provider.start_server()
        try:
            loaded: LoadedConfig = make_config(extra=meli_toml(
                send_url=str(provider.make_url("/messages")), token_url=oauth.token_url))
            granted = oauth.grant()
            oauth.revoke_access()  # the loaded access token has died at the provider
            async with running_hub(loaded) as client:
                resp = await client.put("/api/v1/channels/meli/auth", headers=auth(ADMIN_TOKEN),
                                        data=json.dumps({
                                            "access_token": granted.access_token,
                                            "refresh_token": granted.refresh_token,
                                            "expires_in": 3600}).encode())
                assert resp.status == 200
                payload = {"id": "ml-in-1", "sender": "buyer-3", "text": "¿Y mi pedido?"}
                resp = await client.post("/webhooks/oauth-api/meli", **signed_post_args(payload))
                assert resp.status == 200
                resp = await client.get("/api/v1/conversations?channel=meli",
                                        headers=auth(ADMIN_TOKEN))
                [conversation] = (await resp.json())["conversations"]
                resp = await client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                                         json={"text": "Sale hoy."}, headers=auth(ADMIN_TOKEN))
                assert resp.status == 202
                await eventually(lambda: asyncio.sleep(0, sent), timeout=15)
                resp = await client.get("/api/v1/channels/meli/auth", headers=auth(ADMIN_TOKEN))
                state = await resp.json()
        finally:
            await provider.close()
        assert [m["text"] for m in sent] == ["Sale hoy."]
        assert oauth.refresh_calls == 1
        assert oauth.accepted_tokens() == [oauth.newest_access_token()]
        assert state["status"] == "ok" and state["generation"] == 2
        assert state["last_refresh_at"] is not None
        stored = await token_store(loaded, store).get("meli")
        assert stored is not None and stored.access_token == oauth.newest_access_token()
        leaked = [t for t in oauth.issued() if t in caplog.text]
        assert not leaked, "a token was logged"


# -- the CLI -----------------------------------------------------------------------------------


async def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
              stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI in a thread (it calls asyncio.run), with ``stdin`` as its standard input."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin or b"")))
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_loads_tokens_from_stdin_and_shows_only_their_state(
        loaded: LoadedConfig, store: Store, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = str(loaded.path)
    # An operator's shell has the Redis address, not the API tokens serve needs.
    monkeypatch.delenv("IH_TEST_ADMIN")
    key = Path(loaded.config.data_dir) / "oauth-token.key"
    # Against an external Redis the hub processes may be on other hosts: a CLI that made its
    # own key would seal tokens none of them can read. It refuses and makes nothing.
    code, out, err = await cli(capsys, monkeypatch, "channels", "auth", "meli",
                               "--config", config, stdin=body())
    assert code == 1 and "no token key" in err and not key.exists(), (out, err)
    assert (await token_store(loaded, store).state("meli")).status == "missing"  # a hub ran
    code, out, err = await cli(capsys, monkeypatch, "channels", "auth", "meli",
                               "--config", config, stdin=body())
    assert code == 0, err
    assert out.startswith("tokens loaded. meli: ok; access token expires ")
    assert "refreshable; generation 1" in out
    stored = await token_store(loaded, store).get("meli")
    assert stored is not None and (stored.access_token, stored.refresh_token) == SECRETS
    code, shown, err = await cli(capsys, monkeypatch, "--config", config, "channels", "auth",
                                 "meli", "--show", "--json")
    assert code == 0, err
    state = json.loads(shown)
    assert (state["status"], state["generation"]) == ("ok", 1)
    code, listing, err = await cli(capsys, monkeypatch, "channels", "tokens", "--json",
                                   "--config", config)
    assert code == 0, err
    assert [s["instance"] for s in json.loads(listing)["channels"]] == ["meli"]
    code, table, err = await cli(capsys, monkeypatch, "channels", "tokens", "--config", config)
    assert code == 0 and table.startswith("meli: ok;"), err
    no_secrets(out, err, shown, listing, table, caplog.text)
    assert key.stat().st_mode & 0o077 == 0


async def test_cli_reads_tokens_from_named_environment_variables(
        loaded: LoadedConfig, store: Store, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(loaded.path)
    token_store(loaded, store)  # a hub has run here: its key file exists
    monkeypatch.setenv("MELI_AT", ACCESS)
    monkeypatch.setenv("MELI_RT", REFRESH)
    code, out, err = await cli(capsys, monkeypatch, "channels", "auth", "meli",
                               "--access-token-env", "MELI_AT", "--refresh-token-env", "MELI_RT",
                               "--expires-in", "600", "--scope", "read", "--config", config)
    assert code == 0, err
    no_secrets(out, err)
    state = await token_store(loaded, store).state("meli")
    assert (state.status, state.scope, state.refreshable) == ("ok", "read", True)
    assert state.expires_at is not None
    code, out, err = await cli(capsys, monkeypatch, "channels", "auth", "meli",
                               "--access-token-env", "UNSET_VARIABLE_X", "--config", config)
    assert code == 2 and "UNSET_VARIABLE_X is not set" in err


@pytest.mark.parametrize(("args", "stdin", "code", "message"), [
    (("nope",), b"", 1, "no channel instance 'nope'"),
    (("shop",), b"", 1, "does not use OAuth tokens"),
    (("meli",), b"", 2, "no tokens on stdin"),
    (("meli",), b"{broken", 2, "invalid tokens"),
    (("meli",), body(access_token=ACCESS + " x"), 2, "visible ASCII"),
    (("meli",), b" " * 70_000, 2, "larger than 65536 bytes"),
    (("meli", "--expires-in", "60"), body(), 2, "go with --access-token-env"),
])
async def test_cli_refuses_what_it_cannot_load(
        loaded: LoadedConfig, store: Store, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], stdin: bytes, code: int,
        message: str) -> None:
    got, out, err = await cli(capsys, monkeypatch, "channels", "auth", *args,
                              "--config", str(loaded.path), stdin=stdin)
    assert got == code and message in err, (got, out, err)
    no_secrets(out, err)
    assert (await token_store(loaded, store).state("meli")).status == "missing"


def test_no_token_value_is_taken_from_argv(capsys: pytest.CaptureFixture[str]) -> None:
    """``ps`` shows argv: the CLI has no flag that takes a token. ``--access-token`` is not
    taken for an abbreviation of ``--access-token-env`` (argparse's usage error repeats what
    it did not recognize, as it would any argument); a value where a variable's name belongs
    is refused without repeating it."""
    with pytest.raises(SystemExit) as info:
        main(["channels", "auth", "meli", "--access-token", ACCESS])
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["channels", "auth", "meli", "--access-token-env", ACCESS])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert "the NAME of an environment variable" in err
    no_secrets(out, err)


# -- channel health shows the token state ---------------------------------------------------------


async def test_channel_health_shows_the_token_state_and_alerts_on_a_refused_refresh(
        make_config: Any, store: Store, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """GET /api/v1/channels and `channels status` carry the token state (never a token); a
    refused refresh raises inboxhub_channel_needs_reauth and one WARNING naming the command
    that fixes it, and loading new tokens clears both."""
    caplog.set_level(logging.INFO, logger="hub.channel_health")
    loaded: LoadedConfig = make_config(extra=meli_toml(), overrides={
        "hub": {"health_flush_seconds": 0.05, "health_evaluate_seconds": 0.05}})
    async with running_hub(loaded) as client:
        async def record() -> dict[str, Any]:
            resp = await client.get("/api/v1/channels/meli", headers=auth(ADMIN_TOKEN))
            assert resp.status == 200
            return await resp.json()  # type: ignore[no-any-return]

        first = await record()
        assert first["token"]["status"] == "missing"
        assert first["fetch_backlog"] is None  # the channel does not fetch after notify
        resp = await client.put("/api/v1/channels/meli/auth", data=body(),
                                headers=auth(ADMIN_TOKEN))
        assert resp.status == 200
        assert (await record())["token"]["status"] == "ok"

        async def refused(tokens: Any) -> Any:
            raise AuthError("invalid_grant: the seller revoked the application")

        with pytest.raises(AuthError):
            await token_store(loaded, store).refresh("meli", refused)

        async def alerted() -> dict[str, Any] | None:
            found = await record()
            return found if found["alerts"]["needs_reauth"] else None

        found = await eventually(alerted)
        assert found["token"]["status"] == "needs_reauth"
        assert "revoked" in found["token"]["last_error"]
        metrics = await (await client.get("/metrics")).text()
        assert 'inboxhub_channel_needs_reauth{instance="meli"} 1.0' in metrics

        capsys.readouterr()
        code = await asyncio.to_thread(main, ["--config", str(loaded.path), "channels",
                                              "status", "meli", "--json"])
        out, _err = capsys.readouterr()
        assert code == 0 and json.loads(out)["token"]["status"] == "needs_reauth"
        no_secrets(out, metrics, json.dumps(found))

        resp = await client.put("/api/v1/channels/meli/auth", data=body(),
                                headers=auth(ADMIN_TOKEN))
        assert resp.status == 200

        async def cleared() -> dict[str, Any] | None:
            found = await record()
            return found if not found["alerts"]["needs_reauth"] else None

        await eventually(cleared)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hub.channel_health"
                and r.levelno == logging.WARNING and "needs re-authorization" in r.getMessage()]
    assert len(warnings) == 1 and "inboxhub channels auth meli" in warnings[0]
    assert [r for r in caplog.records if "has valid tokens again" in r.getMessage()]


async def test_a_hub_without_oauth_channels_makes_no_key_file(make_config: Any) -> None:
    """Nothing is sealed without an OAuth channel: no key file to back up, no warning about
    one; with an OAuth channel configured the first start makes it."""
    plain: LoadedConfig = make_config()
    async with running_hub(plain) as client:
        assert (await client.get("/readyz")).status == 200
    assert not (Path(plain.config.data_dir) / "oauth-token.key").exists()
    with_oauth: LoadedConfig = make_config(extra=meli_toml())
    async with running_hub(with_oauth):
        pass
    assert (Path(with_oauth.config.data_dir) / "oauth-token.key").exists()
