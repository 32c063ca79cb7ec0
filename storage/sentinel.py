"""Redis Sentinel support: the ``redis+sentinel://`` URL and a connection pool that follows the
master Sentinel names.

The hub talks to the master only (every write and every read: a replica may lag, and the
streams' consumer groups live on the master). redis-py's ``SentinelConnectionPool`` asks the
sentinels for the master's address each time it opens a connection, so after a master dies
the first connection that fails is replaced by one to the promoted replica. Two gaps of
redis-py's own client are closed here:

* It believes the first sentinel that answers. A sentinel that has not yet heard of a
  failover (they learn it from each other's hellos, every 2 s) names the old master;
  ``HubSentinel`` asks every sentinel and believes the highest ``config-epoch``.
* It looks only when it connects. After a switchover (``SENTINEL FAILOVER``, or a master cut
  off and then back) the old master stays up and writable for 8 s or more before Sentinel
  demotes it, and every write it takes then is discarded when it resyncs from the new master.
  ``MasterWatch`` asks the sentinels twice a second and moves the pool's connections.

Script caches are not replicated: on the new master EVALSHA answers NOSCRIPT and redis-py's
``Script`` loads the source and calls again (pipelines load missing scripts before they run).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
# How long master discovery waits for the slower sentinels once one has answered.
DISCOVERY_GRACE = 1.0

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


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's connections, re-resolved through the sentinels on every connect, and
    blocking like the single-Redis pool: past ``max_connections`` a command waits up to
    ``timeout`` for a connection instead of failing with "Too many connections" (redis-py's
    own sentinel pool does not wait).

    When an address lookup finds the master moved, redis-py closes the idle connections but
    lets the busy ones go back to the pool still connected to the old master (which, after a
    switchover, takes writes that are then discarded). Here they are marked to reconnect when
    their command returns (closing a socket under its reader is not safe in redis-py).
    """

    async def get_master_address(self) -> Any:
        address = await self.sentinel_manager.discover_master(self.service_name)
        known = self.master_address
        if address != known:
            self.master_address = address
            if known is not None:
                log.warning("Redis Sentinel master %s moved from %s:%s to %s:%s; reconnecting",
                            self.service_name, *known, *address)
            # Marked before awaiting the idle ones' close: a busy connection released during
            # that await must not go back to the pool still on the old master.
            for connection in list(self._in_use_connections):
                connection.mark_for_reconnect()  # type: ignore[no-untyped-call]
            await self.disconnect(inuse_connections=False)
        return address


class HubSentinel(Sentinel):
    """redis-py's Sentinel manager, believing the most recent configuration any sentinel
    has rather than the first answer."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        replies = await self._ask_all(service_name)
        states: list[dict[str, Any]] = []
        failed: list[str] = []
        for reply in replies:
            if isinstance(reply, RedisConnectionError | RedisTimeoutError | ResponseError):
                # Down, refusing us (a password, a certificate) or not knowing this master:
                # the reason is what the operator needs (it names hosts, never secrets).
                failed.append(f"{type(reply).__name__}: {str(reply)[:200]}")
            elif isinstance(reply, BaseException):
                raise reply
            else:
                states.append(reply)
        address = newest_master(
            states, lambda state: self.check_master_state(state, service_name))
        if address is None:
            detail = f" (from {len(failed)} sentinel(s): {'; '.join(sorted(set(failed)))})" \
                if failed else ""
            raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")
        return address

    async def _ask_all(self, service_name: str) -> list[Any]:
        """Every sentinel's ``SENTINEL MASTER`` reply (or its error), asked at once. Healthy
        sentinels answer within milliseconds; one that hangs is given DISCOVERY_GRACE once
        another has answered, not its full socket timeout on every connect."""
        tasks = [asyncio.ensure_future(sentinel.sentinel_master(service_name))
                 for sentinel in self.sentinels]
        try:
            done, pending = await asyncio.wait(tasks, timeout=DISCOVERY_GRACE)
            if pending and not any(not t.cancelled() and t.exception() is None for t in done):
                await asyncio.wait(pending)  # nobody answered yet: wait for their timeouts
        finally:
            for task in tasks:
                task.cancel()
            settled = await asyncio.gather(*tasks, return_exceptions=True)
        return [reply for reply in settled if not isinstance(reply, asyncio.CancelledError)]


class MasterWatch:
    """Asks the sentinels every ``interval`` seconds (one small command each) where the master
    is, so that the pool moves (see BlockingSentinelPool) even while no connection fails: after
    a switchover the old master stays up and writable. Writes it still took before the move
    are a switchover's loss window; ``storage.replica_acks`` (WAIT) is what closes it."""

    def __init__(self, pool: Any, interval: float = 0.5) -> None:
        """``pool``: the client's BlockingSentinelPool (redis-py types it as a plain
        ConnectionPool)."""
        self.pool = pool
        self.interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.pool.get_master_address()
            except (RedisConnectionError, RedisTimeoutError, ResponseError):
                pass  # no master right now (a failover under way): connects will retry
            except Exception:  # a bug here must not end the watch for the process's life
                log.exception("Redis Sentinel master watch failed; trying again")


def newest_master(states: list[dict[str, Any]],
                  usable: Callable[[dict[str, Any]], bool]) -> tuple[str, int] | None:
    """The master address of the newest configuration (highest ``config-epoch``) that some
    sentinel holding it sees up, or None. An older configuration never wins, even when the
    sentinels holding the newest one see their master down: falling back to an older one is
    how a client ends up writing to a master that has been replaced."""
    if not states:
        return None
    newest = max(int(state["config-epoch"]) for state in states)
    for state in states:
        if int(state["config-epoch"]) == newest and usable(state):
            return str(state["ip"]), int(state["port"])
    return None


def is_sentinel(redis: Any) -> bool:
    """Whether ``redis`` reaches its server through Sentinel (durability reads the master)."""
    return isinstance(getattr(redis, "connection_pool", None), SentinelConnectionPool)
