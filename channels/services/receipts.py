"""Delivery receipts: what the provider says became of our outbound messages.

A webhook's ``parse`` (or a poller) returns ``DeliveryUpdate`` items beside inbound messages:
provider message id -> ``sent | delivered | read | failed`` (with the provider's error). The hub
applies them through an index from provider id to our message id, written in the same atomic
step that records the provider's id when a send returns.

Providers do not keep status events in order (a ``delivered`` can arrive after ``read``), so a
message's state only moves forward, along one order:

    sent < failed < delivered < read

* ``delivered`` never overwrites ``read``; a repeated state changes nothing.
* ``failed`` replaces ``sent`` and is shown with the provider's reason (the message's
  ``error``); the reply is listed with the dead letters, where an operator can send it again.
* ``failed`` after ``delivered`` or ``read`` is dropped: once the provider has said the buyer
  received the message, a failure report about it is stale, and showing "failed" for a
  message the buyer has read would have an agent send it twice.
* ``delivered`` or ``read`` after ``failed`` wins (and clears the error): SMS carriers report
  a failure that turns out not to be final, and the receipt is the evidence.

An update for a provider id the hub does not know yet (the provider's callback beat the
provider's own answer to our send) is kept for a while and applied in the step that records
the id; one for an id the hub never learns is forgotten when that time runs out. An update
about an earlier attempt of a reply that was sent again is ignored.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from channels.models import DeliveryState, DeliveryUpdate, DeliveryWatermark

RANK: Final[dict[str, int]] = {"sent": 1, "failed": 2, "delivered": 3, "read": 4}
"""The order of the module docstring; a state not listed (queued, sending) ranks 0."""


def supersedes(new: DeliveryState, current: str) -> bool:
    """Whether an update to ``new`` changes a message now in ``current`` (the one rule; the
    Lua step in ``storage/lua/deliveries.lua`` applies the same)."""
    return RANK[new] > RANK.get(current, 0)


class DeliveryIndex(Protocol):
    async def apply(self, update: DeliveryUpdate) -> bool:
        """Record the update on the message it names; False when it changed nothing (a stale
        or repeated state, an earlier attempt, or an id not known yet: that one is kept and
        applied once the send that returns the id is recorded). Raises when it could not be
        recorded, so the webhook is not acknowledged and the provider delivers it again.

        ``update.provider_message_id`` is the provider's id for the message; a channel whose
        far end knows our reply id (the API channel) may pass that instead.
        """
        ...


@runtime_checkable
class WatermarkIndex(Protocol):
    """The sends per recipient, for providers whose receipts are watermarks
    (``DeliveryWatermark``); ``storage.deliveries.RedisDeliveries`` is one."""

    async def record_sent(self, channel_instance: str, recipient_handle: str,
                          provider_message_id: str, at: float) -> None:
        """Remember a send the provider accepted (the sender calls it after ``mark_sent``)."""
        ...

    async def apply_watermark(self, watermark: DeliveryWatermark) -> int:
        """Apply the watermark's state to every remembered send at or before its time; the
        number of sends it changed."""
        ...
