"""Lazada IM Open API channel (``channels.lazada.adapter``)."""
