"""Where adapter classes come from: the built-ins, then the ``inboxhub.channels`` entry points.

Loaded while the config is validated, before the event loop runs, so a plugin's imports never
block the loop.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.base import ChannelAdapter

ENTRY_POINT_GROUP = "inboxhub.channels"

BUILTIN: dict[str, str] = {
    "api": "channels.api:ApiChannel",
    "email": "channels.email.adapter:EmailChannel",
    "messenger": "channels.messenger.adapter:MessengerChannel",
    "instagram": "channels.messenger.adapter:InstagramChannel",
    "whatsapp": "channels.whatsapp.adapter:WhatsAppChannel",
    "twilio": "channels.twilio.adapter:TwilioSmsChannel",
    "telegram": "channels.telegram.adapter:TelegramChannel",
    "mercadolibre": "channels.mercadolibre.adapter:MercadoLibreChannel",
    "shopee": "channels.shopee.adapter:ShopeeChannel",
    "dhgate": "channels.dhgate.adapter:DHgateChannel",
    "aliexpress": "channels.aliexpress.adapter:AliExpressChannel",
    "ebay": "channels.ebay.adapter:EbayChannel",
    "lazada": "channels.lazada.adapter:LazadaChannel",
}


class ChannelRegistryError(LookupError):
    """Unknown channel type, or a plugin that is not an adapter."""


def available() -> dict[str, str]:
    """Every known channel type and where it comes from."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def load_adapter_class(type_name: str) -> type[ChannelAdapter]:
    from channels.base import ChannelAdapter

    target = BUILTIN.get(type_name)
    if target is not None:
        module_name, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == type_name]
        if not matches:
            known = ", ".join(sorted(available()))
            raise ChannelRegistryError(
                f"unknown channel type {type_name!r} (known: {known}; plugins register in the "
                f"{ENTRY_POINT_GROUP!r} entry-point group)"
            )
        try:
            obj = matches[0].load()
        except Exception as exc:
            raise ChannelRegistryError(
                f"plugin {type_name!r} failed to load: {type(exc).__name__}: {exc}"
            ) from None
    if not (isinstance(obj, type) and issubclass(obj, ChannelAdapter)):
        raise ChannelRegistryError(f"{type_name!r} does not name a ChannelAdapter subclass")
    return obj
