"""Builds the configured adapters, starts and stops them, and dispatches webhooks to them."""

from __future__ import annotations

import logging

from aiohttp import web

from channels.base import AdapterContext, ChannelAdapter, IngestCallback
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

    async def start_all(self, ingest: IngestCallback) -> None:
        for name, adapter in self.adapters.items():
            await adapter.start(ingest)
            log.info("channel %s (%s) started", name, adapter.type_name)

    async def stop_all(self) -> None:
        for name, adapter in self.adapters.items():
            try:
                await adapter.stop()
            except Exception:
                log.exception("channel %s failed to stop cleanly", name)

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        """``/webhooks/{type}/{instance}``: unknown or mismatched instances are a plain 404."""
        adapter = self.adapters.get(request.match_info["instance"])
        if adapter is None or adapter.type_name != request.match_info["type"]:
            return web.json_response({"error": "no such channel instance"}, status=404)
        if request.method not in adapter.webhook_methods:
            return web.json_response({"error": "method not allowed"}, status=405)
        return await adapter.handle_webhook(request)
