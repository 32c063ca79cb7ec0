"""Delivery receipts: provider message id -> our message, with the state moved forward only."""

from __future__ import annotations

from typing import Protocol

from channels.models import DeliveryUpdate


class DeliveryIndex(Protocol):
    async def apply(self, update: DeliveryUpdate) -> bool:
        """Record the update on the message it names; False when it changed nothing (a stale
        or repeated state). An update that arrives before the send returned is kept until the
        provider id is known."""
        ...
