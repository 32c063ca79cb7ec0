"""A burst of Mercado Libre notifications against a slow, rate-limited API.

    python -m bench.marketplaces [--messages 5000] [--latency 0.3] [--rate-per-minute 6000]
                                 [--concurrency 32] [--fetch-concurrency 32]

Mercado Libre wants HTTP 200 within 500 ms of every notification and drops what is not
acknowledged; its API answers slowly and allows 500 GETs a minute per application. Two
subprocesses on loopback, the load generator in this process:

* the Mercado Libre fake of the test suite (``tests/channels/mercadolibre/provider.py``):
  every call takes ``--latency`` seconds and more than ``--rate-per-minute`` calls in a
  minute are answered 429; ``--messages`` buyer messages are published, one pack each;
* ``inboxhub serve`` on the embedded default with one ``mercadolibre`` instance pointed at
  the fake, its read budget (``reads_per_minute``) set to the fake's limit, tokens loaded
  through ``PUT /api/v1/channels/{instance}/auth``.

Every notification is posted once, distinct, at ``--concurrency``. Printed: notifications
acknowledged per second, p50/p99/max acknowledgement latency and the share within 500 ms
(target: 100%), and the time until every message is stored, next to its floor: the fetches
need two API calls each (the message, then its pack; the buyer's nickname once), so the
rate limit alone needs ``2 * messages / rate`` minutes and the latency alone
``2 * messages * latency / fetch-concurrency`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.ingest import ROOT, Child, children, free_port, ms

ADMIN = "bench-admin-token-0123456789"
CHANNEL = "meli-br"
BUDGET_SECONDS = 0.5  # Mercado Libre's
CALLS_PER_MESSAGE = 2


def pack_of(n: int) -> str:
    return f"2{n:015d}"


def serve_provider(port: int, args: argparse.Namespace, tokens: Path) -> None:
    from tests.channels.mercadolibre.provider import MercadoLibreFake

    async def run() -> None:
        fake = MercadoLibreFake(latency_seconds=args.latency,
                                rate_per_minute=args.rate_per_minute, port=port)
        for n in range(1, args.messages + 1):
            fake.buyer_message(pack_of(n), n, f"Olá, cadê meu pedido {n}?")
        async with fake:
            access, refresh = fake.grant()
            await asyncio.to_thread(tokens.write_text, json.dumps(
                {"access_token": access, "refresh_token": refresh, "expires_in": 21600}))
            await asyncio.Event().wait()

    asyncio.run(run())


def wait_for_file(path: Path, timeout: float) -> str:
    """The provider subprocess writes its tokens once it listens (run in a thread)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout:g} s")
        time.sleep(0.1)
    return path.read_text()


def hub_config(workdir: Path, port: int, provider: str, args: argparse.Namespace) -> Path:
    from tests.channels.mercadolibre.provider import APP, SELLER

    path = workdir / "inboxhub.toml"
    path.write_text(f"""
[hub]
host = "127.0.0.1"
port = {port}
data_dir = "{workdir / 'data'}"
log_level = "warning"

[storage]
partitions = 1

[fetches]
concurrency = {args.fetch_concurrency}

[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_BENCH_ADMIN"

[[channels]]
name = "{CHANNEL}"
type = "mercadolibre"
[channels.settings]
api_base_url = "{provider}"
seller_id = "{SELLER}"
client_id = "{APP}"
client_secret = "env:IH_BENCH_MELI_SECRET"
site_id = "MLB"
reads_per_minute = {args.rate_per_minute}
poll_interval_seconds = 3600
timeout_seconds = 10
""")
    return path


def notification(n: int) -> bytes:
    from tests.channels.mercadolibre.provider import APP, SELLER

    return json.dumps({"id": f"n-{n}", "resource": f"{n:032x}", "user_id": int(SELLER),
                       "topic": "messages", "actions": ["created"],
                       "application_id": int(APP), "attempts": 1,
                       "sent": "2026-12-01T10:00:00.000Z"}).encode()


async def burst(url: str, count: int, concurrency: int) -> tuple[list[float], int, float]:
    """POST ``count`` notifications; each one's acknowledgement latency, errors, seconds."""
    latencies: list[float] = []
    errors = 0
    numbers = iter(range(1, count + 1))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=timeout) as http:
        async def worker() -> None:
            nonlocal errors
            for n in numbers:
                started = time.perf_counter()
                try:
                    async with http.post(url, data=notification(n), headers={
                            "Content-Type": "application/json"}) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - began


async def fetched(http: aiohttp.ClientSession, base: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "inboxhub_fetches_total"
               and sample.labels.get("outcome") == "fetched")


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ihbench-meli-", dir="/tmp"))
    env = dict(os.environ, IH_BENCH_ADMIN=ADMIN,
               IH_BENCH_MELI_SECRET="meli-client-secret-0123456789",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    print(f"inboxhub marketplaces: {args.messages} Mercado Libre notifications at concurrency "
          f"{args.concurrency}; API latency {args.latency:g} s, {args.rate_per_minute} calls/min, "
          f"fetches.concurrency {args.fetch_concurrency}; {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}", flush=True)
    tokens_file = workdir / "tokens.json"
    try:
        with children() as started:
            provider_port = free_port()
            provider = Child("Mercado Libre fake", [
                sys.executable, "-m", "bench.marketplaces", "--serve-provider",
                str(provider_port), "--tokens-file", str(tokens_file),
                "--messages", str(args.messages), "--latency", str(args.latency),
                "--rate-per-minute", str(args.rate_per_minute)], workdir / "provider.log", env)
            started.append(provider)
            tokens = await asyncio.to_thread(wait_for_file, tokens_file, 60.0)

            port = free_port()
            config = hub_config(workdir, port, f"http://127.0.0.1:{provider_port}", args)
            hub = Child("inboxhub", [sys.executable, "-m", "hub", "--config", str(config),
                                     "serve"], workdir / "hub.log", env)
            started.append(hub)
            base = f"http://127.0.0.1:{port}"
            # /healthz: /readyz reports the poller backing off until the tokens are loaded.
            await hub.wait_ready(f"{base}/healthz")
            admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.put(f"{base}/api/v1/channels/{CHANNEL}/auth", data=tokens,
                                    headers=admin) as resp:
                    if resp.status != 200:
                        print(f"loading tokens failed: HTTP {resp.status}")
                        return 1
                began = time.perf_counter()
                latencies, errors, seconds = await burst(
                    f"{base}/webhooks/mercadolibre/{CHANNEL}", args.messages, args.concurrency)
                done = await fetched(http, base)
                limit = time.monotonic() + args.drain_timeout
                while done < args.messages and time.monotonic() < limit:
                    await asyncio.sleep(0.5)
                    done = await fetched(http, base)
                stored_after = time.perf_counter() - began
            hub.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    within = sum(1 for value in latencies if value <= BUDGET_SECONDS) / len(latencies)
    floor_rate = CALLS_PER_MESSAGE * args.messages / args.rate_per_minute * 60
    floor_latency = CALLS_PER_MESSAGE * args.messages * args.latency / args.fetch_concurrency
    floor = max(floor_rate, floor_latency)
    print()
    print(f"acknowledged: {len(latencies) - errors}/{len(latencies)} in {seconds:.1f} s "
          f"({len(latencies) / seconds:.0f}/s), errors {errors}")
    print(f"acknowledgement latency: p50 {ms(pct(0.5))} ms, p99 {ms(pct(0.99))} ms, max "
          f"{ms(latencies[-1])} ms; within {BUDGET_SECONDS * 1000:.0f} ms: {within:.2%} "
          f"(target 100%): {'met' if within == 1.0 else 'NOT met'}")
    print(f"stored: {done:.0f}/{args.messages} after {stored_after:.1f} s; floor "
          f"{floor:.1f} s (rate limit {floor_rate:.1f} s, latency {floor_latency:.1f} s): "
          f"{stored_after / floor:.2f}x the floor")
    return 0 if errors == 0 and done >= args.messages else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rate-per-minute", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fetch-concurrency", type=int, default=32)
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--serve-provider", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_provider:
        serve_provider(args.serve_provider, args, args.tokens_file)
        return 0
    try:
        return asyncio.run(bench(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
