"""Provider webhooks through to stored: signed WhatsApp Cloud API and Twilio SMS POSTs.

    python -m bench.webhooks [--seconds 10] [--concurrency 32] [--max-requests 500000]

The channels' side of bench/ingest (which drives the API channel), with the same machinery and
the same target: the hub's acknowledged rate at least half the bare aiohttp handler's measured
in the same run on the same machine. Two subprocesses on loopback, one load generator (this
process, one aiohttp session per phase, ``--concurrency`` requests in flight):

* ``bare``: an aiohttp handler on both webhook paths that reads the body and answers 200. It is
  driven once with each channel's bodies, so each channel's ratio compares like with like (the
  client's cost of building and signing a body is in both figures);
* ``inboxhub``: ``python -m hub serve`` on the embedded default (its own redis-server with AOF
  in a temporary data directory) with one ``whatsapp`` and one ``twilio`` channel and
  ``hub.public_url`` set (Twilio signs the public URL). WhatsApp first, then Twilio, each
  warmed up (one message from every buyer, so that, as in bench/ingest after its warm-up, the
  measured load writes to existing conversations), drained, loaded and drained again.

Each POST is one message as the provider sends it: WhatsApp's ``messages`` change with the
buyer's profile (a JSON body with every non-ASCII character ``\\uXXXX``-escaped, signed
``X-Hub-Signature-256``), Twilio's inbound SMS form (signed ``X-Twilio-Signature`` by
twilio-python's own ``RequestValidator`` over the public URL and the sorted parameters). The
payload builders are the channels' test fixtures. A new wamid / MessageSid every request (no
dedupe shortcut), 500 distinct buyers a channel in Mexico, Brazil and the US writing in es, pt
and en, so the messages spread over 500 conversations each. The hub verifies, parses, stores
and enqueues each before its 200 ("acknowledged"); the router worker routes it ("routed": the
drain until the inbound stream is empty counts). Afterwards every acknowledged POST must be a
stored message, nothing quarantined.

Everything is bounded in time and count; the subprocesses and the data directory are removed
on exit, also on Ctrl-C. About 65 s with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.ingest import (
    ADMIN,
    BUYERS,
    BodySource,
    Ingested,
    LoadResult,
    child_env,
    children,
    ingest_run,
    load_row,
    measure,
    print_table,
    routed_row,
    run_bench,
    running_hub,
    serve_bare,
    start_bare,
    write_config,
)
from tests.channels.twilio.provider import ACCOUNT_SID, AUTH_TOKEN, OUR_NUMBER, form_body, sid
from tests.channels.twilio.provider import sign_form as twilio_signature
from tests.channels.twilio.test_conformance import FORM, inbound_form
from tests.channels.whatsapp import fixtures as wa
from tests.channels.whatsapp.graph import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    meta_json,
    meta_signature,
)

PUBLIC_URL = "https://inbox.example.com"
WHATSAPP = "wa-bench"
TWILIO = "sms-bench"
WHATSAPP_PATH = f"/webhooks/whatsapp/{WHATSAPP}"
TWILIO_PATH = f"/webhooks/twilio/{TWILIO}"
UNUSED_API = "http://127.0.0.1:9"  # nothing is sent: the bench is inbound only

# (country, a buyer's number as digits without the plus, the buyer's language's texts)
MARKETS: tuple[tuple[str, Callable[[int], str], tuple[str, ...]], ...] = (
    ("MX", lambda n: f"52155{n:08d}", (
        "Hola, ¿dónde está mi pedido? Lo compré hace dos semanas.",
        "Buenas tardes, quiero cambiar la talla de las zapatillas.",
        "¿Me pueden enviar la factura del pedido 48213, por favor?",
    )),
    ("BR", lambda n: f"55119{n:08d}", (
        "Olá, meu pedido ainda não chegou. Podem verificar o rastreio?",
        "Boa tarde, quero trocar o tamanho do tênis.",
        "Vocês podem mandar a nota fiscal do pedido 48213?",
    )),
    ("US", lambda n: f"1202555{n:04d}", (
        "Hi, I would like to return the blue jacket, it is too small.",
        "Hello, my parcel says delivered but nothing arrived.",
        "Could you send me the invoice for order 48213, please?",
    )),
)


def buyer(i: int) -> tuple[str, str, str, str]:
    """(country, number as digits, display name, text) of the ``i``-th message: 500 buyers,
    each writing one of three texts in the language of their market."""
    b = i % BUYERS
    country, number, texts = MARKETS[b % len(MARKETS)]
    return country, number(b), f"Comprador {b}", texts[(i // BUYERS) % len(texts)]


class WhatsAppBodies:
    """One text message a POST, as Meta sends it; a new wamid each."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.n = 0

    def next(self) -> tuple[bytes, dict[str, str]]:
        i = self.n
        self.n += 1
        _, wa_id, name, text = buyer(i)
        body = meta_json(wa.text(wa_id, f"wamid.bench.{self.run}.{i:09d}", text, name,
                                 timestamp=str(int(time.time()))))
        return body, {"Content-Type": "application/json",
                      "X-Hub-Signature-256": meta_signature(body, APP_SECRET)}


class TwilioBodies:
    """One inbound SMS a POST, as Twilio sends it to the public URL; a new MessageSid each.

    Encoding Twilio's 19-field form and signing it with twilio-python costs the load generator
    ~300 µs a request, which would make the client the bottleneck (the client shares the two
    cores with the server). So each buyer's form and signing string (URL + sorted ``name
    value`` pairs, CHANNELS.md §3) are built once with a placeholder SID, and a request only
    puts its SID in and takes the HMAC-SHA1. Every ``CHECK_EVERY``-th signature, the first
    included, is checked against twilio-python's ``RequestValidator``."""

    CHECK_EVERY = 1000
    PLACEHOLDER = sid("SM", 0)

    def __init__(self, run: str) -> None:
        # SIDs are 32 hex digits: the run takes the high ones, the count the low ones.
        self.base = int(hashlib.sha256(run.encode()).hexdigest()[:8], 16) << 64
        self.n = 0
        self.url = PUBLIC_URL + TWILIO_PATH
        self.key = AUTH_TOKEN.encode()
        self.templates: dict[tuple[str, str], tuple[str, str]] = {}

    def template(self, country: str, number: str, text: str) -> tuple[str, str]:
        """(form body, signing string) of this buyer's SMS, with ``PLACEHOLDER`` as its SID."""
        key = (number, text)
        if key not in self.templates:
            fields = inbound_form(0, "+" + number, text, FromCountry=country)
            signing = self.url + "".join(name + fields[name] for name in sorted(fields))
            self.templates[key] = (form_body(fields).decode("ascii"), signing)
        return self.templates[key]

    def next(self) -> tuple[bytes, dict[str, str]]:
        i = self.n
        self.n += 1
        country, number, _, text = buyer(i)
        form, signing = self.template(country, number, text)
        message_sid = sid("SM", self.base + i)
        body = form.replace(self.PLACEHOLDER, message_sid).encode("ascii")
        mac = hmac.new(self.key, signing.replace(self.PLACEHOLDER, message_sid).encode(),
                       hashlib.sha1)
        signature = base64.b64encode(mac.digest()).decode("ascii")
        if i % self.CHECK_EVERY == 0 and signature != twilio_signature(self.url, body,
                                                                       AUTH_TOKEN):
            raise RuntimeError("the bench's Twilio signature differs from twilio-python's")
        return body, {"Content-Type": FORM, "X-Twilio-Signature": signature}


@dataclass(frozen=True)
class Channel:
    label: str
    path: str
    source: Callable[[str], BodySource]


CHANNELS = (Channel("whatsapp", WHATSAPP_PATH, WhatsAppBodies),
            Channel("twilio", TWILIO_PATH, TwilioBodies))
SECRETS = {"IH_BENCH_ADMIN": ADMIN, "IH_BENCH_WA_TOKEN": TOKEN,
           "IH_BENCH_WA_SECRET": APP_SECRET, "IH_BENCH_WA_VERIFY": VERIFY_TOKEN,
           "IH_BENCH_TWILIO_TOKEN": AUTH_TOKEN}


def hub_config(workdir: Path, port: int) -> Path:
    return write_config(workdir, port, hub_extra=f"""\
# What Twilio is configured with (and signs); the hub serves it behind a proxy.
public_url = "{PUBLIC_URL}"
""", channels=f"""
[[channels]]
name = "{WHATSAPP}"
type = "whatsapp"
[channels.settings]
access_token = "env:IH_BENCH_WA_TOKEN"
app_secret = "env:IH_BENCH_WA_SECRET"
verify_token = "env:IH_BENCH_WA_VERIFY"
phone_number_id = "{PHONE_NUMBER_ID}"
api_base_url = "{UNUSED_API}/v21.0"

[[channels]]
name = "{TWILIO}"
type = "twilio"
[channels.settings]
account_sid = "{ACCOUNT_SID}"
auth_token = "env:IH_BENCH_TWILIO_TOKEN"
from_number = "{OUR_NUMBER}"
api_base_url = "{UNUSED_API}"
""")


def ratio(hub: float, bare: float) -> float:
    return hub / bare if bare else 0.0


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ihbench-webhooks-", dir="/tmp"))
    env = child_env(**SECRETS)
    print(f"inboxhub provider webhooks benchmark: {args.seconds:g} s per target after "
          f"{args.warmup_messages} warm-up messages, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}", flush=True)
    base: dict[str, LoadResult] = {}
    runs: dict[str, Ingested] = {}
    try:
        with children() as started:
            # 1. bare aiohttp, once with each channel's bodies
            bare, url = await start_bare(started, "bench.webhooks", workdir, env)
            for channel in CHANNELS:
                _, base[channel.label] = await measure(
                    url + channel.path, "bare", args, source=channel.source,
                    warmup_requests=args.warmup_messages)
            bare.stop()

            # 2. the hub with both channels, one channel after the other
            async with running_hub(started, workdir, env, hub_config) as (hub, url, pipeline):
                for channel in CHANNELS:
                    runs[channel.label] = await ingest_run(
                        pipeline, url + channel.path, "hub", args, channel.source,
                        args.warmup_messages)
                stored, conversations, by_status = await pipeline.verify()
                quarantined = await pipeline.quarantined()
            hub_exit = hub.stop()
            hub_log = hub.log_tail()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    for channel in CHANNELS:
        name, run = channel.label, runs[channel.label]
        rows += [load_row(f"bare ({name} bodies)", base[name]),
                 load_row(f"{name} acknowledged", run.acked),
                 routed_row(f"{name} routed", run)]
    print_table(rows)
    for channel in CHANNELS:
        name, run, bare_run = channel.label, runs[channel.label], base[channel.label]
        acked = ratio(run.acked.rate, bare_run.rate)
        p99 = ratio(run.acked.percentile(0.99), bare_run.percentile(0.99))
        print(f"{name}: ratio acknowledged/bare = {acked:.2f}  routed/bare = "
              f"{ratio(run.routed_rate, bare_run.rate):.2f}  (target >= 0.50: "
              f"{'meets' if acked >= 0.5 else 'BELOW'}); p99 {p99:.1f}x bare's; drain "
              f"{run.drain:.3f} s, peak inbound backlog {run.peak_backlog} (sampled every "
              f"0.25 s)")
        if bare_run.errors or run.acked.errors or run.warm.errors:
            print(f"{name}: non-200 responses: bare {bare_run.statuses}, inboxhub warm-up "
                  f"{run.warm.statuses}, measured {run.acked.statuses}")
    expected = sum(r.warm.requests + r.acked.requests for r in runs.values())
    # Message i comes from buyer i % BUYERS: every buyer wrote once 500 were posted.
    want_conversations = sum(min(BUYERS, r.warm.requests + r.acked.requests + r.warm.errors
                                 + r.acked.errors) for r in runs.values())
    consistent = (stored == expected and quarantined == 0 and hub_exit == 0
                  and conversations == want_conversations
                  and by_status == {"queued": conversations})
    print(f"pipeline check: {stored} messages stored for {expected} acknowledged POSTs "
          f"(warm-ups included) in {conversations} conversations {by_status} (expected "
          f"{want_conversations}); {quarantined} quarantined; hub exit code {hub_exit}: "
          f"{'consistent' if consistent else 'INCONSISTENT'}")
    if not consistent:
        print(f"hub log (tail):\n{hub_log}")
    return 0 if consistent else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured load per target (four targets)")
    parser.add_argument("--warmup-messages", type=int, default=BUYERS,
                        help="unmeasured messages first (by default one from every buyer, so "
                             "the measured load adds to existing conversations, as in "
                             "bench/ingest after its warm-up)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=500_000,
                        help="cap per phase (warm-up and measured)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.set_defaults(warmup=0.0)  # bench.ingest's timed warm-up: replaced by the count
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare, *(channel.path for channel in CHANNELS))
        return 0
    if (args.seconds <= 0 or args.concurrency < 1 or args.max_requests < 1
            or args.warmup_messages < 0):
        parser.error("--seconds, --concurrency and --max-requests must be positive, "
                     "--warmup-messages not negative")
    return run_bench(bench, args)


if __name__ == "__main__":
    sys.exit(main())
