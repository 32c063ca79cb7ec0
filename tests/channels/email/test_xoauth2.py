"""``imap_auth = "xoauth2"``: the mailbox logs in with an access token from the token store,
against Dovecot's oauth2 passdb (which asks a local RFC 7662 introspection endpoint, as Gmail's
and Microsoft's servers ask their own), and a refused token is refreshed through a local
RFC 6749 token endpoint, then used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from channels.base import AdapterContext
from channels.email.adapter import EmailChannel, EmailSettings
from channels.errors import AuthError
from channels.models import OutboundReply
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens
from channels.testing.core import IngestGate, MemoryKitStore
from channels.testing.polling import MemoryCursorStore, MemoryLeaseManager, PollingKit
from channels.testing.tokens import MemoryTokenStore
from hub.channel_auth import oauth_instances
from hub.config import ConfigError, load_config
from tests.channels.email.test_conformance import (
    BASE,
    DovecotProvider,
    buyer_case,
    email_toml,
    settings_for,
)


class TokenEndpoint:
    """The refresh-token grant: ``refresh-1`` buys ``ya29.fresh`` (made valid at Dovecot's
    introspection endpoint the moment it is issued)."""

    def __init__(self, dovecot: Any) -> None:
        self.dovecot = dovecot
        self.grants: list[dict[str, str]] = []

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.grants.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != "refresh-1":
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.dovecot.oauth.tokens["ya29.fresh"] = self.dovecot.user
        return web.json_response({"access_token": "ya29.fresh", "expires_in": 3599,
                                  "token_type": "Bearer"})


@pytest.fixture
async def token_url(dovecot: Any) -> AsyncIterator[tuple[str, TokenEndpoint]]:
    endpoint = TokenEndpoint(dovecot)
    app = web.Application()
    app.router.add_post("/token", endpoint.token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/token", endpoint
    await runner.cleanup()


def oauth_settings(dovecot: Any, smtp: Any, url: str, **more: Any) -> EmailSettings:
    base = settings_for(dovecot, smtp)
    values = {f: getattr(base, f) for f in base.__struct_fields__}
    values.update(imap_auth="xoauth2", imap_password=None, oauth_token_url=url,
                  oauth_client_id="inboxhub-test", oauth_client_secret=Secret("s" * 20, "t"))
    values.update(more)
    return EmailSettings(**values)


async def test_a_refused_token_is_refreshed_then_the_mailbox_is_read(
    dovecot: Any, smtp_server: Any, token_url: tuple[str, TokenEndpoint]
) -> None:
    url, endpoint = token_url
    tokens = MemoryTokenStore()
    # what the operator loaded an hour ago: the access token has since been revoked
    await tokens.put("shop", OAuthTokens(access_token="ya29.revoked", refresh_token="refresh-1"))
    gate = IngestGate(MemoryKitStore())
    leases = MemoryLeaseManager()
    kit = PollingKit(gate, MemoryCursorStore(leases), leases)
    settings = oauth_settings(dovecot, smtp_server, url)

    def factory(context: AdapterContext) -> EmailChannel:
        context.tokens = tokens
        return EmailChannel("shop", settings, context)

    async with kit.run(DovecotProvider(dovecot, smtp_server), factory) as harness:
        assert await harness.deliver(buyer_case(1))
    assert [g["grant_type"] for g in endpoint.grants] == ["refresh_token"]
    assert endpoint.grants[0]["client_id"] == "inboxhub-test"
    stored = await tokens.get("shop")
    assert stored is not None and stored.access_token == "ya29.fresh"
    assert stored.refresh_token == "refresh-1"  # kept: the provider did not rotate it


async def test_a_refused_refresh_leaves_the_instance_needing_reauthorization(
    dovecot: Any, smtp_server: Any, token_url: tuple[str, TokenEndpoint]
) -> None:
    url, _ = token_url
    tokens = MemoryTokenStore()
    await tokens.put("shop", OAuthTokens(access_token="ya29.revoked", refresh_token="gone"))
    settings = oauth_settings(dovecot, smtp_server, url)
    async with aiohttp.ClientSession() as http:
        context = AdapterContext(http=http, quarantine=_no_quarantine, spawn=_no_spawn,
                                 tokens=tokens)
        adapter = EmailChannel("shop", settings, context)
        with pytest.raises(AuthError):
            await adapter.poll("INBOX", None)
        await adapter.close()
    state = await tokens.state("shop")
    assert state.status == "needs_reauth" and state.last_error


async def test_smtp_xoauth2_sends_with_the_same_token_refreshed_once(
    dovecot: Any, smtp_server: Any, token_url: tuple[str, TokenEndpoint]
) -> None:
    url, endpoint = token_url
    tokens = MemoryTokenStore()
    await tokens.put("shop", OAuthTokens(access_token="ya29.revoked", refresh_token="refresh-1"))
    smtp_server.handler.oauth_tokens["ya29.fresh"] = smtp_server.username
    settings = oauth_settings(dovecot, smtp_server, url, smtp_auth="xoauth2",
                              smtp_password=None)
    async with aiohttp.ClientSession() as http:
        context = AdapterContext(http=http, quarantine=_no_quarantine, spawn=_no_spawn,
                                 tokens=tokens)
        adapter = EmailChannel("shop", settings, context)
        our_id = await adapter.send(OutboundReply(
            reply_id="r-1", conversation_id="c", channel_type="email", channel_instance="shop",
            thread_id="e" + "2" * 32, recipient_handle="ana@buyer.test", text="Sale hoy."))
        await adapter.close()
    [sent] = smtp_server.handler.received
    assert sent.rcpt_tos == ["ana@buyer.test"] and our_id.encode() in sent.content
    assert len(endpoint.grants) == 1  # the refused token was refreshed once, then accepted


def test_smtp_xoauth2_needs_the_imap_grant() -> None:
    with pytest.raises(ValueError, match="imap_auth"):
        EmailSettings(address="a@b.test", imap_host="h", imap_security="tls", imap_username="u",
                      imap_password=Secret("p" * 20, "t"), smtp_host="h",
                      smtp_security="tls", smtp_username="u", smtp_auth="xoauth2")


async def _no_quarantine(*args: Any, **kwargs: Any) -> str:
    raise AssertionError("nothing to quarantine")


def _no_spawn(coro: Any, name: str) -> asyncio.Task[None]:
    raise AssertionError("nothing to spawn")


def test_xoauth2_config_needs_the_grant_and_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IH_TEST_IMAP", "imap-secret")
    monkeypatch.setenv("IH_TEST_OAUTH", "client-secret-value")
    secure = BASE + 'imap_security = "tls"\nimap_auth = "xoauth2"\n'
    with pytest.raises(ConfigError, match="imap_password is not used"):
        load_config(email_toml(tmp_path, secure))
    no_password = secure.replace('imap_password = "env:IH_TEST_IMAP"\n', "")
    with pytest.raises(ConfigError, match="oauth_token_url"):
        load_config(email_toml(tmp_path, no_password))
    grant = ('oauth_token_url = "https://oauth2.googleapis.com/token"\n'
             'oauth_client_id = "123.apps.googleusercontent.com"\n'
             'oauth_client_secret = "env:IH_TEST_OAUTH"\n')
    loaded = load_config(email_toml(tmp_path, no_password + grant))
    assert oauth_instances(loaded.config) == ["mail"]
    with pytest.raises(ConfigError, match="https"):
        load_config(email_toml(tmp_path, no_password + grant.replace(
            "https://oauth2.googleapis.com", "http://oauth2.example.com")))
    # a password mailbox is not an OAuth channel
    assert oauth_instances(load_config(email_toml(tmp_path, BASE + 'imap_security = "tls"\n')
                                       ).config) == []
