"""A marketplace-like channel for tests: the generic API channel's signed webhooks inbound, and
replies sent to a provider API that wants an OAuth bearer token which rotates (Mercado Libre's
shape: ``POST {send_url}`` with ``Authorization: Bearer``, the refresh-token grant at
``token_url``).

Registered as channel type ``oauth-api``: in-process through ``channels.registry.BUILTIN``
(``register``).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
import pytest

from channels import http
from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext
from channels.models import OutboundReply
from channels.secrets import Secret
from channels.tokens import OAuth2Refresher, with_token

TYPE = "oauth-api"
TARGET = "tests.plugins.oauth_api:OAuthApiChannel"


class OAuthApiSettings(ApiChannelSettings, frozen=True, forbid_unknown_fields=True):
    token_url: str = "http://127.0.0.1:9/oauth/token"
    client_id: str = "kit-client"
    client_secret: Secret | None = None


class OAuthApiChannel(ApiChannel):
    type_name: ClassVar[str] = TYPE
    settings_type: ClassVar[type[OAuthApiSettings]] = OAuthApiSettings  # type: ignore[assignment]
    settings: OAuthApiSettings
    uses_oauth_tokens: ClassVar[bool] = True

    def __init__(self, instance: str, settings: OAuthApiSettings,
                 context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.refresher = OAuth2Refresher(context.http, settings.token_url,
                                         client_id=settings.client_id,
                                         client_secret=settings.client_secret,
                                         timeout=settings.timeout_seconds)

    async def deliver(self, reply: OutboundReply) -> str:
        body = msgspec.json.encode({"reply_id": reply.reply_id, "thread": reply.thread_id,
                                    "recipient": reply.recipient_handle, "text": reply.text})

        async def call(access_token: str) -> str:
            answer = await http.post(
                self.context.http, self.settings.outbound_url, data=body,
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {access_token}"},
                timeout=self.settings.timeout_seconds)
            sent = msgspec.json.decode(answer.body)
            return str(sent["id"]) if isinstance(sent, dict) and "id" in sent \
                else reply.reply_id

        return await with_token(self.context.tokens, self.instance, self.refresher, call)


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    from channels import registry

    monkeypatch.setitem(registry.BUILTIN, TYPE, TARGET)
