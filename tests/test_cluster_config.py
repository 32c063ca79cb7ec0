"""``storage.redis_url = "redis+cluster://..."``: accepted with its seed nodes, refused with
an error naming the key when malformed (no cluster needed: ``inboxhub check`` runs anywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import ConfigError, load_config
from storage.cluster import ClusterUrlError, is_cluster_url, parse_cluster_url
from tests.test_config_check import BASE, SECRET


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IH_TOKEN", SECRET)
    monkeypatch.setenv("IH_SECRET", SECRET)
    return tmp_path / "c.toml"


ACCEPTED = [
    ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,redis-3.internal:7002",
     [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("redis-3.internal", 7002)], False),
    ("redis+cluster://redis.internal", [("redis.internal", 6379)], False),
    ("rediss+cluster://redis.internal:6380/", [("redis.internal", 6380)], True),
    ("redis+cluster://[::1]:7000/0", [("::1", 7000)], False),
]


@pytest.mark.parametrize(("url", "seeds", "tls"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepts_seed_lists(config_path: Path, url: str, seeds: list[tuple[str, int]],
                            tls: bool) -> None:
    config_path.write_text(BASE + f'[storage]\nredis_url = "{url}"\n')
    assert load_config(config_path).config.storage.redis_url == url
    assert is_cluster_url(url)
    assert parse_cluster_url(url) == (seeds, tls)


REFUSED = [
    ("redis+cluster://", "no node named"),
    ("redis+cluster://a:7000,:7001", "':7001' is not host:port"),
    ("redis+cluster://a:7000,,b:7001", "empty node in the list"),
    ("redis+cluster://a:7000,b:99999", "bad port in 'b:99999'"),
    ("redis+cluster://a:7000/3", "database 0 only"),
    ("redis+cluster://a:7000?ssl=true", "no query or fragment"),
    ("redis+cluster://a:7000,b:x", "bad port in 'b:x'"),
    ("redis+cluster://a:7000/x/y", "database 0 only"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refuses_malformed_urls_naming_the_key(config_path: Path, url: str,
                                               reason: str) -> None:
    config_path.write_text(BASE + f'[storage]\nredis_url = "{url}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    message = str(caught.value)
    assert f"storage.redis_url: malformed URL {url!r}: " in message, message
    assert reason in message and "expected redis+cluster://host:port,host:port" in message
    with pytest.raises(ClusterUrlError):
        parse_cluster_url(url)


def test_a_password_goes_in_redis_password_not_the_url(config_path: Path) -> None:
    config_path.write_text(
        BASE + '[storage]\nredis_url = "redis+cluster://:pw@a:7000,b:7001"\n')
    with pytest.raises(ConfigError, match=r"storage\.redis_url: put the password in "
                                          r"storage\.redis_password"):
        load_config(config_path)
    config_path.write_text(
        BASE + '[storage]\nredis_url = "redis+cluster://a:7000"\n'
        'redis_password = "env:IH_SECRET"\n')
    loaded = load_config(config_path)
    assert loaded.config.storage.redis_password is not None
    assert loaded.config.storage.redis_password.reveal() == SECRET


def test_other_schemes_are_not_cluster_urls() -> None:
    for url in ("redis://h:6379/0", "rediss://h:6380", "unix:///tmp/r.sock", "h:7000"):
        assert not is_cluster_url(url)
