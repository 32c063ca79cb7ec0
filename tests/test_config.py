"""Config loading: env interpolation, secrets, per-channel settings and the error messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from channels.api import ApiChannelSettings
from channels.secrets import Secret
from hub.auth import TokenIndex
from hub.config import ConfigError, load_config

CHANNEL = """
[[channels]]
name = "demo"
type = "api"
[channels.settings]
secret = "env:IH_SECRET"
outbound_url = "http://127.0.0.1:1/x"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_example_config_loads_with_documented_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXHUB_ADMIN_TOKEN", "dev-admin-token-1234")
    monkeypatch.setenv("INBOXHUB_DEMO_SECRET", "dev-demo-secret-1234")
    monkeypatch.setenv("INBOXHUB_PORT", "9123")
    monkeypatch.setenv("INBOXHUB_DATA", "/tmp/ihdata")
    monkeypatch.setenv("INBOXHUB_DEMO_OUTBOUND_URL", "http://127.0.0.1:7/r")
    root = Path(__file__).resolve().parents[1]
    loaded = load_config(root / "config" / "example.toml")
    assert loaded.config.hub.port == 9123 and loaded.config.hub.data_dir == "/tmp/ihdata"
    assert loaded.config.hub.host == "127.0.0.1" and loaded.config.storage.redis_url is None
    demo = loaded.channel_settings["demo"]
    assert isinstance(demo, ApiChannelSettings)
    assert demo.secret.reveal() == "dev-demo-secret-1234"
    assert demo.outbound_url == "http://127.0.0.1:7/r"


def test_example_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXHUB_ADMIN_TOKEN", "dev-admin-token-1234")
    monkeypatch.setenv("INBOXHUB_DEMO_SECRET", "dev-demo-secret-1234")
    for name in ("INBOXHUB_PORT", "INBOXHUB_DATA", "INBOXHUB_DEMO_OUTBOUND_URL"):
        monkeypatch.delenv(name, raising=False)
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "config" / "example.toml").config
    assert config.hub.port == 8080 and config.hub.data_dir == "./data"


def test_secret_never_shows_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IH_SECRET", "hunter2-hunter2-hunter2")
    loaded = load_config(write(tmp_path, CHANNEL))
    secret = loaded.channel_settings["demo"].secret
    assert "hunter2" not in repr(secret) and "hunter2" not in str(loaded)
    assert repr(secret) == "Secret(env:IH_SECRET)"


def test_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("from-file-0123456789\n")
    text = CHANNEL.replace('"env:IH_SECRET"', f'"file:{tmp_path / "s.txt"}"')
    loaded = load_config(write(tmp_path, text))
    assert loaded.channel_settings["demo"].secret.reveal() == "from-file-0123456789"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[hub]\nport = \"abc\"\n", "hub.port: Expected `int`, got `str`"),
        ("[hub]\nprot = 1\n", "hub: Object contains unknown field `prot`"),
        ("[hub]\nport = 70000\n", "hub.port: expected 1..65535"),
        ("[storage]\npartitions = 0\n", "storage.partitions"),
        ("[hub\n", "invalid TOML"),
        ('[storage]\nredis_url = "redis://:pw@host:6379"\n', "storage.redis_password"),
        ("[outbox]\nmax_attempts = 0\n", "outbox.max_attempts"),
        (CHANNEL, "channels[0].settings.secret: environment variable IH_SECRET is not set"),
        (CHANNEL.replace('"env:IH_SECRET"', '"plain"'), "not as literal values"),
        (CHANNEL.replace('"env:IH_SECRET"', '"file:/nonexistent/x"'), "cannot read secret"),
        (CHANNEL.replace('type = "api"', 'type = "fax"'), "channels[0].type: unknown channel"),
        (CHANNEL.replace('outbound_url = "http://127.0.0.1:1/x"', ""),
         "channels[0].settings: Object missing required field `outbound_url`"),
        (CHANNEL + CHANNEL, "channels[1].name: duplicate channel name 'demo'"),
        (CHANNEL.replace('name = "demo"', 'name = "de mo/.."'), "channels[0].name"),
        ('[hub]\nhost = "${IH_UNSET_VAR}"\n', "hub.host: environment variable IH_UNSET_VAR is not"),
        ('[[api.tokens]]\nname = "x"\n', "api.tokens[0]: expected exactly one"),
        ('[[api.tokens]]\nname = "x"\ntoken_sha256 = "zz"\n', "api.tokens[0].token_sha256"),
        ('[[api.tokens]]\nname = "x"\nrole = "root"\ntoken_sha256 = "' + "a" * 64 + '"\n',
         "api.tokens[0].role"),
        ('[[routing.rules]]\nname = "r"\nqueue = "nope"\n',
         "routing.rules[0].queue: unknown queue 'nope'"),
        ('[[routing.queues]]\nname = "q"\n[[routing.queues.steps]]\nlanguages = { es = 9 }\n',
         "routing.queues[0].steps[0].languages.es: expected a level 1..5"),
        ('[[routing.queues]]\nname = "q"\n[[routing.queues.steps]]\nafter_seconds = 5\n',
         "routing.queues[0].steps[0].after_seconds"),
        ('[[routing.agents]]\nid = "a"\n[[routing.agents]]\nid = "a"\n',
         "routing.agents[1].id: duplicate agent 'a'"),
        ('[[routing.agents]]\nid = "a"\ncapacity = { chat = 99 }\n',
         "routing.agents[0].capacity.chat"),
        ('[[routing.agents]]\nid = "a"\nlanguages = { es = "fluent" }\n',
         "routing.agents[0].languages"),
        ('[routing.business_hours]\ntimezone = "Mars/Olympus"\n', "routing.business_hours"),
        ('[routing.business_hours]\nweekly = { mon = [["18:00", "09:00"]] }\n',
         "routing.business_hours.weekly.mon[0]"),
        ('[[routing.agents]]\nid = "a"\nworking_hours = { funday = [["09:00", "17:00"]] }\n',
         "routing.agents[0].working_hours"),
        ('[routing]\nlanguages = ["spanish"]\n', "routing.languages"),
        ('[routing.skills]\nrules = 5\n', "routing.skills"),
        ('[routing]\nmin_language_confidence = 3\n', "routing.min_language_confidence"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              text: str, expected: str) -> None:
    if "IH_SECRET is not set" in expected:
        monkeypatch.delenv("IH_SECRET", raising=False)
    else:
        monkeypatch.setenv("IH_SECRET", "s" * 16)
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_missing_and_binary_files(tmp_path: Path) -> None:
    assert "file not found" in error_of(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    assert "cannot read" in error_of(tmp_path / "bin.toml")


def test_token_index_accepts_plain_and_hashed(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("IH_TOK", "plain-token-0123456")
    digest = hashlib.sha256(b"hashed-token").hexdigest()
    text = (f'[[api.tokens]]\nname = "a"\nrole = "admin"\ntoken = "env:IH_TOK"\n'
            f'[[api.tokens]]\nname = "b"\ntoken_sha256 = "{digest}"\n')
    index = TokenIndex(load_config(write(tmp_path, text)).config.api.tokens)
    a, b = index.authenticate("plain-token-0123456"), index.authenticate("hashed-token")
    assert a is not None and a.name == "a" and a.role == "admin"
    assert b is not None and b.name == "b" and b.role == "agent"
    assert index.authenticate("") is None and index.authenticate("plain-token-0123456 ") is None


def test_reports_aggregate_defaults_on_and_takes_only_a_boolean(tmp_path: Path) -> None:
    """``[reports] aggregate``: on unless set false; a value that is no boolean ("no", "off",
    2: a typo must not silently leave the reports unfed, or fed) is refused, naming the key.
    (Like every key, "false" and 0 are read as false: the loader converts leniently.)"""
    assert load_config(write(tmp_path, "")).config.reports.aggregate is True
    off = load_config(write(tmp_path, "[reports]\naggregate = false\n")).config.reports
    assert off.aggregate is False and off.retention_days == 400.0
    for bad in ('"no"', '"off"', "2", "[]"):
        message = error_of(write(tmp_path, f"[reports]\naggregate = {bad}\n"))
        assert "reports.aggregate" in message and "bool" in message, message


def test_secret_parse_rejects_non_strings() -> None:
    for bad in (5, None, "env:", "env", "vault:x"):
        with pytest.raises(ValueError):
            Secret.parse(bad)
