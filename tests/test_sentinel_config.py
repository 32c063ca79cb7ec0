"""``storage.redis_url = "redis+sentinel://..."``: accepted with its sentinels, master name and
database; refused with an error naming the key and the expected format when malformed (no
Sentinel needed: ``inboxhub check`` runs anywhere)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from hub.config import ConfigError, load_config
from storage.cluster import is_cluster_url
from storage.sentinel import (
    FORMAT,
    HubSentinel,
    SentinelTarget,
    SentinelUrlError,
    is_sentinel_url,
    newest_master,
    parse_sentinel_url,
)
from tests.test_config_check import BASE, SECRET


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IH_TOKEN", SECRET)
    monkeypatch.setenv("IH_SECRET", SECRET)
    return tmp_path / "c.toml"


ACCEPTED = [
    ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,sentinel-3.internal:26381/mymaster",
     SentinelTarget([("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3.internal", 26381)],
                    "mymaster", 0, False)),
    ("redis+sentinel://sentinel.internal/inbox-hub.eu_1",
     SentinelTarget([("sentinel.internal", 26379)], "inbox-hub.eu_1", 0, False)),
    ("rediss+sentinel://s1:26380,s2:26380/mymaster/3",
     SentinelTarget([("s1", 26380), ("s2", 26380)], "mymaster", 3, True)),
    ("redis+sentinel://[::1]:26379,[fe80::1]/m/0",
     SentinelTarget([("::1", 26379), ("fe80::1", 26379)], "m", 0, False)),
]


@pytest.mark.parametrize(("url", "target"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepts_sentinels_and_a_master_name(config_path: Path, url: str,
                                             target: SentinelTarget) -> None:
    config_path.write_text(BASE + f'[storage]\nredis_url = "{url}"\n')
    assert load_config(config_path).config.storage.redis_url == url
    assert is_sentinel_url(url) and not is_cluster_url(url)
    assert parse_sentinel_url(url) == target


REFUSED = [
    ("redis+sentinel://", "no sentinel named"),
    ("redis+sentinel:///mymaster", "no sentinel named"),
    ("redis+sentinel://s1:26379", "no master name"),
    ("redis+sentinel://s1:26379/", "no master name"),
    ("redis+sentinel://s1:26379,s2:26379", "no master name"),
    ("redis+sentinel://s1:26379,,s2:26379/m", "empty sentinel in the list"),
    ("redis+sentinel://s1:26379,/m", "empty sentinel in the list"),
    ("redis+sentinel://,s1/m", "empty sentinel in the list"),
    ("redis+sentinel://s1:99999/m", "bad port in 's1:99999'"),
    ("redis+sentinel://s1:0/m", "bad port in 's1:0'"),
    ("redis+sentinel://s1:/m", "bad port in 's1:'"),
    ("redis+sentinel://s1:x/m", "bad port in 's1:x'"),
    ("redis+sentinel://s1:-1/m", "bad port in 's1:-1'"),
    ("redis+sentinel://s1:26379:1/m", "bad port in 's1:26379:1'"),
    ("redis+sentinel://[::1/m", "unclosed '['"),
    ("redis+sentinel://[nothost]:1/m", "not an IPv6 address"),
    ("redis+sentinel://[::1]x/m", "bad port in '[::1]x'"),
    ("redis+sentinel://:26379/m", "':26379' is not host:port"),
    ("redis+sentinel://s1%2F..:1/m", "is not host:port"),
    ("redis+sentinel://s1,s1/m", "listed twice"),
    ("redis+sentinel://s1/m/x", "bad database 'x'"),
    ("redis+sentinel://s1/m/", "bad database ''"),
    ("redis+sentinel://s1/m/\u0663", "bad database"),  # an Arabic-Indic digit: isdigit() is True
    ("redis+sentinel://s1/m/123456", "bad database"),
    ("redis+sentinel://s1/m/0/extra", "/<master-name> or /<master-name>/<db>"),
    ("redis+sentinel://s1//0", "bad master name ''"),
    ("redis+sentinel://s1/my%20master", "bad master name 'my%20master'"),
    ("redis+sentinel://s1/-m", "bad master name '-m'"),
    ("redis+sentinel://s1/" + "m" * 65, "bad master name"),
    ("redis+sentinel://s1/m?db=1", "no query or fragment"),
    ("redis+sentinel://s1/m#frag", "no query or fragment"),
    ("REDIS+SENTINEL://s1/m", "scheme must be redis+sentinel or rediss+sentinel"),
    ("redis+sentinel://s1/m\\u0000", "control characters"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refuses_malformed_urls_naming_the_key(config_path: Path, url: str,
                                               reason: str) -> None:
    """Each mistake is named, with the format to write instead: found by ``inboxhub check``,
    not at the first failover."""
    config_path.write_text(BASE + f'[storage]\nredis_url = "{url}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    message = str(caught.value)
    assert "storage.redis_url: malformed URL " in message, message
    assert reason in message, message
    assert f"expected {FORMAT}" in message, message
    with pytest.raises(SentinelUrlError):
        parse_sentinel_url(url.replace("\\u0000", "\x00"))


def test_credentials_in_the_url_are_refused(config_path: Path) -> None:
    """Secrets are env:/file: settings, never part of a URL that ends up in logs and
    ``/readyz``: the master's password is redis_password, the sentinels' sentinel_password."""
    for url in ("redis+sentinel://:pw@s1:26379/m", "redis+sentinel://user:pw@s1/m"):
        config_path.write_text(BASE + f'[storage]\nredis_url = "{url}"\n')
        with pytest.raises(ConfigError, match=r"storage\.redis_url: put the password in "
                                              r"storage\.redis_password"):
            load_config(config_path)
        with pytest.raises(SentinelUrlError, match="credentials"):
            parse_sentinel_url(url)
    config_path.write_text(
        BASE + '[storage]\nredis_url = "redis+sentinel://s1:26379/m"\n'
        'redis_password = "env:IH_SECRET"\nsentinel_password = "env:IH_TOKEN"\n')
    storage = load_config(config_path).config.storage
    assert storage.redis_password is not None and storage.redis_password.reveal() == SECRET
    assert storage.sentinel_password is not None
    assert storage.sentinel_password.reveal() == SECRET


def test_a_sentinel_password_needs_a_sentinel_url(config_path: Path) -> None:
    config_path.write_text(BASE + '[storage]\nredis_url = "redis://h:6379/0"\n'
                                  'sentinel_password = "env:IH_SECRET"\n')
    with pytest.raises(ConfigError, match=r"storage\.sentinel_password: only used with a "
                                          r"redis\+sentinel://"):
        load_config(config_path)
    config_path.write_text(BASE + '[storage]\nredis_url = "redis+sentinel://s1/m"\n'
                                  'sentinel_password = "hunter2-literal-value"\n')
    with pytest.raises(ConfigError, match="sentinel_password"):
        load_config(config_path)  # a literal secret, as for every other secret


def test_inboxhub_check_accepts_a_sentinel_url(config_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text(BASE + '[storage]\nredis_url = "redis+sentinel://s1,s2,s3/m/1"\n')
    assert main(["--config", str(config_path), "check"]) == 0
    assert ": OK" in capsys.readouterr().out
    config_path.write_text(BASE + '[storage]\nredis_url = "redis+sentinel://s1,s2,s3"\n')
    assert main(["--config", str(config_path), "check"]) == 2
    err = capsys.readouterr().err
    assert "storage.redis_url" in err and "no master name" in err and FORMAT in err


def test_other_schemes_are_not_sentinel_urls() -> None:
    for url in ("redis://h:6379/0", "rediss://h:6380", "unix:///tmp/r.sock", "h:26379/m",
                "redis+cluster://h:7000", "sentinel://h/m"):
        assert not is_sentinel_url(url)


def _state(epoch: int, port: int, *, down: bool = False) -> dict[str, Any]:
    """One sentinel's ``SENTINEL MASTER`` reply as redis-py parses it."""
    return {"config-epoch": epoch, "ip": "10.0.0.9", "port": port, "is_master": True,
            "is_sdown": down, "is_odown": False, "num-other-sentinels": 2}


def test_the_newest_configuration_wins_and_an_older_one_is_never_a_fallback() -> None:
    """A sentinel that has not heard of the failover (epoch 1) names the old master: the
    newer configuration (epoch 2) wins; and if every sentinel with the newest one sees its
    master down, there is no master rather than the replaced one."""
    usable = functools.partial(HubSentinel([]).check_master_state, service_name="m")
    assert newest_master([_state(1, 6379), _state(2, 6380), _state(2, 6380)],
                         usable) == ("10.0.0.9", 6380)
    assert newest_master([_state(2, 6380, down=True), _state(1, 6379)], usable) is None
    assert newest_master([_state(2, 6380, down=True), _state(2, 6380)],
                         usable) == ("10.0.0.9", 6380)
    assert newest_master([], usable) is None
