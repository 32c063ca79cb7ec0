"""SLA policies keyed by channel instance or label, falling back to the channel type and then
the capacity kind: the email instance that receives Amazon's buyer-seller relay carries
Amazon's 24-hour duty in wall-clock time, while the team's other email runs on business hours."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub import keys as K
from hub.config import ConfigError
from storage.routing_store import RoutingStore
from tests.helpers import eventually, running_hub, signed_post_args

CHANNELS = """
[[channels]]
name = "amazon-es"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "http://127.0.0.1:9/none"

[[channels]]
name = "vip"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "http://127.0.0.1:9/none"
"""

ROUTING = """
[routing]
channel_labels = { amazon-es = "amazon" }

[[routing.queues]]
name = "marketplaces"

[[routing.rules]]
name = "amazon"
queue = "marketplaces"
when = { channel = ["amazon"] }

[routing.sla.chat]
first_response_minutes = 5
[routing.sla.amazon]
first_response_minutes = 1440
always = true
[routing.sla.vip]
first_response_minutes = 2
always = true
"""


async def _first_deadline(client: Any, state: RoutingStore, instance: str,
                          sender: str) -> tuple[float, dict[str, str]]:
    r = await client.post(f"/webhooks/api/{instance}", **signed_post_args(
        {"id": f"m-{sender}", "sender": sender, "text": "Hola, ¿y mi pedido?"}))
    assert r.status == 200, await r.text()
    [stored] = (await r.json())["stored"]

    async def routed() -> dict[str, str] | None:
        view = await client.server.app[K.STORE].get_message(stored)
        assert view is not None
        rc = await state.conversation_state(view.conversation_id)
        return rc if rc.get("sla:first") else None

    rc = await eventually(routed)
    return float(rc["sla:first"]), rc


async def test_instance_then_label_then_kind(make_config: Any) -> None:
    loaded = make_config(extra=ROUTING + CHANNELS)
    async with running_hub(loaded) as client:
        state = client.server.app[K.ROUTING].state
        before = time.time()
        amazon, amazon_rc = await _first_deadline(client, state, "amazon-es", "buyer-a")
        vip, _ = await _first_deadline(client, state, "vip", "buyer-v")
        shop, _ = await _first_deadline(client, state, "shop", "buyer-s")
        after = time.time()
        # The label's policy, in wall-clock time: 24 h from arrival, weekends included.
        assert before + 86400 <= amazon <= after + 86400
        assert amazon_rc["queue"] == "marketplaces"  # a rule's channel condition takes labels
        # The instance's own policy beats its kind's.
        assert before + 120 <= vip <= after + 120
        # No instance or label policy: the capacity kind's (chat, no business hours set).
        assert before + 300 <= shop <= after + 300


@pytest.mark.parametrize(("extra", "message"), [
    ("[routing]\nchannel_labels = { nowhere = \"amazon\" }\n",
     "routing.channel_labels.nowhere: no channel named 'nowhere'"),
    ("[routing]\nchannel_labels = { shop = \"amazon es\" }\n",
     "routing.channel_labels.shop: expected a label"),
    ("[routing.sla.premium]\nfirst_response_minutes = 5\n",
     "routing.sla.premium: no channel instance, label, channel type or capacity kind"),
])
def test_labels_and_sla_keys_are_checked(make_config: Any, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_config(extra=extra)
