"""Redis Sentinel support: the ``redis+sentinel://`` URL."""


from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379  # Sentinel's own port; the master's address comes from the sentinels
FORMAT = "redis+sentinel://host:port[,host:port...]/<master-name>[/<db>]"
# A master name as sentinel.conf's "sentinel monitor <name>" takes it, kept to characters that
# need no escaping anywhere (URL, log line, redis-cli).
_MASTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
_DB = re.compile(r"[0-9]{1,5}")


class SentinelUrlError(ValueError):
    """A ``redis+sentinel://`` URL that does not name sentinels and a master."""


class SentinelTarget(NamedTuple):
    """What a sentinel URL names: where to ask, whom to ask for, which database."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int
    tls: bool


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES if "://" in url else False


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse strictly: an operator's typo must fail ``inboxhub check``, not the first failover.

    Credentials are refused (the master's password is ``storage.redis_password``, the
    sentinels' ``storage.sentinel_password``, both ``env:``/``file:`` secrets)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise SentinelUrlError(f"scheme must be {' or '.join(SCHEMES)}")
    if any(char.isspace() or not char.isprintable() for char in url):
        raise SentinelUrlError("contains whitespace or control characters")
    if "?" in rest or "#" in rest:
        raise SentinelUrlError("a sentinel URL takes no query or fragment")
    if "@" in rest:
        raise SentinelUrlError("credentials in a URL are refused")
    netloc, slash, path = rest.partition("/")
    if not netloc:
        raise SentinelUrlError("no sentinel named")
    sentinels = [_sentinel(item) for item in netloc.split(",")]
    if len(set(sentinels)) != len(sentinels):
        raise SentinelUrlError("a sentinel is listed twice")
    if not slash or not path:
        raise SentinelUrlError("no master name: add /<master-name> (as in sentinel.conf's "
                               "'sentinel monitor <master-name> ...')")
    segments = path.split("/")
    if len(segments) > 2:
        raise SentinelUrlError("the path must be /<master-name> or /<master-name>/<db>")
    master = segments[0]
    if not _MASTER.fullmatch(master):
        raise SentinelUrlError(f"bad master name {master!r} (letters, digits, '.', '_', '-'; "
                               "at most 64)")
    db = 0
    if len(segments) == 2:
        if not _DB.fullmatch(segments[1]):
            raise SentinelUrlError(f"bad database {segments[1]!r}: expected a number such as 0")
        db = int(segments[1])
    return SentinelTarget(sentinels, master, db, scheme == "rediss+sentinel")


def _sentinel(item: str) -> tuple[str, int]:
    """One ``host[:port]`` (IPv6 in brackets); the port defaults to Sentinel's 26379."""
    if not item:
        raise SentinelUrlError("empty sentinel in the list")
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise SentinelUrlError(f"unclosed '[' in {item!r}")
        host, tail = item[1:end], item[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SentinelUrlError(f"{item!r}: not an IPv6 address in brackets") from None
    else:
        host, colon, port_text = item.partition(":")
        tail = colon + port_text
        if not _HOST.fullmatch(host):
            raise SentinelUrlError(f"{item!r} is not host:port")
    if not tail:
        return host, DEFAULT_PORT
    if not tail.startswith(":") or not re.fullmatch(r"[0-9]{1,5}", tail[1:]):
        raise SentinelUrlError(f"bad port in {item!r}")
    port = int(tail[1:])
    if not 1 <= port <= 65535:
        raise SentinelUrlError(f"bad port in {item!r}")
    return host, port
