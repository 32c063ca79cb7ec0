"""Fetch-after-notify acknowledgement latency while the provider's resource API is slow.

    python -m bench.fetch_webhook [--seconds 10] [--concurrency 8] [--provider-delay 2.0]

Mercado Libre wants HTTP 200 within 500 ms of a notification, and only then should the
resource be fetched. Three subprocesses on loopback, one load generator (this process):

* a slow provider: ``GET /messages/{id}`` answers after ``--provider-delay`` seconds;
* ``bare``: an aiohttp handler that reads the body and answers 200, the ceiling of this
  machine and client;
* ``inboxhub``: ``python -m hub serve`` on the embedded default (its own redis-server with AOF)
  with the example fetching channel (tests/channels/fetch_example, loaded as a plugin): every
  notification is verified, parsed and stored in the fetch queue before the 200, and the
  fetch worker fetches the resources from the slow provider meanwhile (``fetches.concurrency``
  at a time, so the backlog grows during the load: the acknowledgement must not wait for it).

Distinct notifications each time (no dedupe shortcut). Printed: requests/s, p50 and p99 of the
acknowledgement for both targets and their ratios, the verdict against the 500 ms budget, and
how many fetches the worker finished during the load. Everything is bounded in time; the
subprocesses and the data directory are removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench.ingest import ROOT, Child, LoadResult, children, drive, free_port, ms, serve_bare

SECRET = "bench-fetch-secret-0123456789"
TOKEN = "bench-fetch-token-0123456789"
ADMIN = "bench-admin-token-0123456789"
CHANNEL = "market"
BUDGET_SECONDS = 0.5  # Mercado Libre's


def serve_provider(port: int, delay: float) -> None:
    from aiohttp import web

    async def message(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        mid = request.match_info["id"]
        return web.json_response({"id": mid, "from": f"buyer-{mid[-3:]}", "chat": f"c-{mid}",
                                  "text": "Hola, ¿dónde está mi pedido?"})

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/messages/{id}", message)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Notifications:
    """Distinct signed notifications (the example channel's, Mercado Libre's shape)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.n = 0

    def next(self) -> tuple[bytes, dict[str, str]]:
        self.n += 1
        resource = f"{self.run}-{self.n}"
        body = json.dumps({"id": f"n-{resource}", "resource": resource, "topic": "messages",
                           "user_id": 123456789, "actions": ["created"], "attempts": 1,
                           "text": "a notification's claims are never stored"}).encode()
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json",
                      "X-Example-Signature": f"sha256={digest}"}


def hub_config(workdir: Path, port: int, provider: str) -> Path:
    path = workdir / "inboxhub.toml"
    path.write_text(f"""
[hub]
host = "127.0.0.1"
port = {port}
data_dir = "{workdir / 'data'}"
log_level = "warning"

[storage]
partitions = 1

[[api.tokens]]
name = "admin"
role = "admin"
token = "env:IH_BENCH_ADMIN"

[[channels]]
name = "{CHANNEL}"
type = "example-fetch"
[channels.settings]
url = "{provider}"
token = "env:IH_TEST_FETCH_TOKEN"
secret = "env:IH_TEST_FETCH_SECRET"
""")
    return path


async def measure(url: str, run: str, args: argparse.Namespace) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        bodies = Notifications(run)
        if args.warmup > 0:
            await drive(http, url, bodies, args.warmup, args.concurrency,  # type: ignore[arg-type]
                        args.max_requests)
        return await drive(http, url, bodies, args.seconds, args.concurrency,  # type: ignore[arg-type]
                           args.max_requests)


async def backlog(base: str) -> tuple[dict[str, float], float]:
    """The instance's fetch backlog and how many fetches the worker finished."""
    from prometheus_client.parser import text_string_to_metric_families

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(f"{base}/api/v1/fetches?instance={CHANNEL}&limit=1",
                            headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            data = await resp.json()
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    fetched = sum(sample.value for family in text_string_to_metric_families(text)
                  for sample in family.samples
                  if sample.name == "inboxhub_fetches_total"
                  and sample.labels.get("outcome") == "fetched")
    return data["backlog"][0], fetched


async def bench(args: argparse.Namespace) -> int:
    from tests.channels.fetch_example import plugin

    workdir = Path(tempfile.mkdtemp(prefix="ihbench-fetch-", dir="/tmp"))
    site = plugin.install(workdir / "site")
    env = dict(os.environ, IH_BENCH_ADMIN=ADMIN, IH_TEST_FETCH_TOKEN=TOKEN,
               IH_TEST_FETCH_SECRET=SECRET,
               PYTHONPATH=os.pathsep.join(filter(None, [str(site), str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("INBOXHUB_TEST_CRASH_POINT", None)
    print(f"inboxhub fetch-after-notify acknowledgement: {args.seconds:g} s per target after "
          f"{args.warmup:g} s warm-up, concurrency {args.concurrency}, provider answers after "
          f"{args.provider_delay:g} s, {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}", flush=True)
    me = [sys.executable, "-m", "bench.fetch_webhook"]
    try:
        with children() as started:
            provider_port = free_port()
            provider = Child("slow provider", [*me, "--serve-provider", str(provider_port),
                                               "--provider-delay", str(args.provider_delay)],
                             workdir / "provider.log", env)
            started.append(provider)
            await provider.wait_ready(f"http://127.0.0.1:{provider_port}/readyz")

            port = free_port()
            bare = Child("bare server", [*me, "--serve-bare", str(port)],
                         workdir / "bare.log", env)
            started.append(bare)
            await bare.wait_ready(f"http://127.0.0.1:{port}/readyz")
            base = await measure(f"http://127.0.0.1:{port}/webhooks/example-fetch/{CHANNEL}",
                                 "bare", args)
            bare.stop()

            port = free_port()
            config = hub_config(workdir, port, f"http://127.0.0.1:{provider_port}")
            hub = Child("inboxhub", [sys.executable, "-m", "hub", "--config", str(config),
                                     "serve"], workdir / "hub.log", env)
            started.append(hub)
            hub_url = f"http://127.0.0.1:{port}"
            await hub.wait_ready(f"{hub_url}/readyz")
            acked = await measure(f"{hub_url}/webhooks/example-fetch/{CHANNEL}", "hub", args)
            waiting, fetched = await backlog(hub_url)
            hub.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    header = f"{'target':<34}{'ok':>8}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print()
    print(header)
    print("-" * len(header))
    for name, r in (("bare aiohttp handler", base),
                    ("inboxhub, notification stored", acked)):
        print(f"{name:<34}{r.requests:>8}{r.errors:>8}{r.rate:>9.0f}"
              f"{ms(r.percentile(0.5)):>9}{ms(r.percentile(0.99)):>9}")
    print("-" * len(header))
    p50 = acked.percentile(0.5) / base.percentile(0.5)
    p99 = acked.percentile(0.99) / base.percentile(0.99)
    print(f"ratio inboxhub/bare: p50 {p50:.2f}x, p99 {p99:.2f}x; requests/s "
          f"{acked.rate / base.rate:.2f}")
    print(f"when the load ended: {fetched:.0f} fetched, {waiting['queued']:.0f} queued, "
          f"{waiting['retrying']:.0f} retrying, {waiting['failed']:.0f} failed; oldest waiting "
          f"{waiting['oldest_age_seconds'] or 0:.1f} s (each fetch takes "
          f"{args.provider_delay:g} s, fetches.concurrency at a time)")
    verdict = "met" if acked.percentile(0.99) < BUDGET_SECONDS / 5 else "NOT met"
    print(f"p99 acknowledgement {ms(acked.percentile(0.99))} ms against Mercado Libre's "
          f"{BUDGET_SECONDS * 1000:.0f} ms budget (target: under a fifth of it): {verdict}")
    return 0 if acked.errors == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--provider-delay", type=float, default=2.0)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-provider", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, f"/webhooks/example-fetch/{CHANNEL}")
        return 0
    if args.serve_provider:
        serve_provider(args.serve_provider, args.provider_delay)
        return 0
    try:
        return asyncio.run(bench(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
