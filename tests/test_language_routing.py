"""Language identification as the product uses it, through the real app: the storefront market
is a weak prior, a near-tie is routed and flagged for a one-click correction (never dropped),
and the correction clears the flag."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args

ROUTING = """
[routing]
languages = ["es", "pt", "en", "fr", "de", "it", "zh"]
"""


async def _classified(client: Any, sender: str) -> dict[str, Any] | None:
    r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    for conv in (await r.json())["conversations"]:
        if conv["contact_handle"] == sender and conv["status"] == "queued":
            return conv  # type: ignore[no-any-return]
    return None


async def _post(client: Any, message_id: str, sender: str, text: str,
                **extra: str) -> None:
    r = await client.post("/webhooks/api/shop", **signed_post_args(
        {"id": message_id, "sender": sender, "text": text, **extra}))
    assert r.status == 200, await r.text()


async def test_market_breaks_a_near_tie_and_a_low_confidence_guess_is_flagged(
        make_config: Any) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        await _post(client, "m-br", "buyer-br", "pedido", market="BR")
        await _post(client, "m-mx", "buyer-mx", "pedido", market="MX")
        await _post(client, "m-none", "buyer-none", "pedido")
        await _post(client, "m-en", "buyer-en", "Where is my order? It has not arrived",
                    market="MX")
        br = await eventually(lambda: _classified(client, "buyer-br"))
        mx = await eventually(lambda: _classified(client, "buyer-mx"))
        none = await eventually(lambda: _classified(client, "buyer-none"))
        en = await eventually(lambda: _classified(client, "buyer-en"))

        assert (br["language"], mx["language"]) == ("pt", "es")
        # No market, no hint: the text still decides (the old rule abstained here) ...
        assert none["language"] == "es"
        # ... and a near-tie is kept, routed and flagged, with its confidence.
        assert none["language_low_confidence"] is True
        assert 0.5 < none["language_confidence"] < 0.6
        # Clear text beats the market: an English buyer on a Mexican storefront stays English.
        assert en["language"] == "en" and en["language_low_confidence"] is False

        r = await client.get(f"/api/v1/conversations/{br['id']}/routing",
                             headers=auth(ADMIN_TOKEN))
        [classified] = [e for e in (await r.json())["log"] if e["event"] == "classified"]
        assert classified["language_source"] == "text+market"
        assert classified["market"] == "BR"

        r = await client.post(f"/api/v1/conversations/{none['id']}/language",
                              json={"language": "pt"}, headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()

        async def corrected() -> dict[str, Any] | None:
            conv = await _classified(client, "buyer-none")
            return conv if conv and conv["language"] == "pt" else None

        fixed = await eventually(corrected)
        assert fixed["language_low_confidence"] is False
        assert fixed["language_confidence"] == 1.0
