"""Settings as the hub's config loader reads them (the channel installed as an entry point,
the way it is found until it is a built-in), PTB's ``base_url`` forms and the text splitter."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from channels.telegram.adapter import TelegramPollingChannel, TelegramWebhookChannel
from channels.telegram.settings import file_base_template, method_base
from channels.telegram.split import split_text, utf16_length
from hub.config import ConfigError, load_config
from tests.channels.plugin_dist import install_entry_point

TOKEN = "7000000001:AAH-test-token-0123456789abcdefghijkl"
SECRET = "webhook-secret_0123456789-abcdef"
Writer = Callable[[str], Path]


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    site = install_entry_point(tmp_path / "site", distribution="inboxhub-telegram-test",
                               type_name="telegram",
                               target="channels.telegram.adapter:TelegramChannel")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setenv("IH_TG_TOKEN", TOKEN)
    monkeypatch.setenv("IH_TG_SECRET", SECRET)

    def write(settings: str) -> Path:
        path = tmp_path / "inboxhub.toml"
        path.write_text(f"""
[[channels]]
name = "tg"
type = "telegram"
[channels.settings]
bot_token = "env:IH_TG_TOKEN"
{settings}
""")
        return path

    return write


def test_webhook_mode_from_the_config(config_file: Writer) -> None:
    loaded = load_config(config_file('webhook_secret = "env:IH_TG_SECRET"\n'
                                     'api_base_url = "http://127.0.0.1:8081/bot{token}"'))
    settings = loaded.channel_settings["tg"]
    assert settings.mode == "webhook" and settings.long_messages == "split"
    assert settings.bot_token.reveal() == TOKEN and TOKEN not in repr(settings)


def test_polling_mode_needs_no_webhook_secret(config_file: Writer) -> None:
    loaded = load_config(config_file('mode = "polling"\nlong_messages = "refuse"'))
    assert loaded.channel_settings["tg"].mode == "polling"


@pytest.mark.parametrize(("settings", "words"), [
    ("", "webhook_secret"),  # webhook mode (the default) without a secret
    ('webhook_secret = "env:IH_TG_SECRET"\nmode = "push"', "mode"),
    ('webhook_secret = "env:IH_TG_SECRET"\nlong_messages = "truncate"', "long_messages"),
    ('webhook_secret = "env:IH_TG_SECRET"\napi_base_url = "http://127.0.0.1:8081/api"',
     "/bot"),
    ('bot_token_x = "env:IH_TG_TOKEN"\nmode = "polling"', "bot_token_x"),
    (f'webhook_secret = "{SECRET}"', "env:NAME"),  # a literal secret is refused
])
def test_bad_settings_are_refused_with_the_reason(config_file: Writer, settings: str,
                                                  words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(config_file(settings))


def test_a_webhook_secret_outside_telegrams_alphabet_is_refused(
        config_file: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IH_TG_SECRET", "has spaces and ! marks 0123456789")
    with pytest.raises(ConfigError, match="A-Z a-z 0-9"):
        load_config(config_file('webhook_secret = "env:IH_TG_SECRET"'))


def test_the_mode_picks_the_adapter_class(config_file: Writer) -> None:
    from channels.registry import load_adapter_class
    cls = load_adapter_class("telegram")
    assert cls.__name__ == "TelegramChannel"
    assert issubclass(TelegramWebhookChannel, cls) and issubclass(TelegramPollingChannel, cls)


@pytest.mark.parametrize(("base", "method", "files"), [
    ("https://api.telegram.org/bot", f"https://api.telegram.org/bot{TOKEN}",
     f"https://api.telegram.org/file/bot{TOKEN}"),
    ("http://127.0.0.1:8081/bot{token}", f"http://127.0.0.1:8081/bot{TOKEN}",
     f"http://127.0.0.1:8081/file/bot{TOKEN}"),
    ("https://api.telegram.org/bot{token}/test", f"https://api.telegram.org/bot{TOKEN}/test",
     f"https://api.telegram.org/file/bot{TOKEN}/test"),
    ("http://proxy/tg/bot", f"http://proxy/tg/bot{TOKEN}", f"http://proxy/tg/file/bot{TOKEN}"),
])
def test_base_url_forms(base: str, method: str, files: str) -> None:
    """PTB's rule: ``{token}`` is substituted, otherwise the token is appended."""
    assert method_base(base, TOKEN) == method
    assert method_base(file_base_template(base), TOKEN) == files


@pytest.mark.parametrize("text", [
    "corto",
    "x" * 10_000,  # no boundary at all: hard cuts
    ("Una frase corta. " * 300 + "\n\n") * 3,
    "línea\n" * 2000,
    "🙂 " * 3000,
    "  espacios al borde  " * 400,
])
def test_split_parts_fit_and_lose_nothing(text: str) -> None:
    parts = split_text(text, 4096)
    assert all(0 < utf16_length(p) <= 4096 for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == \
        text.replace(" ", "").replace("\n", "")
    if utf16_length(text.strip()) <= 4096:
        assert parts == [text.strip()]


def test_split_prefers_the_last_paragraph_then_line_then_space() -> None:
    assert split_text("aaaa bbbb\ncccc\n\ndddd", 16) == ["aaaa bbbb\ncccc", "dddd"]
    assert split_text("aaaa bbbb\ncccc dddd", 16) == ["aaaa bbbb", "cccc dddd"]
    assert split_text("aaaa bbbb cccc dddd", 16) == ["aaaa bbbb cccc", "dddd"]
    assert split_text("abcdefghijklmnopqrstuvwxyz", 10) == ["abcdefghij", "klmnopqrst",
                                                           "uvwxyz"]
