"""``inboxhub serve``: run the app until SIGTERM/SIGINT, then shut down in order."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from hub.app import build_app, describe, reload_routing
from hub.config import LoadedConfig
from hub.tasks import TaskOwner

log = logging.getLogger(__name__)


async def serve(loaded: LoadedConfig, *, ready: asyncio.Event | None = None) -> None:
    config = loaded.config
    app = build_app(loaded)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=config.hub.shutdown_timeout_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads = TaskOwner("reload")
    loop.add_signal_handler(signal.SIGHUP,
                            lambda: reloads.spawn(_reload(app), "sighup-reload"))
    try:
        await runner.setup()  # runs every cleanup_ctx start-up step
        site = web.TCPSite(runner, config.hub.host, config.hub.port)
        await site.start()
        info = describe(app)
        log.info("inboxhub listening on http://%s:%d (channels: %s; redis: %s)",
                 config.hub.host, config.hub.port, ", ".join(info["channels"]) or "none",
                 info["redis"])
        print(f"inboxhub listening on http://{config.hub.host}:{config.hub.port}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        # Also reached when start-up failed half way: cleanup runs for what did start.
        await reloads.cancel_all()
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _reload(app: web.Application) -> None:
    moved = await reload_routing(app)
    if moved >= 0:
        log.info("routing reloaded on SIGHUP")
