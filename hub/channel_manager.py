"""Builds the configured adapters, starts and stops them, and dispatches webhooks to them."""

from __future__ import annotations

import logging

from aiohttp import web

from channels.base import (
    AdapterContext,
    ChannelAdapter,
    IngestCallback,
    error_json,
    serve_webhook,
)
from channels.polling import PollingAdapter
from channels.registry import load_adapter_class
from hub.config import LoadedConfig

log = logging.getLogger(__name__)


class ChannelManager:
    def __init__(self, loaded: LoadedConfig, context: AdapterContext) -> None:
        self.adapters: dict[str, ChannelAdapter] = {}
        for channel in loaded.config.channels:
            if not channel.enabled:
                continue
            cls = load_adapter_class(channel.type)
            self.adapters[channel.name] = cls(
                channel.name, loaded.channel_settings[channel.name], context
            )

    def get(self, instance: str) -> ChannelAdapter | None:
        return self.adapters.get(instance)

    async def start_all(self, ingest: IngestCallback, *, pollers: bool = True) -> None:
        """Start every adapter; with ``pollers`` false (``serve --role http``) the polling
        ones take webhooks (a marketplace's push side) but run no poll loop: those belong to a
        workers process."""
        for name, adapter in self.adapters.items():
            if not pollers and isinstance(adapter, PollingAdapter):
                await adapter.start_without_polling(ingest)
                log.info("channel %s (%s) started without polling (left to the workers "
                         "processes)", name, adapter.type_name)
                continue
            await adapter.start(ingest)
            log.info("channel %s (%s) started", name, adapter.type_name)

    async def stop_all(self) -> None:
        for name, adapter in self.adapters.items():
            try:
                await adapter.stop()
            except Exception:
                log.exception("channel %s failed to stop cleanly", name)

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        """``/webhooks/{type}/{instance}[/{path}]``: unknown or mismatched instances, and paths
        the adapter does not serve, are a plain 404."""
        adapter = self.adapters.get(request.match_info["instance"])
        if adapter is None or adapter.type_name != request.match_info["type"]:
            return error_json(404, "not_found", "no such channel instance")
        return await serve_webhook(adapter, request)
