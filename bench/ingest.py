"""Ingest throughput: signed webhook POSTs through the full pipeline vs a bare aiohttp handler.

    python -m bench.ingest [--seconds 10] [--concurrency 32] [--max-requests 500000]
                           [--processes N] [--role all|http|workers]

Two targets, one after the other, each a subprocess on loopback, driven by the same load
generator (one aiohttp ClientSession in this process, a fixed number of concurrent requests):

* ``bare``: an aiohttp handler that reads the body and answers 200 — the ceiling this machine,
  this client and aiohttp allow;
* ``inboxhub``: ``python -m hub serve`` on the embedded default (its own redis-server with AOF
  in a temporary data directory) with one API channel; each POST is signed, verified, parsed,
  stored and enqueued before the 200 (the "acknowledged" figure), then routed by the router
  worker. After the load the bench waits until the inbound streams are empty (every entry
  routed, acknowledged and deleted) and counts that drain time in the "routed" figure.

The ratio ingest rate / bare rate is printed (target >= 0.5). Everything is bounded in time and
count; the subprocesses and the data directory are removed on exit, also on Ctrl-C.
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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from bench import profiling

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-\u00e9-0123"
ADMIN = "bench-admin-token"
CHANNEL = "bench"
BUYERS = 500  # distinct senders: messages spread over this many conversations
TEXTS = (
    "Hola, ¿dónde está mi pedido? Lo compré hace dos semanas.",
    "Olá, meu pedido ainda não chegou. Podem verificar o rastreio?",
    "Hi, I would like to return the blue jacket, it is too small.",
    "Bonjour, le colis est arrivé endommagé, que dois-je faire ?",
    "Hallo, können Sie mir eine Rechnung für die Bestellung schicken?",
    "Ciao, avete questo modello anche in taglia L?",
)
DRAIN_TIMEOUT = 120.0
WARMUP_CAP = 60.0  # seconds: a warm-up bounded by count is still bounded in time


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a bench's subprocesses: this one's, ``extra`` (the secrets its config
    names), this checkout first on the path, and no crash point left over from a test."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("INBOXHUB_TEST_CRASH_POINT", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- targets ------------------------------------------------------------------------------------


def serve_bare(port: int, *paths: str) -> None:
    """The baseline: read the body, answer 200 with a small JSON body (like the hub does).
    ``paths``: the webhook paths of the target it stands beside (other benches reuse it);
    the API channel's by default."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"stored": ["x"], "duplicates": 0})

    app = web.Application()
    for path in paths or ("/webhooks/api/bench",):
        app.router.add_post(path, handle)
    app.router.add_get("/readyz", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Child:
    """A server subprocess that is always stopped: SIGTERM, then SIGKILL after a grace time."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                       + self.log_tail())
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


async def start(started: list[Child], name: str, args: list[str], log: Path,
                env: dict[str, str], port: int) -> tuple[Child, str]:
    """A server subprocess on loopback ``port``, in ``started`` (so it is stopped whatever
    happens), once its ``/readyz`` answers; and its base URL."""
    child = Child(name, args, log, env)
    started.append(child)
    base = f"http://127.0.0.1:{port}"
    await child.wait_ready(f"{base}/readyz")
    return child, base


async def start_bare(started: list[Child], module: str, workdir: Path,
                     env: dict[str, str]) -> tuple[Child, str]:
    """``python -m <module> --serve-bare PORT``: the bench's bare aiohttp handler."""
    port = free_port()
    return await start(started, "bare server",
                       [sys.executable, "-m", module, "--serve-bare", str(port)],
                       workdir / "bare.log", env, port)


@contextlib.asynccontextmanager
async def running_hub(started: list[Child], workdir: Path, env: dict[str, str],
                      config: Callable[[Path, int], Path], serve: Sequence[str] = (),
                      ) -> AsyncIterator[tuple[Child, str, Pipeline]]:
    """``python -m hub serve [serve...]`` with ``config(workdir, port)``, its base URL, and a
    Pipeline on its embedded Redis (closed on exit; the hub is stopped by ``children``)."""
    port = free_port()
    hub, base = await start(
        started, "inboxhub",
        [sys.executable, "-m", "hub", "--config", str(config(workdir, port)), "serve", *serve],
        workdir / "hub.log", env, port)
    pipeline = Pipeline(workdir / "data" / "redis.sock")
    try:
        yield hub, base, pipeline
    finally:
        await pipeline.close()


async def all_children_ready(base: str, processes: int, timeout: float = 60.0) -> None:
    """Until ``processes`` distinct pids answer ``/readyz`` (``serve --processes``: the port
    answers as soon as the first child is up), new connections reaching any of them."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while len(seen) < processes and time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                async with http.get(f"{base}/readyz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        seen.add(int((await resp.json())["pid"]))
            await asyncio.sleep(0.02)
    if len(seen) < processes:
        raise RuntimeError(f"only {len(seen)} of {processes} hub processes ready in {timeout:g}s")


async def start_other_half(started: list[Child], workdir: Path, env: dict[str, str],
                           role: str) -> tuple[Child, str]:
    """``--role http`` (or ``workers``) under test: the complementary role as one process on
    the same config and embedded Redis (started by the hub under test), on its own port."""
    port = free_port()
    other = "workers" if role == "http" else "http"
    return await start(
        started, f"inboxhub --role {other}",
        [sys.executable, "-m", "hub", "--config", str(workdir / "inboxhub.toml"), "serve",
         "--role", other, "--port", str(port)], workdir / f"hub-{other}.log", env, port)


def run_bench(bench: Callable[[argparse.Namespace], Coroutine[None, None, int]],
              args: argparse.Namespace) -> int:
    """The exit code of ``bench(args)``; 130 on Ctrl-C (the clean-up has run by then)."""
    try:
        return asyncio.run(bench(args))
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.stop()


def write_config(workdir: Path, port: int, channels: str, hub_extra: str = "") -> Path:
    """``workdir/inboxhub.toml``: a hub on loopback ``port`` on the embedded default with one
    partition and the admin token ``env:IH_BENCH_ADMIN``, plus ``channels`` (TOML) and
    ``hub_extra`` (more ``[hub]`` keys)."""
    path = workdir / "inboxhub.toml"
    path.write_text(f"""
[hub]
host = "127.0.0.1"
port = {port}
data_dir = "{workdir / 'data'}"
log_level = "warning"
{hub_extra}
[storage]
# no redis_url: the embedded default (redis-server on a unix socket, AOF everysec)
partitions = 1

[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_BENCH_ADMIN"
{channels}""")
    return path


def hub_config(workdir: Path, port: int, hub_extra: str = "") -> Path:
    """The ingest bench's hub: one API channel; ``hub_extra`` as ``write_config``'s (other
    benches run the same hub with a setting changed)."""
    return write_config(workdir, port, f"""
[[channels]]
name = "{CHANNEL}"
type = "api"
[channels.settings]
secret = "env:IH_BENCH_SECRET"
outbound_url = "http://127.0.0.1:9/unused"
""", hub_extra)


# -- load generator -----------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BodySource(Protocol):
    """What the load generator posts: the next body and its headers (signed), distinct each
    time. ``Bodies`` here; other benches bring their providers' shapes."""

    def next(self) -> tuple[bytes, dict[str, str]]: ...


class Bodies:
    """Distinct, signed message bodies (new provider ids every time: no dedupe shortcut)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.n = 0
        self.key = SECRET.encode()

    def next(self) -> tuple[bytes, dict[str, str]]:
        i = self.n
        self.n += 1
        body = json.dumps({
            "id": f"{self.run}-{i}",
            "sender": f"buyer-{i % BUYERS}",
            "name": f"Buyer {i % BUYERS}",
            "text": TEXTS[i % len(TEXTS)],
        }).encode()
        signature = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "X-Inboxhub-Signature": signature}


async def drive(http: aiohttp.ClientSession, url: str, bodies: BodySource, seconds: float,
                concurrency: int, max_requests: int) -> LoadResult:
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + seconds
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            body, headers = bodies.next()
            t0 = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            result.latencies.append(time.perf_counter() - t0)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.requests += 1
            else:
                result.errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


# -- the pipeline side --------------------------------------------------------------------------


class Pipeline:
    """Reads the hub's embedded Redis: backlog, drain, and a final consistency check."""

    def __init__(self, socket_path: Path) -> None:
        from redis.asyncio import Redis

        from storage.keys import QUARANTINE, PartitionKeys

        self.redis = Redis(unix_socket_path=str(socket_path), socket_timeout=10)
        self.keys = PartitionKeys(0)
        self.quarantine_key = QUARANTINE

    async def backlog(self) -> int:
        return int(await self.redis.xlen(self.keys.inbound))

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> float:
        """Seconds until every inbound entry is routed, acknowledged and deleted."""
        started = time.perf_counter()
        while await self.backlog():
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"pipeline did not drain within {timeout:.0f}s")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started

    async def sample_backlog(self, stop: asyncio.Event, peak: list[int]) -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], await self.backlog())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    async def verify(self) -> tuple[int, int, dict[str, int]]:
        """(stored messages, conversations, conversations by status)."""
        ids = [m.decode() for m in await self.redis.zrange(self.keys.conversations, 0, -1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hmget(self.keys.conversation(cid), "message_count", "status")
            rows = await pipe.execute()
        stored = sum(int(count or 0) for count, _ in rows)
        by_status: dict[str, int] = {}
        for _, status in rows:
            name = (status or b"?").decode()
            by_status[name] = by_status.get(name, 0) + 1
        return stored, len(ids), by_status

    async def quarantined(self) -> int:
        return int(await self.redis.xlen(self.quarantine_key))

    async def redis_cpu_seconds(self) -> float:
        info = await self.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def command_stats(self) -> dict[str, tuple[int, int]]:
        """Redis's own count of (calls, CPU microseconds) per command so far: the difference
        over a phase, per message, is the figure least disturbed by a busy machine."""
        info = await self.redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                for name, v in info.items()}

    async def close(self) -> None:
        await self.redis.aclose()


# -- the run ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def measure(url: str, run: str, args: argparse.Namespace,
                  after_warmup: Callable[[], Awaitable[None]] | None = None,
                  source: Callable[[str], BodySource] = Bodies, warmup_requests: int = 0,
                  ) -> tuple[LoadResult, LoadResult]:
    """(warm-up, measured) with one session and connection pool for both phases; the bodies
    are ``source(run)``'s, one stream across both phases (no id posted twice). The warm-up is
    ``args.warmup`` seconds, or with ``warmup_requests`` that many requests (at most
    ``WARMUP_CAP`` seconds)."""
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        bodies = source(run)
        warm = LoadResult()
        if warmup_requests > 0:
            warm = await drive(http, url, bodies, WARMUP_CAP, args.concurrency,
                               warmup_requests)
        elif args.warmup > 0:
            warm = await drive(http, url, bodies, args.warmup, args.concurrency,
                               args.max_requests)
        if after_warmup is not None:
            await after_warmup()
        measured = await drive(http, url, bodies, args.seconds, args.concurrency,
                               args.max_requests)
        return warm, measured


@dataclass
class Ingested:
    """One target's load through the hub: the acknowledged POSTs, then the drain until every
    one is routed."""

    warm: LoadResult
    acked: LoadResult
    drain: float
    peak_backlog: int
    redis_calls: dict[str, tuple[int, int]] = field(default_factory=dict)
    hub_cpu: float | None = None  # seconds of CPU over the measured phase and its drain
    redis_cpu: float | None = None

    def cpu_summary(self) -> str:
        n = self.acked.requests
        parts = [f"{name} {1e6 * cpu / n:.0f} us" for name, cpu in
                 (("hub", self.hub_cpu), ("redis-server", self.redis_cpu))
                 if cpu is not None and n]
        return "CPU per routed message: " + (", ".join(parts) or "not measured")

    def redis_summary(self, top: int = 8) -> str:
        """Redis calls and Redis CPU per acknowledged message over the measured phase."""
        n = self.acked.requests
        if not n or not self.redis_calls:
            return "redis: no command statistics"
        calls = sum(c for c, _ in self.redis_calls.values())
        usec = sum(u for _, u in self.redis_calls.values())
        ranked = sorted(self.redis_calls.items(), key=lambda kv: -kv[1][1])[:top]
        detail = ", ".join(f"{name} {c / n:.2f}x {u / n:.0f}us" for name, (c, u) in ranked)
        return (f"redis per message: {calls / n:.1f} calls, {usec / n:.0f} us of Redis CPU; "
                f"by CPU: {detail}")

    @property
    def routed_seconds(self) -> float:
        return self.acked.seconds + self.drain

    @property
    def routed_rate(self) -> float:
        return self.acked.requests / self.routed_seconds if self.routed_seconds else 0.0


async def ingest_run(pipeline: Pipeline, url: str, run: str, args: argparse.Namespace,
                     source: Callable[[str], BodySource] = Bodies, warmup_requests: int = 0,
                     hub_pid: int | None = None, cpu_pids: Sequence[int] = ()) -> Ingested:
    """Warm-up, drain, measured load (sampling the inbound backlog), drain again: the measured
    phase starts on an empty pipeline and its drain is timed. With ``args.profile`` and
    ``hub_pid``, that process is sampled by py-spy through the measured phase and the
    summary printed. ``hub_pid``'s CPU time over the measured phase and drain is reported
    per message: on a machine shared with other work it moves less than the rates. With
    ``cpu_pids`` (``--processes``/``--role``), the CPU of those processes and their children
    is reported instead (the embedded redis-server is reported on its own)."""

    def hub_cpu() -> float | None:
        return tree_cpu_seconds(cpu_pids) if cpu_pids else profiling.cpu_seconds(hub_pid)

    stop = asyncio.Event()
    peak = [0]
    sampler: asyncio.Task[None] | None = None

    profiler: asyncio.Task[Path] | None = None

    stats_before: dict[str, tuple[int, int]] = {}
    cpu_before: list[float | None] = [None, None]

    async def drain_warmup_then_sample() -> None:
        nonlocal sampler, profiler, stats_before
        await pipeline.drain()
        stats_before = await pipeline.command_stats()
        cpu_before[:] = [hub_cpu(), await pipeline.redis_cpu_seconds()]
        sampler = asyncio.create_task(pipeline.sample_backlog(stop, peak))
        profile_to: Path | None = getattr(args, "profile", None)
        if hub_pid is not None and profile_to is not None:
            profiler = asyncio.create_task(profiling.record(hub_pid, args.seconds,
                                                            profile_to))

    try:
        warm, acked = await measure(url, run, args, drain_warmup_then_sample, source,
                                    warmup_requests)
        drain = await pipeline.drain()
        stats_after = await pipeline.command_stats()
        cpu_after = [hub_cpu(), await pipeline.redis_cpu_seconds()]
        if profiler is not None:
            print(profiling.summarise(await profiler), flush=True)
    finally:
        stop.set()
        if sampler is not None:
            await sampler
        if profiler is not None and not profiler.done():
            profiler.cancel()
    calls = {name: (c - stats_before.get(name, (0, 0))[0], u - stats_before.get(name, (0, 0))[1])
             for name, (c, u) in stats_after.items()}
    used = [None if a is None or b is None else a - b
            for a, b in zip(cpu_after, cpu_before, strict=True)]
    return Ingested(warm, acked, drain, peak[0],
                    {name: cu for name, cu in calls.items() if cu[0] > 0},
                    hub_cpu=used[0], redis_cpu=used[1])


def tree_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of ``pids`` and their live children (the hubs of a
    ``serve --processes`` supervisor), less redis-server's: that one is measured apart."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if "(redis-server)" not in stat:
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += [child for child, parent in parents.items() if parent == pid]
    used = [profiling.cpu_seconds(pid) for pid in tree if pid in parents]
    return sum(u for u in used if u is not None) if used else None


Row = tuple[str, int, int, float, float, str, str]


def load_row(name: str, r: LoadResult) -> Row:
    return (name, r.requests, r.errors, r.seconds, r.rate, ms(r.percentile(0.5)),
            ms(r.percentile(0.99)))


def routed_row(name: str, r: Ingested) -> Row:
    return (name, r.acked.requests, r.acked.errors, r.routed_seconds, r.routed_rate, "-", "-")


def print_table(rows: list[Row]) -> None:
    header = f"{'target':<24}{'ok':>9}{'errors':>8}{'seconds':>9}{'msg/s':>10}" \
             f"{'p50 ms':>9}{'p99 ms':>9}"
    print()
    print(header)
    print("-" * len(header))
    for name, n, errors, secs, rate, p50, p99 in rows:
        print(f"{name:<24}{n:>9}{errors:>8}{secs:>9.2f}{rate:>10.0f}{p50:>9}{p99:>9}")
    print("-" * len(header))


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ihbench-", dir="/tmp"))
    env = child_env(IH_BENCH_SECRET=SECRET, IH_BENCH_ADMIN=ADMIN)
    print(f"inboxhub ingest benchmark: {args.seconds:g} s per target after {args.warmup:g} s "
          f"warm-up, concurrency {args.concurrency}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}; hub: serve --role {args.role} --processes "
          f"{args.processes}", flush=True)
    try:
        with children() as started:
            # 1. bare aiohttp
            bare, url = await start_bare(started, "bench.ingest", workdir, env)
            _, base = await measure(f"{url}/webhooks/api/bench", "bare", args)
            bare.stop()

            # 2. the hub, full pipeline
            serve = ["--role", args.role, "--processes", str(args.processes)]
            async with running_hub(started, workdir, env, hub_config, serve) as (
                    hub, url, pipeline):
                pids = [hub.proc.pid]
                await all_children_ready(url, args.processes)
                if args.role != "all":  # the other half, one process, on the same Redis
                    other, other_url = await start_other_half(started, workdir, env, args.role)
                    pids.append(other.proc.pid)
                    url = url if args.role == "http" else other_url
                run = await ingest_run(pipeline, f"{url}/webhooks/api/{CHANNEL}", "hub", args,
                                       hub_pid=hub.proc.pid,
                                       cpu_pids=pids if len(pids) > 1 or args.processes > 1
                                       else ())
                stored, conversations, by_status = await pipeline.verify()
                quarantined = await pipeline.quarantined()
            codes = [child.stop() for child in reversed(started[1:])]
            hub_exit = next((code for code in codes if code), 0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    acked = run.acked
    print_table([load_row("bare aiohttp handler", base),
                 load_row("inboxhub acknowledged", acked),
                 routed_row("inboxhub routed", run)])
    ratio_acked = acked.rate / base.rate if base.rate else 0.0
    ratio_routed = run.routed_rate / base.rate if base.rate else 0.0
    print(f"drain after load: {run.drain:.3f} s; peak inbound backlog during load: "
          f"{run.peak_backlog} entries (sampled every 0.25 s)")
    print(run.cpu_summary())
    print(run.redis_summary())
    expected = run.warm.requests + acked.requests
    consistent = (stored == expected and quarantined == 0
                  and by_status == {"queued": conversations})
    print(f"pipeline check: {stored} messages stored for {expected} acknowledged POSTs "
          f"(warm-up included) in {conversations} conversations {by_status}; "
          f"{quarantined} quarantined; hub exit code {hub_exit}: "
          f"{'consistent' if consistent else 'INCONSISTENT'}")
    verdict = "meets" if ratio_acked >= 0.5 else "BELOW"
    print(f"ratio acknowledged/bare = {ratio_acked:.2f}  routed/bare = {ratio_routed:.2f}  "
          f"(target >= 0.50: {verdict})")
    if base.errors or acked.errors:
        print(f"non-200 responses: bare {base.statuses}, inboxhub {acked.statuses}")
    return 0 if consistent and hub_exit == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured load per target")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load first")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=500_000,
                        help="cap per phase (warm-up and measured)")
    parser.add_argument("--profile", type=Path, metavar="FILE", default=None,
                        help="sample the hub with py-spy during the measured load: collapsed "
                             "stacks to FILE, summary printed")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="serve --processes N for the hub under test (default 1)")
    parser.add_argument("--role", choices=("all", "http", "workers"), default="all",
                        help="serve --role of the hub under test; with http or workers the "
                             "other half runs beside it as one process (default all)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    if args.seconds <= 0 or args.concurrency < 1 or args.max_requests < 1 or args.processes < 1:
        parser.error("--seconds, --concurrency, --max-requests and --processes must be positive")
    return run_bench(bench, args)


if __name__ == "__main__":
    sys.exit(main())
