"""Redis Cluster support: the ``redis+cluster://`` URL and the few places where a command must
be split per slot.

Every key the hub writes is hash-tagged (storage/keys.py), so each Lua script and each
``transaction=True`` pipeline touches one slot and runs unchanged on a cluster. What differs is
a command naming keys of several partitions at once: XREADGROUP over every partition's stream
(storage/streams.py reads them per stream there), and MGET/DEL/EXISTS over several tags, which
the cluster client splits per slot itself (``delete``, ``exists``, ``unlink``, ``mget_nonatomic``).
SCAN with a pattern walks every primary in redis-py's cluster ``scan_iter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import urllib.parse
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisClusterException, SlotNotCoveredError

SCHEMES = ("redis+cluster", "rediss+cluster")
# sha1 -> source of every script registered on a HubRedisCluster (a sha names its source).
_SOURCES: dict[str, Any] = {}
DEFAULT_PORT = 6379


class ClusterUrlError(ValueError):
    """A ``redis+cluster://`` URL that does not name seed nodes as host:port."""


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES if "://" in url else False


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], bool]:
    """The seed nodes and whether to use TLS. Seeds are only where the client starts: it
    learns every node (and later every failover) from the cluster itself."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ClusterUrlError(f"scheme must be {' or '.join(SCHEMES)}")
    if any(char.isspace() for char in url):
        raise ClusterUrlError("contains whitespace")
    netloc, _, tail = rest.partition("/")
    if "?" in netloc or "#" in netloc or "?" in tail or "#" in tail:
        raise ClusterUrlError("a cluster URL takes no query or fragment")
    if tail not in ("", "0"):
        raise ClusterUrlError("Redis Cluster has database 0 only; give no path or /0")
    if not netloc:
        raise ClusterUrlError("no node named")
    seeds: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if not item:
            raise ClusterUrlError("empty node in the list")
        if "@" in item:
            raise ClusterUrlError("credentials in a URL are refused")
        parts = urllib.parse.urlsplit("//" + item)
        try:
            port = parts.port
        except ValueError:
            raise ClusterUrlError(f"bad port in {item!r}") from None
        if not parts.hostname or parts.path:
            raise ClusterUrlError(f"{item!r} is not host:port")
        seeds.append((parts.hostname, port if port else DEFAULT_PORT))
    return seeds, scheme == "rediss+cluster"


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is the cluster client (per-slot paths apply), cheap enough per call."""
    return isinstance(redis, RedisCluster)


class ClusterTopologyError(RedisConnectionError):
    """The cluster is changing (a primary died, slots not yet served by its replica).

    redis-py raises these as RedisClusterException, which is not a RedisError: the hub's
    supervised loops would log a crash for what is an outage. As a ConnectionError they back
    off and recover like on any Redis outage. A CROSSSLOT mistake stays what it is: a bug.
    """


_TOPOLOGY = ("Redis Cluster cannot be connected", "All slots are not covered",
             "startup_nodes could not agree", "No targets were found")


@contextlib.contextmanager
def _outage() -> Iterator[None]:
    try:
        yield
    except SlotNotCoveredError as exc:
        raise ClusterTopologyError(str(exc)) from exc
    except RedisClusterException as exc:
        if str(exc).startswith(_TOPOLOGY):
            raise ClusterTopologyError(str(exc)) from exc
        raise


class HubRedisCluster(RedisCluster):
    """redis-py's cluster client, with Lua scripts allowed in pipelines.

    redis-py refuses EVALSHA in a cluster pipeline (it cannot load a missing script on the
    right node mid-pipeline). The hub batches script calls in pipelines (a page of
    conversations is one script per partition), so here a pipelined script call is sent as
    EVAL with its source: routed by its keys like any command, and never NOSCRIPT, not even on
    a replica just promoted (script caches are not replicated). Outside pipelines scripts go
    as EVALSHA, reloaded by redis-py on NOSCRIPT.
    """

    def __init__(self, *args: Any, max_connections: int = 64, pool_timeout: float = 5.0,
                 **kwargs: Any) -> None:
        kwargs["max_connections"] = max_connections
        super().__init__(*args, **kwargs)
        # redis-py's cluster pools do not wait: past max_connections a command fails at once
        # (MaxConnectionsError), so a burst of webhooks would be refused. One permit per
        # command or pipeline in flight, at most one connection per node each, makes a burst
        # wait up to pool_timeout as the single-Redis BlockingConnectionPool does.
        self._permits = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._permits.acquire(), self._pool_timeout)
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            yield
        finally:
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            with _outage():
                return await super().execute_command(*args, **kwargs)

    async def ensure_topology(self) -> None:
        """Run a refresh that is due (asked for by refresh_topology, or never done) before
        routing by hand (storage/replication.py), as redis-py's commands do before theirs."""
        due = getattr(self, "_initialize_due", None)
        if due() if due is not None else self._initialize:
            await self.initialize()

    async def follow_moved(self, error: MovedError, node: ClusterNode) -> None:
        """Point the error's slot at the node MOVED names, as redis-py's commands do, so the
        next attempt goes there without waiting for a full refresh (which is asked for too)."""
        if not error.host:  # "MOVED 3999 :6380": the node that answered, on another port
            error.host = node.host
        moved = getattr(self.nodes_manager, "move_slot", None)
        if moved is not None:
            done = moved(error)
            if inspect.isawaitable(done):
                await done
        self.refresh_topology()

    def refresh_topology(self, failed_node: str | None = None) -> None:
        """Ask for a slot map refresh after a redirect or a lost node, the way redis-py's own
        pipeline does (merged, run by the next command once due), trying ``failed_node``
        last. Older redis-py has only the flag."""
        request = getattr(self, "_request_refresh", None)
        if request is not None:
            request(last_failed_node_name=failed_node)
        else:
            self._initialize = True

    async def initialize(self, *args: Any, **kwargs: Any) -> HubRedisCluster:
        with _outage():
            await super().initialize(*args, **kwargs)
        return self

    def pubsub(self, node: Any | None = None, host: str | None = None,
               port: int | None = None, **kwargs: Any) -> ClusterPubSub:
        return HubClusterPubSub(self, node=node, host=host, port=port, **kwargs)

    async def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        """PUBLISH on the node a subscriber of ``channel`` listens on (redis-py's cluster
        pubsub subscribes on the node of the channel's slot): the message reaches every node
        either way, but only that node counts its subscribers, which ``routing reload``
        reports."""
        kwargs.setdefault("target_nodes", self.get_node_from_key(channel))
        return await self.execute_command("PUBLISH", channel, message, **kwargs)

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        registered: AsyncScript = super().register_script(script)
        _SOURCES[registered.sha] = script
        return registered

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there, with the reason
        return HubClusterPipeline(self, transaction)  # type: ignore[abstract]


class HubClusterPipeline(ClusterPipeline):
    """See HubRedisCluster: EVALSHA queued as EVAL; SUNION of one slot's sets allowed."""

    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, HubRedisCluster)
        async with client.permit():
            with _outage():
                return await super().execute(raise_on_error, allow_redirections)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        source = _SOURCES.get(sha)
        if source is None:
            raise ValueError("a script called in a cluster pipeline must be registered on "
                             "the HubRedisCluster client")
        self.execute_command("EVAL", source, numkeys, *keys_and_args)
        # redis-py's Script awaits what evalsha returns; awaiting a ClusterPipeline itself
        # would re-initialise it and silently drop every queued command.
        return _Queued(self)

    def sunion(self, keys: Any, *args: Any) -> Any:
        """One partition's index sets (storage/sla.py): one slot, as SUNION requires."""
        names = [keys, *args] if isinstance(keys, str | bytes) else [*keys, *args]
        return self.execute_command("SUNION", *names)


class _Queued:
    """What a queued pipelined call returns: awaiting it gives the pipeline, unchanged."""

    def __init__(self, pipe: ClusterPipeline) -> None:
        self.pipe = pipe

    def __await__(self) -> Generator[Any, None, ClusterPipeline]:
        return self._pipe().__await__()

    async def _pipe(self) -> ClusterPipeline:
        return self.pipe


class HubClusterPubSub(ClusterPubSub):
    """Cluster pubsub whose topology errors are Redis outages (see ClusterTopologyError)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _outage():
            return await super().execute_command(*args, **kwargs)

    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        with _outage():
            return await super().get_message(*args, **kwargs)
