"""The config snippet offered for config/example-chat.toml loads through the hub's own config
loader (the registry entries are added here the way channels/registry.py will list them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels import registry
from channels.messenger.adapter import DEFAULT_API_BASE_URL, MessengerSettings
from hub.config import ConfigError, load_config

SNIPPET = """
[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_ADMIN_TOKEN"

[[channels]]
name = "tienda-messenger"
type = "messenger"
[channels.settings]
page_access_token = "env:INBOXHUB_FB_PAGE_TOKEN"
app_secret = "env:INBOXHUB_META_APP_SECRET"
verify_token = "env:INBOXHUB_META_VERIFY_TOKEN"
# api_base_url = "https://graph.facebook.com/v23.0"
human_agent_tag = true

[[channels]]
name = "tienda-instagram"
type = "instagram"
[channels.settings]
page_access_token = "env:INBOXHUB_FB_PAGE_TOKEN"
app_secret = "env:INBOXHUB_META_APP_SECRET"
verify_token = "env:INBOXHUB_META_VERIFY_TOKEN"
human_agent_tag = false
"""


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN, "messenger",
                        "channels.messenger.adapter:MessengerChannel")
    monkeypatch.setitem(registry.BUILTIN, "instagram",
                        "channels.messenger.adapter:InstagramChannel")
    monkeypatch.setenv("IH_ADMIN_TOKEN", "admin-token-0123456789abcdef0123456789")
    monkeypatch.setenv("INBOXHUB_FB_PAGE_TOKEN", "EAAG-page-token-0123456789abcdef")
    monkeypatch.setenv("INBOXHUB_META_APP_SECRET", "app-secret-0123456789abcdef0123")
    monkeypatch.setenv("INBOXHUB_META_VERIFY_TOKEN", "verify-token-0123456789abcdef")


def test_the_snippet_loads(registered: None, tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    path.write_text(SNIPPET)
    loaded = load_config(path)
    fb = loaded.channel_settings["tienda-messenger"]
    ig = loaded.channel_settings["tienda-instagram"]
    assert isinstance(fb, MessengerSettings) and isinstance(ig, MessengerSettings)
    assert fb.human_agent_tag and not ig.human_agent_tag
    assert fb.api_base_url == DEFAULT_API_BASE_URL
    assert fb.app_secret.reveal() == "app-secret-0123456789abcdef0123"


def test_a_literal_secret_or_unknown_setting_is_refused(registered: None,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    path.write_text(SNIPPET.replace('"env:INBOXHUB_META_APP_SECRET"', '"plain-text-secret"', 1))
    with pytest.raises(ConfigError, match="app_secret"):
        load_config(path)
    path.write_text(SNIPPET.replace("human_agent_tag = true", "human_agent = true"))
    with pytest.raises(ConfigError, match="human_agent"):
        load_config(path)
