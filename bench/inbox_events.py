"""Live events: webhook accepted -> event received on the stream, with 50 connected clients.

    python -m bench.inbox_events [--seconds 20] [--rate 200] [--clients 50]

``python -m hub serve`` runs as a subprocess (embedded Redis with AOF, one API channel, 40
agents online in one queue); this process opens ``--clients`` SSE streams on
``GET /api/v1/events`` (a fifth supervisors, who receive every event, the rest agents, who
receive their own conversations' events) and posts signed buyer messages at ``--rate`` per
second (paced, not as fast as possible) from 500 buyers. For every message it notes when the
webhook's 200 arrived (its body names the stored message id) and when each stream received
that message's ``new_message`` event; the latency is the difference (negative when the event
beat the 200 to the client: both travel over loopback). Target p99 < 250 ms.

The bench ends the streams and stops the hub on exit, also on Ctrl-C; it takes about
``--seconds`` + 15 s.
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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.ingest import ADMIN, SECRET, TEXTS, child_env, children, free_port, run_bench, start
from tests.events_client import SseClient, SseEvent

CHANNEL = "bench"
BUYERS = 500
AGENTS = 40


def token(name: str) -> str:
    return f"bench-token-{name}-0123456789"


def config(workdir: Path, port: int, clients: int) -> Path:
    supervisors = max(1, clients // 5)
    tokens = "".join(f"""
[[api.tokens]]
name = "{name}"
role = "{role}"
token_sha256 = "{hashlib.sha256(token(name).encode()).hexdigest()}"
""" for name, role in [*((f"boss{i}", "supervisor") for i in range(supervisors)),
                        *((f"agent{i}", "agent") for i in range(AGENTS))])
    agents = "".join(f"""
[[routing.agents]]
id = "agent{i}"
languages = {{ en = 3, es = 3, pt = 3 }}
capacity = {{ chat = 50 }}
""" for i in range(AGENTS))
    path = workdir / "inboxhub.toml"
    path.write_text(f"""
[hub]
host = "127.0.0.1"
port = {port}
data_dir = "{workdir / 'data'}"
log_level = "warning"
max_connections = 1024

[storage]
partitions = 1

[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_BENCH_ADMIN"
{tokens}
[[channels]]
name = "{CHANNEL}"
type = "api"
[channels.settings]
secret = "env:IH_BENCH_SECRET"
outbound_url = "http://127.0.0.1:9/unused"

[routing]
languages = ["en", "es", "pt"]
default_queue = "all"
sticky_hours = 0
reassign_after_no_reply_minutes = 0

[[routing.queues]]
name = "all"
[[routing.queues.steps]]
{agents}""")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ihbench-events-", dir="/tmp"))
    env = child_env(IH_BENCH_SECRET=SECRET, IH_BENCH_ADMIN=ADMIN)
    print(f"inboxhub live events benchmark: {args.clients} SSE clients, {args.rate:g} msg/s for "
          f"{args.seconds:g} s, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
          flush=True)
    accepted: dict[str, float] = {}
    received: dict[str, list[tuple[str, float]]] = {}
    kinds: dict[str, int] = {}
    statuses: dict[int, int] = {}
    try:
        with children() as started:
            port = free_port()
            hub, base = await start(
                started, "inboxhub",
                [sys.executable, "-m", "hub", "--config",
                 str(config(workdir, port, args.clients)), "serve"],
                workdir / "hub.log", env, port)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                admin = {"Authorization": f"Bearer {ADMIN}"}
                for i in range(AGENTS):
                    async with http.post(f"{base}/api/v1/agents/agent{i}/status",
                                         json={"status": "online"}, headers=admin) as r:
                        assert r.status == 200, await r.text()
                names = [f"boss{i}" for i in range(max(1, args.clients // 5))]
                names += [f"agent{i % AGENTS}" for i in range(args.clients - len(names))]

                def recorder(name: str) -> object:
                    def on_event(event: SseEvent) -> None:
                        kinds[event.kind] = kinds.get(event.kind, 0) + 1
                        if event.kind == "new_message":
                            received.setdefault(event.data["message_id"], []).append(
                                (name, event.received))
                    return on_event

                async with contextlib.AsyncExitStack() as stack:
                    streams = [await stack.enter_async_context(SseClient(
                        http.get, f"{base}/api/v1/events",
                        {"Authorization": f"Bearer {token(name)}"},
                        on_event=recorder(name)))  # type: ignore[arg-type]
                        for name in names]
                    key = SECRET.encode()
                    url = f"{base}/webhooks/api/{CHANNEL}"
                    inflight: set[asyncio.Task[None]] = set()

                    async def post(i: int) -> None:
                        body = json.dumps({"id": f"ev-{i}", "sender": f"buyer-{i % BUYERS}",
                                           "text": TEXTS[i % len(TEXTS)]}).encode()
                        sig = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
                        async with http.post(url, data=body, headers={
                                "Content-Type": "application/json",
                                "X-Inboxhub-Signature": sig}) as r:
                            answer = await r.read()
                            at = time.perf_counter()
                            statuses[r.status] = statuses.get(r.status, 0) + 1
                        if r.status == 200:
                            for mid in json.loads(answer)["stored"]:
                                accepted[mid] = at

                    total = int(args.rate * args.seconds)
                    t0 = time.perf_counter()
                    for i in range(total):
                        delay = t0 + i / args.rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        task = asyncio.create_task(post(i))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    await asyncio.gather(*inflight)
                    sent_for = time.perf_counter() - t0
                    await asyncio.sleep(2.0)  # the last events on their way
                    ended = sum(1 for s in streams if s.ended.is_set())
            hub_exit = hub.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    latencies = [at - accepted[mid] for mid, got in received.items() if mid in accepted
                 for _name, at in got]
    boss_count = max(1, args.clients // 5)
    at_bosses = [mid for mid in accepted
                 if sum(1 for n, _ in received.get(mid, []) if n.startswith("boss"))
                 == boss_count]
    print(f"posted {total} in {sent_for:.1f} s ({total / sent_for:.0f}/s), statuses {statuses}")
    print(f"events received by kind (all streams): {dict(sorted(kinds.items()))}")
    print(f"messages whose new_message reached every supervisor: {len(at_bosses)} of "
          f"{len(accepted)}; streams that ended early: {ended}; hub exit code {hub_exit}")
    if not latencies:
        print("no latencies measured")
        return 1
    ms = [x * 1000 for x in latencies]
    p50, p99 = percentile(ms, 0.50), percentile(ms, 0.99)
    print(f"webhook accepted -> event received ({len(ms)} deliveries): p50 {p50:.1f} ms  "
          f"p99 {p99:.1f} ms  max {max(ms):.1f} ms  mean {statistics.fmean(ms):.1f} ms")
    print(f"target p99 < 250 ms: {'met' if p99 < 250 else 'NOT met'}")
    complete = len(at_bosses) == len(accepted) == total and ended == 0
    return 0 if complete and hub_exit == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_events", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--clients", type=int, default=50, help="SSE streams")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.clients < 1:
        parser.error("--seconds, --rate and --clients must be positive")
    return run_bench(bench, args)


if __name__ == "__main__":
    sys.exit(main())
