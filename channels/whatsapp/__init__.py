"""The WhatsApp Cloud API channel: ``channels.whatsapp.adapter:WhatsAppChannel``."""

from channels.whatsapp.adapter import WhatsAppChannel, WhatsAppSettings

__all__ = ["WhatsAppChannel", "WhatsAppSettings"]
