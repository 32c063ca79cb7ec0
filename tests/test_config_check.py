"""``load_config`` (and so ``inboxhub check``) rejects every config ``serve`` would crash on or
silently misroute with, naming the key path and what was expected; read-only loading works
without the serve-time secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import ConfigError, UnresolvedSecret, load_config

SECRET = "s" * 24
BASE = """
[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_TOKEN"

[[channels]]
name = "demo"
type = "api"
[channels.settings]
secret = "env:IH_SECRET"
outbound_url = "http://127.0.0.1:8099/replies"
"""

ROUTING = """
[routing]
languages = ["es", "pt", "en"]
"""


def agent(body: str) -> str:
    return f'\n[[routing.agents]]\nid = "a"\n{body}\n'


def rule(when: str) -> str:
    return f'\n[[routing.rules]]\nname = "r"\nqueue = "default"\nwhen = {{ {when} }}\n'


def step(body: str) -> str:
    return f'\n[[routing.queues]]\nname = "q"\n[[routing.queues.steps]]\n{body}\n'


def setting(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


URL = 'outbound_url = "http://127.0.0.1:8099/replies"'

# (case id, config text, fragment the error must contain after "<file>: ")
CASES: list[tuple[str, str, str]] = [
    ("unknown-language", '[routing]\nlanguages = ["xx"]\n',
     "routing.languages[0]: unknown language 'xx', expected a lowercase ISO 639-1 code"),
    ("language-name", '[routing]\nlanguages = ["spanish"]\n', "routing.languages[0]"),
    ("language-lingua-cannot-identify", '[routing]\nlanguages = ["es", "ab"]\n',
     "routing.languages: language 'ab': not an ISO 639-1 code lingua can identify"),
    ("default-language-not-configured", ROUTING + 'default_language = "fr"\n',
     "routing.default_language: 'fr' is not one of routing.languages"),
    ("agent-language", ROUTING + agent("languages = { xx = 3 }"),
     "routing.agents[0].languages.xx: unknown language 'xx'"),
    ("step-language", ROUTING + step("languages = { esp = 3 }"),
     "routing.queues[0].steps[0].languages.esp: unknown language 'esp'"),
    ("rule-language-name", ROUTING + rule('language = ["portuguese"]'),
     "routing.rules[0].when.language[0]: 'portuguese' can never match: conversations carry "
     "one of routing.languages (es, pt, en)"),
    ("rule-language-not-configured", ROUTING + rule('language = ["fr"]'),
     "routing.rules[0].when.language[0]: 'fr' can never match"),
    ("rule-skill", ROUTING + rule('skill = ["refunds"]'),
     "routing.rules[0].when.skill[0]: 'refunds' can never match: the skill rules produce"),
    ("rule-channel", ROUTING + rule('channel = ["shop"]'),
     "routing.rules[0].when.channel[0]: 'shop' can never match: no channel has that name"),
    ("rule-market", ROUTING + rule('market = ["Mexico"]'),
     "routing.rules[0].when.market[0]: unknown market 'Mexico', expected an ISO 3166-1 "
     "alpha-2"),
    ("agent-market-uk", ROUTING + agent('markets = ["UK"]'),
     "routing.agents[0].markets[0]: unknown market 'UK'"),
    ("step-market", ROUTING + step('markets = ["LATAM"]'),
     "routing.queues[0].steps[0].markets[0]: unknown market 'LATAM'"),
    ("capacity-kind-typo", ROUTING + agent("capacity = { chta = 4 }"),
     "routing.agents[0].capacity.chta: unknown capacity kind 'chta'; channels produce: chat, "
     "email"),
    ("sla-unknown-kind", ROUTING + "[routing.sla.chta]\nfirst_response_minutes = 5\n",
     "routing.sla.chta: no channel instance, label, channel type or capacity kind 'chta'"),
    ("channel-markets-no-channel", '[routing]\nchannel_markets = { shop = "MX" }\n',
     "routing.channel_markets.shop: no channel named 'shop' (channels: demo)"),
    ("channel-markets-not-iso", '[routing]\nchannel_markets = { demo = "Mexico" }\n',
     "routing.channel_markets.demo: unknown market 'Mexico'"),
    ("agent-timezone-without-working-hours", ROUTING + agent('timezone = "Mars/Olympus"'),
     "routing.agents[0].timezone: unknown IANA time zone 'Mars/Olympus'"),
    ("agent-timezone-path", ROUTING + agent('timezone = "../../etc/passwd"'),
     "routing.agents[0].timezone: unknown IANA time zone"),
    ("routing-mode", '[routing]\nmode = "queue-only"\n', "routing.mode: not implemented"),
    ("rule-tags", ROUTING + rule('tags = ["vip"]'),
     "routing.rules[0].when.tags: not supported: contacts carry no tags"),
    ("rule-min-order-value", ROUTING + rule("min_order_value = 100"),
     "routing.rules[0].when.min_order_value: not supported: channels do not report an order"),
    ("url-not-a-url", "", "channels[0].settings.outbound_url: malformed URL 'not a url'"),
    ("url-scheme", "", "channels[0].settings.outbound_url: malformed URL 'ftp://h/x': scheme "
                       "must be https or http"),
    ("url-no-host", "", "channels[0].settings.outbound_url: malformed URL 'http:///x': no host"),
    ("url-bad-port", "", "channels[0].settings.outbound_url: malformed URL "
                         "'http://h:99999/x': bad port"),
    ("url-credentials", "", "channels[0].settings.outbound_url: credentials in a URL are "
                            "refused"),
    ("redis-url-scheme", '[storage]\nredis_url = "http://127.0.0.1:6379"\n',
     "storage.redis_url: malformed URL 'http://127.0.0.1:6379': scheme must be redis or "
     "rediss or unix"),
    ("redis-url-no-host", '[storage]\nredis_url = "redis://"\n',
     "storage.redis_url: malformed URL 'redis://': no host"),
    ("redis-url-db", '[storage]\nredis_url = "redis://h:6379/zero"\n',
     "storage.redis_url: malformed URL 'redis://h:6379/zero': the path must be a database"),
    ("redis-unix-no-path", '[storage]\nredis_url = "unix://"\n',
     "storage.redis_url: malformed URL 'unix://': expected unix:///path/to/socket"),
    ("unset-env-names-key", "", "channels[0].settings.outbound_url: environment variable "
                                "IH_UNSET_URL is not set"),
    ("short-token", "", "api.tokens[0].token: env:IH_TOKEN is shorter than 16 characters"),
    ("short-webhook-secret", "", "channels[0].settings.secret: env:IH_SECRET is shorter than "
                                 "16 characters"),
]

SETTING_EDITS = {
    "url-not-a-url": 'outbound_url = "not a url"',
    "url-scheme": 'outbound_url = "ftp://h/x"',
    "url-no-host": 'outbound_url = "http:///x"',
    "url-bad-port": 'outbound_url = "http://h:99999/x"',
    "url-credentials": 'outbound_url = "https://user:pw@h/x"',
    "unset-env-names-key": 'outbound_url = "${IH_UNSET_URL}"',
}


@pytest.mark.parametrize(("case", "extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rejects_naming_key_and_expectation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            case: str, extra: str, expected: str) -> None:
    monkeypatch.setenv("IH_TOKEN", "short" if case == "short-token" else SECRET)
    monkeypatch.setenv("IH_SECRET", "fifteen-chars-x" if case == "short-webhook-secret"
                       else SECRET)
    monkeypatch.delenv("IH_UNSET_URL", raising=False)
    base = setting(URL, SETTING_EDITS[case]) if case in SETTING_EDITS else BASE
    path = tmp_path / "c.toml"
    path.write_text(base + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert SECRET not in message and "fifteen-chars-x" not in message


ACCEPTED = [
    ("lowercase-market", ROUTING + agent('markets = ["mx"]')),
    ("sla-per-channel-type", ROUTING + "[routing.sla.telegram]\nfirst_response_minutes = 5\n"),
    ("sla-kind-without-channel", ROUTING + "[routing.sla.email]\nfirst_response_minutes = 5\n"),
    ("custom-kind", ROUTING + '[routing.channel_kinds]\napi = "vip"\n'
                    + agent("capacity = { vip = 2, chat = 3 }")),
    ("rule-channel-type", ROUTING + rule('channel = ["api"]')),
    ("rule-skill", ROUTING + rule('skill = ["refund", "dispute"]')),
    ("redis-url-unix", '[storage]\nredis_url = "unix:///tmp/redis.sock"\n'),
    ("redis-url-tls", '[storage]\nredis_url = "rediss://redis.internal:6380/2"\n'),
]


@pytest.mark.parametrize(("case", "extra"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepts_what_routing_can_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      case: str, extra: str) -> None:
    monkeypatch.setenv("IH_TOKEN", SECRET)
    monkeypatch.setenv("IH_SECRET", SECRET)
    path = tmp_path / "c.toml"
    path.write_text(BASE + extra)
    load_config(path)


def test_read_only_needs_no_serve_secrets(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IH_TOKEN", raising=False)
    monkeypatch.delenv("IH_SECRET", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match="IH_TOKEN is not set"):
        load_config(path)
    loaded = load_config(path, read_only=True)
    token = loaded.config.api.tokens[0].token
    secret = loaded.channel_settings["demo"].secret
    assert isinstance(token, UnresolvedSecret) and isinstance(secret, UnresolvedSecret)
    with pytest.raises(RuntimeError, match="not resolved"):
        token.reveal_bytes()  # fails closed: never authenticates with an empty value
    # The form of a secret reference is still checked, and so is everything else.
    path.write_text(BASE.replace('"env:IH_SECRET"', '"plain"'))
    with pytest.raises(ConfigError, match=r"channels\[0\]\.settings\.secret: .*literal"):
        load_config(path, read_only=True)
    path.write_text(BASE + ROUTING + rule('language = ["portuguese"]'))
    with pytest.raises(ConfigError, match="can never match"):
        load_config(path, read_only=True)


def test_read_only_still_resolves_the_redis_password(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The views connect to Redis: its password is the one secret they need."""
    monkeypatch.delenv("IH_REDIS_PW", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(BASE + '[storage]\nredis_url = "redis://127.0.0.1:6379/0"\n'
                    'redis_password = "env:IH_REDIS_PW"\n')
    with pytest.raises(ConfigError, match=r"storage\.redis_password: environment variable "
                                          "IH_REDIS_PW is not set"):
        load_config(path, read_only=True)
    monkeypatch.setenv("IH_REDIS_PW", "pw")
    loaded = load_config(path, read_only=True)
    assert loaded.config.storage.redis_password is not None
    assert loaded.config.storage.redis_password.reveal() == "pw"
