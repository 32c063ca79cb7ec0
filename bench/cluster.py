"""Replica acknowledgements and failover: what ``storage.replica_acks`` costs and what it saves.

    python -m bench.cluster [--seconds 8] [--concurrency 32] [--failover-seconds 10]

Two parts, each ``python -m hub serve`` as a subprocess on loopback driven by signed POSTs from
this process (bench/ingest.py's load generator):

* **cost**: a redis-server primary with one replica (``--replicaof``, AOF off on both: the
  figure is WAIT's cost, not the disk's); the hub with ``replica_acks = 0``, then ``= 1``, on
  the same pair. Acknowledged rate and latency of each, and the ratio acks=1 / acks=0 from the
  same run.
* **failover**: a fresh 6-node Redis Cluster (3 primaries, a replica each; tests/redis_cluster.py)
  per setting. Providers deliver distinct messages at ``--concurrency``, each retried on any
  non-200 as providers do; after ``--warmup`` seconds one primary is killed with SIGKILL; once
  its replica is promoted the killed node is started again (empty) and rejoins as its replica,
  as an orchestrator restarts a pod. After ``--failover-seconds`` more of load, every
  acknowledged message id is looked up: *lost* counts those the cluster no longer has.
  *Recovered* is the time from the kill to the first acknowledgement of a delivery that began
  after it on a partition of the killed primary. Each setting runs twice: a plain kill, and a
  kill of a primary whose replica fell behind ``--lag`` seconds before (its link dropped by
  ``CLIENT KILL TYPE replica`` and the replica stalled with SIGSTOP so that it cannot catch up,
  as on a network blip); it resumes as its primary dies and is promoted with what it had.
  With ``replica_acks = 1`` lost must be 0 (the exit code says so); with 0 it is whatever
  the replication lag let through.

Everything is bounded in time and count; servers, the hub and the temporary directories are
removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.ingest import (
    SECRET,
    TEXTS,
    Bodies,
    Child,
    LoadResult,
    child_env,
    children,
    drive,
    free_port,
    load_row,
    print_table,
    run_bench,
    start,
)
from tests.redis_cluster import RedisClusterServer

CHANNEL = "bench"
PARTITIONS = 12  # 4 per primary
BUYERS = 500
RETRY_PAUSE = 0.05  # a provider's pause before delivering a refused message again
DELIVERY_CAP = 60.0  # seconds one message may take, retries included, before the bench gives up


def hub_config(workdir: Path, port: int, redis_url: str, replica_acks: int) -> Path:
    path = workdir / f"inboxhub-{port}.toml"
    path.write_text(f"""
[hub]
host = "127.0.0.1"
port = {port}
data_dir = "{workdir / f'data-{port}'}"
log_level = "error"

[storage]
redis_url = "{redis_url}"
partitions = {PARTITIONS}
replica_acks = {replica_acks}
replica_ack_timeout_ms = 500
socket_timeout_seconds = 5

[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_BENCH_ADMIN"

[[channels]]
name = "{CHANNEL}"
type = "api"
[channels.settings]
secret = "env:IH_BENCH_SECRET"
outbound_url = "http://127.0.0.1:9/unused"
""")
    return path


async def start_hub(started: list[Child], workdir: Path, redis_url: str,
                    replica_acks: int) -> tuple[Child, str]:
    port = free_port()
    config = hub_config(workdir, port, redis_url, replica_acks)
    env = child_env(IH_BENCH_SECRET=SECRET, IH_BENCH_ADMIN="bench-admin-token")
    return await start(started, f"inboxhub (replica_acks={replica_acks})",
                       [sys.executable, "-m", "hub", "--config", str(config), "serve"],
                       workdir / f"hub-{replica_acks}.log", env, port)


def signed(run: str, i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": f"{run}-{i}", "sender": f"buyer-{i % BUYERS}",
                       "text": TEXTS[i % len(TEXTS)]}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Inboxhub-Signature": signature}


# -- part 1: the cost on one Redis with a replica ----------------------------------------------


@contextlib.contextmanager
def redis_pair(workdir: Path) -> Iterator[str]:
    """A primary on TCP and its replica, AOF and RDB off; yields the primary's URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench.cluster needs redis-server on PATH (Debian: redis-server)")
    primary, replica = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port, extra in ((primary, []), (replica, ["--replicaof", "127.0.0.1", str(primary)])):
            data = workdir / f"redis-{port}"
            data.mkdir()
            procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(data), "--repl-diskless-sync-delay", "0",
                 *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(["redis-cli", "-p", str(replica), "info", "replication"],
                                  capture_output=True, timeout=5, check=False).stdout
            if b"master_link_status:up" in info:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the replica did not sync")
        yield f"redis://127.0.0.1:{primary}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def store_latency(url: str, seconds: float) -> tuple[float, float]:
    """One message at a time through ``Store.ingest`` straight to the primary, alternating
    acks=0 and acks=1 per message: the p50 of each in ms, WAIT's own latency without HTTP or
    group commit around it."""
    from redis.asyncio import Redis

    from channels.models import InboundMessage
    from storage.replication import ReplicaAcks
    from storage.store import Store

    client = Redis.from_url(url, socket_timeout=5)
    try:
        stores = [Store(client, partitions=1),
                  Store(client, partitions=1, replica_acks=ReplicaAcks(1, 1000))]
        samples: list[list[float]] = [[], []]
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            for acks, store in enumerate(stores):
                message = InboundMessage(
                    channel_type="api", channel_instance=CHANNEL, thread_id=f"lat-{i % BUYERS}",
                    sender_handle=f"lat-{i % BUYERS}", provider_message_id=f"lat{acks}-{i}",
                    text=TEXTS[i % len(TEXTS)])
                t0 = time.perf_counter()
                await store.ingest(message)
                samples[acks].append(time.perf_counter() - t0)
    finally:
        await client.aclose()
    p50 = [sorted(s)[len(s) // 2] * 1000 for s in samples]
    return p50[0], p50[1]


async def cost(args: argparse.Namespace, workdir: Path,
               ) -> tuple[LoadResult, LoadResult, tuple[float, float]]:
    """Both hubs up at once on the same pair, loaded in turn in ``--slice`` second slices
    (acks=0, acks=1, acks=0, ...): whatever else the machine does falls on both alike. Then
    ``store_latency`` on the same pair."""
    results = [LoadResult(), LoadResult()]
    with redis_pair(workdir) as url, children() as started:
        hubs = [await start_hub(started, workdir, url, acks) for acks in (0, 1)]
        urls = [f"{base}/webhooks/api/{CHANNEL}" for _, base in hubs]
        connectors = [aiohttp.TCPConnector(limit=args.concurrency) for _ in hubs]
        async with contextlib.AsyncExitStack() as stack:
            sessions = [await stack.enter_async_context(aiohttp.ClientSession(connector=c))
                        for c in connectors]
            bodies = [Bodies(f"cost{acks}") for acks in (0, 1)]
            for acks in (0, 1):  # warm-up, unmeasured
                await drive(sessions[acks], urls[acks], bodies[acks], args.warmup,
                            args.concurrency, args.max_requests)
            slices = max(1, round(args.seconds / args.slice))
            for _ in range(slices):
                for acks in (0, 1):
                    part = await drive(sessions[acks], urls[acks], bodies[acks], args.slice,
                                       args.concurrency, args.max_requests)
                    _merge(results[acks], part)
        latency = await store_latency(url, min(args.seconds, 5.0))
    return results[0], results[1], latency


def _merge(into: LoadResult, part: LoadResult) -> None:
    into.requests += part.requests
    into.errors += part.errors
    into.seconds += part.seconds
    into.latencies += part.latencies
    for status, n in part.statuses.items():
        into.statuses[status] = into.statuses.get(status, 0) + n


# -- part 2: failover under load on a cluster --------------------------------------------------


@dataclass
class Failover:
    replica_acks: int
    lag: float = 0.0  # seconds the replica was stalled before its primary was killed
    acknowledged: int = 0
    lost: int = 0
    refused: int = 0
    gave_up: int = 0
    promoted: float = float("nan")
    replica_back: float = float("nan")
    recovered: float = float("nan")
    slowest: float = 0.0
    acked: dict[str, tuple[float, str]] = field(default_factory=dict)


async def failover(args: argparse.Namespace, workdir: Path, acks: int,
                   lag: float) -> Failover:
    """One run on a fresh cluster (see the module docstring)."""
    out = Failover(acks, lag)
    cluster = await asyncio.to_thread(RedisClusterServer, 3, 1)
    try:
        with children() as started:
            _, base = await start_hub(started, workdir, cluster.url, acks)
            victim, victim_partitions = await _victim(cluster)
            await _deliver_through_a_kill(args, cluster, f"{base}/webhooks/api/{CHANNEL}",
                                          victim, victim_partitions, out)
            out.lost = await _count_lost(cluster, out.acked)
    finally:
        await asyncio.to_thread(cluster.stop)
    return out


async def _victim(cluster: RedisClusterServer) -> tuple[int, set[int]]:
    """The primary of partition 0, and every partition it serves."""
    from redis.asyncio.cluster import ClusterNode

    from storage.cluster import HubRedisCluster
    from storage.keys import PartitionKeys

    client = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    await client.initialize()
    try:
        nodes = {p: int(client.get_node_from_key(PartitionKeys(p).inbound).port)
                 for p in range(PARTITIONS)}
    finally:
        await client.aclose()
    return nodes[0], {p for p, port in nodes.items() if port == nodes[0]}


async def _deliver_through_a_kill(args: argparse.Namespace, cluster: RedisClusterServer,
                                  url: str, victim: int, victim_partitions: set[int],
                                  out: Failover) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop_at = started + args.warmup + args.failover_seconds
    killed_at: list[float] = []
    recovered: list[float] = []
    counter = iter(range(10**9))
    run = f"fo{out.replica_acks}"

    async def deliver(http: aiohttp.ClientSession, i: int) -> None:
        body, headers = signed(run, i)
        first = loop.time()
        while loop.time() - first < DELIVERY_CAP:
            began = loop.time()
            status, stored = 0, None
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(url, data=body, headers=headers) as resp:
                    status = resp.status
                    stored = (await resp.json())["stored"][0] if status == 200 else None
            if status == 200 and stored is not None:
                out.acked[f"{run}-{i}"] = (began, stored)
                out.slowest = max(out.slowest, loop.time() - first)
                partition = int(stored.split(".", 1)[0])
                if killed_at and began > killed_at[0] and partition in victim_partitions:
                    recovered.append(loop.time() - killed_at[0])
                return
            out.refused += 1
            await asyncio.sleep(RETRY_PAUSE)
        out.gave_up += 1

    async def provider(http: aiohttp.ClientSession) -> None:
        while loop.time() < stop_at:
            await deliver(http, next(counter))

    async def kill_then_replace() -> None:
        await asyncio.sleep(args.warmup)
        if out.lag > 0:  # the replica falls behind, then its primary dies
            replica = await asyncio.to_thread(cluster.replica_of, victim)
            cluster.pause(replica)
            # The link drops too: a stalled replica alone still gets the stream, buffered by
            # the kernel, and would read it all once resumed.
            await asyncio.to_thread(cluster.cli_call, victim, "client", "kill", "type",
                                    "replica")
            await asyncio.sleep(out.lag)
            cluster.kill(victim)
            cluster.resume(replica)
        else:
            cluster.kill(victim)
        killed_at.append(loop.time())
        await asyncio.to_thread(cluster.wait_promoted, victim)
        out.promoted = loop.time() - killed_at[0]
        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.to_thread(cluster.heal)
        out.replica_back = loop.time() - killed_at[0]

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        chaos = asyncio.create_task(kill_then_replace())
        try:
            await asyncio.gather(*(provider(http) for _ in range(args.concurrency)))
            await asyncio.wait_for(chaos, timeout=60)
        finally:
            chaos.cancel()
            await asyncio.gather(chaos, return_exceptions=True)
    out.acknowledged = len(out.acked)
    out.recovered = min(recovered) if recovered else float("nan")


async def _count_lost(cluster: RedisClusterServer, acked: dict[str, tuple[float, str]]) -> int:
    """Acknowledged messages the cluster does not have (EXISTS per message, per-node
    pipelines)."""
    from redis.asyncio.cluster import ClusterNode

    from storage.cluster import HubRedisCluster
    from storage.keys import PartitionKeys

    client = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    await client.initialize()
    try:
        ids = [message_id for _, message_id in acked.values()]
        found: list[Any] = []
        for start_at in range(0, len(ids), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for message_id in ids[start_at:start_at + 1000]:
                    partition = int(message_id.split(".", 1)[0])
                    pipe.exists(PartitionKeys(partition).message(message_id))
                found += await pipe.execute()
    finally:
        await client.aclose()
    return sum(1 for n in found if not n)


# -- report ------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ihbench-cluster-", dir="/tmp"))
    print(f"inboxhub replica acknowledgement benchmark: {args.seconds:g} s per setting, "
          f"concurrency {args.concurrency}, failover {args.warmup:g} s + "
          f"{args.failover_seconds:g} s, {os.cpu_count()} CPUs", flush=True)
    try:
        off, on, (p50_off, p50_on) = await cost(args, workdir)
        runs = [await failover(args, workdir, acks, lag)
                for lag in (0.0, args.lag) for acks in (0, 1)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table([load_row("replica_acks=0", off), load_row("replica_acks=1", on)])
    ratio = on.rate / off.rate if off.rate else 0.0
    print(f"cost: acknowledged rate replica_acks=1 / replica_acks=0 = {ratio:.2f} "
          f"(p99 {on.percentile(0.99) * 1000:.1f} ms vs {off.percentile(0.99) * 1000:.1f} ms; "
          "one Redis primary, one replica, same machine)")
    print(f"one message at a time, Store.ingest straight to the primary: p50 {p50_off:.2f} ms "
          f"with replica_acks=0, {p50_on:.2f} ms with 1 (WAIT's own latency, loopback)")
    if off.errors or on.errors:
        print(f"non-200 responses: acks=0 {off.statuses}, acks=1 {on.statuses}")
    print()
    print(f"{'failover':<16}{'lag s':>6}{'acked':>8}{'lost':>6}{'refused':>9}{'promoted s':>12}"
          f"{'replica s':>11}{'recovered s':>13}{'slowest s':>11}")
    for r in runs:
        print(f"replica_acks={r.replica_acks:<3}{r.lag:>6.1f}{r.acknowledged:>8}{r.lost:>6}{r.refused:>9}"
              f"{r.promoted:>12.2f}{r.replica_back:>11.2f}{r.recovered:>13.2f}"
              f"{r.slowest:>11.2f}")
    gave_up = sum(r.gave_up for r in runs)
    if gave_up:
        print(f"{gave_up} deliveries not acknowledged within {DELIVERY_CAP:.0f} s of retries")
    lost = sum(r.lost for r in runs if r.replica_acks)
    safe = lost == 0
    print(f"replica_acks=1 lost {lost} acknowledged messages: "
          f"{'as promised' if safe else 'BROKEN PROMISE'}")
    return 0 if safe and not gave_up else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="measured load per replica_acks setting (cost)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="load before the kill (failover), and before measuring (cost)")
    parser.add_argument("--slice", type=float, default=1.0,
                        help="cost: seconds of load on one hub before switching to the other")
    parser.add_argument("--failover-seconds", type=float, default=10.0,
                        help="load after the kill")
    parser.add_argument("--lag", type=float, default=1.0,
                        help="second failover of each setting: the killed primary's replica "
                             "is stalled (SIGSTOP) this long first, a replica that fell behind")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=500_000,
                        help="cap per phase of the cost part")
    args = parser.parse_args(argv)
    if min(args.seconds, args.warmup, args.failover_seconds, args.slice, args.lag) <= 0 or \
            args.concurrency < 1:
        parser.error("--seconds, --warmup, --failover-seconds and --concurrency must be positive")
    return run_bench(bench, args)


if __name__ == "__main__":
    sys.exit(main())
