"""``storage.replica_acks``: a batch of writes is acknowledged only once ``WAIT`` says enough
replicas have it.

Redis replicates asynchronously: a primary that dies right after answering may take writes its
replica never received, and the promoted replica then lacks messages the hub acknowledged to a
provider (who will never send them again). ``WAIT n timeout`` blocks until ``n`` replicas
acknowledged every write *the calling connection* made, so it has to travel on the connection
that carried the batch: here it ends the batch's own pipeline.

Two details make that sound:

* ``WAIT`` is documented to cover the writes of the calling connection. A batch whose scripts
  wrote nothing (every message a duplicate: the provider's retry after an earlier 503) has none,
  although the first delivery's write, made on another connection, may still not be on any
  replica. (Redis 7.0, which the tests run, waits for the primary's whole offset all the same;
  nothing promises that.) So each batch also sets a small probe key
  (``PartitionKeys.replica_ack``) just before ``WAIT``: a write on this connection at the
  primary's current offset, so ``WAIT`` covers everything the primary had, the first delivery
  included.
* On Redis Cluster a batch's writes land on several primaries. Each primary's share goes as one
  pipeline on one connection of that node (its scripts, the probe, ``WAIT``), so each ``WAIT``
  confirms exactly the writes of that node. MOVED, ASK, TRYAGAIN, CLUSTERDOWN and connection
  errors send the calls not yet confirmed again (after a topology refresh), as redis-py's own
  cluster pipeline does; a call that was stored but whose node did not confirm it is sent again
  too (ingest is idempotent by provider message id): its second answer, normally a duplicate,
  comes from whichever node holds the message now, and that node's ``WAIT`` is what counts.

Too few replicas within the timeout is not retried here (it would only double the wait): each
call whose primary fell short gets ``ReplicaAckTimeout``, a Redis connection error, so its
webhook answers 503 and a poll loop backs off; the provider's retry is then deduplicated. On a
cluster only the calls on that primary fail: a stalled replica stops one shard's ingest, not
the batch's others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from storage.cluster import HubRedisCluster, is_cluster

#: The probe key lives this long after the last batch set it: it only has to exist as a write.
PROBE_TTL_MS = 600_000
#: Attempts on a cluster whose topology is changing, 0.25 s apart (redis-py's pipeline waits as
#: long after CLUSTERDOWN), about 2 s in all, what a slot move or most of a failover takes; past
#: them the batch fails as an outage (503) and the provider retries.
CLUSTER_ATTEMPTS = 8
_RETRY_PAUSE = 0.25
_REDIRECT = (MovedError, AskError, TryAgainError, ClusterDownError)
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class ReplicaAcks:
    """``storage.replica_acks`` and ``storage.replica_ack_timeout_ms``."""

    replicas: int
    timeout_ms: int


class ReplicaAckTimeout(RedisConnectionError):
    """Fewer replicas than ``storage.replica_acks`` confirmed a batch within the timeout.

    The writes may be on the primary (and are then deduplicated when the provider delivers
    again); they were not acknowledged because a failover could still lose them."""

    def __init__(self, wanted: int, got: int, node: str) -> None:
        super().__init__(f"{got} of {wanted} replica(s) confirmed the write on {node} in time "
                         "(storage.replica_acks)")
        self.wanted = wanted
        self.got = got
        self.node = node


ProbedCall = tuple[Sequence[Any], Sequence[Any], str]  # script keys, args, probe key


def _probe(key: str, acks: ReplicaAcks) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The probe write, then WAIT: the last two commands of every acknowledged batch."""
    return ("SET", key, "1", "PX", PROBE_TTL_MS), ("WAIT", acks.replicas, acks.timeout_ms)


async def run_acked(redis: Any, script: AsyncScript, calls: Sequence[ProbedCall],
                    acks: ReplicaAcks) -> tuple[list[Any], dict[int, ReplicaAckTimeout]]:
    """``storage.scripts.run_pipelined``, each answer counted only once ``acks.replicas``
    replicas have it. Returns the answers (an error answer as its exception) and, by call
    index, the calls whose replicas fell short: stored on the primary but not confirmed, for
    the caller to fail once it has recorded what is stored (its events). A connection error or
    an unsettled cluster raises."""
    if not calls:
        return [], {}
    if is_cluster(redis):
        return await _run_cluster(redis, script, calls, acks)
    return await _run_single(redis, script, calls, acks)


async def _run_single(redis: Any, script: AsyncScript, calls: Sequence[ProbedCall],
                      acks: ReplicaAcks) -> tuple[list[Any], dict[int, ReplicaAckTimeout]]:
    """One pipeline: the EVALSHAs, the probe, WAIT. A NOSCRIPT answer (script cache lost on a
    restart or failover) loads the script and sends those calls in a second pipeline that ends
    the same way; both WAITs must be satisfied (a failover between them would otherwise let the
    second confirm a server that never had the first's writes)."""
    probe_key = calls[0][2]
    answers, ok = await _pipeline(redis, script, calls, probe_key, acks)
    missing = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
    if missing:
        await redis.script_load(script.script)
        again, ok_again = await _pipeline(redis, script, [calls[i] for i in missing], probe_key,
                                          acks)
        for i, answer in zip(missing, again, strict=True):
            answers[i] = answer
        ok = min(ok, ok_again)
    if ok >= acks.replicas:
        return answers, {}
    error = ReplicaAckTimeout(acks.replicas, ok, "redis")
    return answers, {i: error for i, answer in enumerate(answers)
                     if not isinstance(answer, Exception)}


async def _pipeline(redis: Any, script: AsyncScript, calls: Sequence[ProbedCall],
                    probe_key: str, acks: ReplicaAcks) -> tuple[list[Any], int]:
    async with redis.pipeline(transaction=False) as pipe:
        for script_keys, args, _ in calls:
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
        for command in _probe(probe_key, acks):
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    waited = replies[-1]
    if isinstance(waited, Exception):
        raise waited  # WAIT itself failed (a replica, a connection lost): nothing is confirmed
    return replies[:-2], int(waited)


_PENDING: Any = object()


async def _run_cluster(cluster: HubRedisCluster, script: AsyncScript,
                       calls: Sequence[ProbedCall],
                       acks: ReplicaAcks) -> tuple[list[Any], dict[int, ReplicaAckTimeout]]:
    """Per node one pipeline (EVAL of each call, probe, WAIT) on one connection, all nodes at
    once; calls a node did not confirm go again, routed afresh, up to CLUSTER_ATTEMPTS."""
    answers: list[Any] = [_PENDING] * len(calls)
    todo = list(range(len(calls)))
    asked: dict[int, tuple[str, int]] = {}  # call -> node an ASK redirect named
    short: dict[int, ReplicaAckTimeout] = {}
    last_error: Exception = RedisConnectionError("Redis Cluster did not settle")
    for attempt in range(CLUSTER_ATTEMPTS):
        if attempt:
            await asyncio.sleep(_RETRY_PAUSE)
        async with cluster.permit():
            try:
                await cluster.ensure_topology()
                groups = _by_node(cluster, calls, todo, asked)
            except (SlotNotCoveredError, *_LOST) as exc:  # a slot between two primaries
                last_error = exc
                cluster.refresh_topology()
                continue
            results = await asyncio.gather(
                *(_node_batch(node, script.script, calls, indexes, asked, acks)
                  for node, indexes in groups.values()), return_exceptions=True)
        retry: list[int] = []
        for (node, indexes), result in zip(groups.values(), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, _LOST):
                    raise result
                last_error = result  # not sent: nothing of this share ran
                cluster.refresh_topology(node.name)
                retry += indexes
                continue
            replies, waited = result
            for i, reply in zip(indexes, replies, strict=True):
                asked.pop(i, None)
                if isinstance(reply, AskError):
                    asked[i] = (reply.host or node.host, reply.port)
                    retry.append(i)
                elif isinstance(reply, MovedError):
                    last_error = reply
                    await cluster.follow_moved(reply, node)
                    retry.append(i)
                elif isinstance(reply, (*_REDIRECT, *_LOST)):
                    last_error = reply
                    cluster.refresh_topology()
                    retry.append(i)
                elif isinstance(reply, Exception):
                    answers[i] = reply  # the script's own error: that message is not stored
                elif isinstance(waited, Exception):  # stored, but not confirmed: send again
                    last_error = waited
                    answers[i] = _keep_first(answers[i], reply)
                    retry.append(i)
                else:
                    answers[i] = _keep_first(answers[i], reply)
                    short.pop(i, None)
                    if waited < acks.replicas:
                        short[i] = ReplicaAckTimeout(acks.replicas, waited, node.name)
        if not retry:
            return answers, short
        todo = sorted(retry)
    raise _unsettled(last_error)


def _keep_first(earlier: Any, later: Any) -> Any:
    """A call sent again after its first answer: the second answer is normally a duplicate of
    the first write; the first says whether it was new (events and counts depend on that). A
    second answer that stored it anew (the first node died with it) replaces the first."""
    if earlier is _PENDING or isinstance(earlier, Exception):
        return later
    try:
        duplicate = bool(int(later[3]))
        same = later[0] == earlier[0]
    except (TypeError, ValueError, IndexError):
        return later
    return earlier if duplicate and same else later


def _by_node(cluster: HubRedisCluster, calls: Sequence[ProbedCall], todo: Sequence[int],
             asked: dict[int, tuple[str, int]]) -> dict[str, tuple[ClusterNode, list[int]]]:
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for i in todo:
        node = cluster.get_node(*asked[i]) if i in asked else None
        if node is None:  # routed by the key's slot (an ASK to a node not yet known too)
            asked.pop(i, None)
            node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(calls[i][0][0]))
        groups.setdefault(node.name, (node, []))[1].append(i)
    return groups


async def _node_batch(node: ClusterNode, source: Any, calls: Sequence[ProbedCall],
                      indexes: Sequence[int], asked: dict[int, tuple[str, int]],
                      acks: ReplicaAcks) -> tuple[list[Any], int | Exception]:
    """One node's share: its calls as EVAL (ASKING before a call an ASK sent here, and before
    its probe, which shares the call's slot), the probe, WAIT; one connection, one round trip.
    The replies of the calls, and WAIT's count (or the error of the probe or of WAIT)."""
    commands: list[PipelineCommand] = []
    scripts: list[PipelineCommand] = []
    for i in indexes:
        script_keys, args, _ = calls[i]
        if i in asked:
            commands.append(PipelineCommand(len(commands), "ASKING"))
        command = PipelineCommand(len(commands), "EVAL", source, len(script_keys), *script_keys,
                                  *args)
        commands.append(command)
        scripts.append(command)
    last = indexes[-1]
    if last in asked:
        commands.append(PipelineCommand(len(commands), "ASKING"))
    set_probe, wait = _probe(calls[last][2], acks)
    commands.append(PipelineCommand(len(commands), *set_probe))
    waiting = PipelineCommand(len(commands), *wait)
    commands.append(waiting)
    probe = commands[-2]
    await node.execute_pipeline(commands)
    if isinstance(probe.result, Exception):  # WAIT may have covered less than the node has
        return [c.result for c in scripts], probe.result
    waited = waiting.result
    return [c.result for c in scripts], waited if isinstance(waited, Exception) else int(waited)


def _unsettled(error: Exception) -> Exception:
    """The cluster did not settle within the attempts: an outage to the caller (503)."""
    if isinstance(error, RedisConnectionError):
        return error
    return RedisConnectionError(f"Redis Cluster did not settle: {type(error).__name__}: {error}")
