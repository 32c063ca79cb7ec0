"""What one ``inboxhub serve`` process runs: ``--role http|workers|all``.

The scale-out lever of issue 21: the HTTP side (webhooks, API, web inbox) and the background
loops (router, sender, mirror, fetcher, pollers, timers, KPI aggregator, CSAT, retention,
snooze wake-ups) can run in separate processes, several of each, because every loop already
coordinates through Redis (consumer groups, leases, atomic scripts). ``all`` is one process
doing both, as before.

- ``http``: every route, the adapters' webhook side (webhook adapters started, pollers not),
  the event stream reader behind ``/api/v1/events``; no background loop that consumes work.
  Webhooks are stored durably and stay in the inbound stream until a workers process routes them.
- ``workers``: every background loop and poller; HTTP only for ``/healthz``, ``/readyz`` and
  ``/metrics`` (on ``hub.port`` or ``serve --port``), so an orchestrator can probe it.
- Both roles keep what every process needs: Redis, the routing engine and its reload listener
  (the API reads it; a reload reaches every process), channel health flushes (each process
  counts what it saw).
"""

from __future__ import annotations

import argparse
from typing import Final, Literal, cast

from aiohttp import web

from hub import keys as K

Role = Literal["http", "workers", "all"]
ROLES: Final[tuple[Role, ...]] = ("http", "workers", "all")
# Each child is a full hub (its own Redis pool, routing engine, language models: ~150 MB);
# past this a typo (--processes 400) would exhaust the machine before anyone notices.
MAX_PROCESSES: Final = 64


class PortInUse(RuntimeError):
    """``serve --processes``: the port is held by something that does not share it."""


def runs_http(role: Role) -> bool:
    """Whether this process serves the public routes (webhooks, API, web inbox)."""
    return role in ("http", "all")


def runs_workers(role: Role) -> bool:
    """Whether this process runs the background loops that consume work, and the pollers."""
    return role in ("workers", "all")


def role_arg(text: str) -> Role:
    """``--role``: one of ``ROLES``, with the accepted values in the error."""
    if text not in ROLES:
        raise argparse.ArgumentTypeError(
            f"unknown role {text[:40]!r} (accepted: {', '.join(ROLES)})")
    return text


def processes_arg(text: str) -> int:
    """``--processes``: 1 to ``MAX_PROCESSES``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of processes, got {text[:40]!r}") from None
    if not 1 <= value <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"--processes must be between 1 and {MAX_PROCESSES}, got {value}")
    return value


def port_arg(text: str) -> int:
    """``--port``: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text[:40]!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, got {value}")
    return value


def role_of(app: web.Application) -> Role:
    """The role ``build_app`` was given (``all`` for an app built without one)."""
    return cast(Role, app.get(K.ROLE, "all"))
