"""The WhatsApp channel's settings as an operator writes them (the snippet reported for
config/example-chat.toml), through the hub's own config conversion and checks."""

from __future__ import annotations

import tomllib

import pytest

from channels.whatsapp import WhatsAppSettings
from hub.config import ConfigError, _check_channel_settings, convert

SNIPPET = """
[[channels]]
name = "whatsapp-mx"
type = "whatsapp"
[channels.settings]
access_token = "env:WA_ACCESS_TOKEN"
app_secret = "env:WA_APP_SECRET"
verify_token = "env:WA_VERIFY_TOKEN"
phone_number_id = "106540352242922"
# api_base_url = "https://graph.facebook.com/v21.0"

[[channels.settings.templates]]
name = "order_update"
language = "es"
parameters = ["nombre", "pedido"]
body = "Hola {{1}}, su pedido {{2}} salió hoy."

[[channels.settings.templates]]
name = "order_update"
language = "pt_BR"
parameters = ["nome", "pedido"]
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_ACCESS_TOKEN", "EAAG" + "x" * 60)
    monkeypatch.setenv("WA_APP_SECRET", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("WA_VERIFY_TOKEN", "a-long-random-verify-token")


def load(text: str) -> WhatsAppSettings:
    data = tomllib.loads(text)["channels"][0]["settings"]
    settings: WhatsAppSettings = convert(data, WhatsAppSettings, "channels[0].settings")
    _check_channel_settings(settings, "channels[0].settings")
    return settings


def test_the_documented_snippet_loads(env: None) -> None:
    settings = load(SNIPPET)
    assert settings.api_base_url == "https://graph.facebook.com/v21.0"
    assert settings.access_token.source == "env:WA_ACCESS_TOKEN"
    assert "EAAG" not in repr(settings)
    assert [(t.name, t.language, t.parameters) for t in settings.templates] == [
        ("order_update", "es", ("nombre", "pedido")),
        ("order_update", "pt_BR", ("nome", "pedido"))]


def test_secrets_must_be_references(env: None) -> None:
    with pytest.raises(ConfigError, match="env:NAME"):
        load(SNIPPET.replace('"env:WA_APP_SECRET"', '"plain-secret-in-the-file"'))


@pytest.mark.parametrize(("change", "message"), [
    (('phone_number_id = "106540352242922"', 'phone_number_id = "../me"'), "phone_number_id"),
    (('language = "pt_BR"', 'language = "es"'), "appear twice"),
    (('body = "Hola {{1}}, su pedido {{2}} salió hoy."', 'body = "Hola {{1}}"'),
     "placeholders"),
    (('# api_base_url = "https://graph.facebook.com/v21.0"', 'api_base_url = "graph"'),
     "api_base_url"),
    (('phone_number_id = "106540352242922"', 'phone_number_id = "1"\nmode = "x"'), "mode"),
])
def test_mistakes_are_named(env: None, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in SNIPPET
    with pytest.raises((ConfigError, ValueError), match=message):
        load(SNIPPET.replace(old, new, 1))
