"""``inboxhub serve``: run the app until SIGTERM/SIGINT, then shut down in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web

from hub.app import build_app, describe, reload_routing
from hub.config import LoadedConfig
from hub.http_guard import ConnectionGuard, body_deadline
from hub.roles import Role
from hub.tasks import TaskOwner

log = logging.getLogger(__name__)


async def serve(loaded: LoadedConfig, *, role: Role = "all", port: int | None = None,
                reuse_port: bool = False, ready: asyncio.Event | None = None) -> None:
    """One hub process. ``role`` (hub/roles.py) picks what it runs; ``port`` overrides
    ``hub.port`` (a workers process beside an http one on the same host); ``reuse_port``
    binds with SO_REUSEPORT, as the children of ``serve --processes N`` do to share one."""
    config = loaded.config
    port = config.hub.port if port is None else port
    app = build_app(loaded, role=role)
    # Outermost, so the body deadline covers every handler (added before setup freezes the app).
    app.middlewares.insert(0, body_deadline(config.hub.body_timeout_seconds))
    # keepalive_timeout bounds the wait for each later request head on a kept-alive connection;
    # the ConnectionGuard bounds the first one.
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=config.hub.shutdown_timeout_seconds,
                           keepalive_timeout=config.hub.header_timeout_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads = TaskOwner("reload")
    loop.add_signal_handler(signal.SIGHUP,
                            lambda: reloads.spawn(_reload(app), "sighup-reload"))
    listener: asyncio.Server | None = None
    try:
        await runner.setup()  # runs every cleanup_ctx start-up step
        assert runner.server is not None
        guard = ConnectionGuard(runner.server, max_connections=config.hub.max_connections,
                                header_timeout=config.hub.header_timeout_seconds)
        listener = await loop.create_server(guard, config.hub.host, port,
                                            reuse_port=reuse_port or None)
        info = describe(app)
        log.info("inboxhub listening on http://%s:%d (role %s, pid %d; channels: %s; redis: %s)",
                 config.hub.host, port, role, os.getpid(),
                 ", ".join(info["channels"]) or "none", info["redis"])
        print(f"inboxhub listening on http://{config.hub.host}:{port} (role {role}, "
              f"pid {os.getpid()})", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        # Also reached when start-up failed half way: cleanup runs for what did start.
        await reloads.cancel_all()
        if listener is not None:
            listener.close()  # no new connections; runner.cleanup ends the open ones
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _reload(app: web.Application) -> None:
    moved = await reload_routing(app)
    if moved >= 0:
        log.info("routing reloaded on SIGHUP")
