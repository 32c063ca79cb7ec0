"""Channels that declare a provider's push-subscription rule, for the channel-health tests: the
generic API channel's transport with ``Capabilities.push_subscription`` set, since the Shopee
and Mercado Libre adapters do not exist yet.

* ``shopee-like``: ``PushSubscriptionRule.shopee()`` as published (600 pushes in 6 h, warn
  under 70 %, cut under 30 %);
* ``meli-like``: ``PushSubscriptionRule.mercadolibre()`` with the answer deadline from the
  settings (``ack_within_seconds``), so a test can make every acknowledgement "slow".

Registered in-process through ``channels.registry.BUILTIN`` (``register``).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
import pytest

from channels.api import ApiChannel, ApiChannelSettings
from channels.services.health import PushSubscriptionRule

SHOPEE = "shopee-like"
MELI = "meli-like"


class MeliSettings(ApiChannelSettings, frozen=True, forbid_unknown_fields=True):
    ack_within_seconds: float = 0.5


class ShopeeLikeChannel(ApiChannel):
    type_name: ClassVar[str] = SHOPEE

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = msgspec.structs.replace(
            self.capabilities, push_subscription=PushSubscriptionRule.shopee())


class MeliLikeChannel(ApiChannel):
    type_name: ClassVar[str] = MELI
    settings_type: ClassVar[type[MeliSettings]] = MeliSettings  # type: ignore[assignment]
    settings: MeliSettings

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        rule = msgspec.structs.replace(PushSubscriptionRule.mercadolibre(),
                                       ack_within_seconds=self.settings.ack_within_seconds)
        self.capabilities = msgspec.structs.replace(self.capabilities, push_subscription=rule)


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    from channels import registry

    monkeypatch.setitem(registry.BUILTIN, SHOPEE, f"{__name__}:ShopeeLikeChannel")
    monkeypatch.setitem(registry.BUILTIN, MELI, f"{__name__}:MeliLikeChannel")


def channel_toml(name: str, type_: str, *, extra_settings: str = "",
                 alert_after_silence_minutes: int | None = None) -> str:
    alert = ("" if alert_after_silence_minutes is None
             else f"alert_after_silence_minutes = {alert_after_silence_minutes}\n")
    return f"""
[[channels]]
name = "{name}"
type = "{type_}"
{alert}[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "http://127.0.0.1:9/none"
{extra_settings}
"""
