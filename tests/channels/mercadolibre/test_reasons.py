"""Writing first on Mercado Libre: the action guide's reasons, listed per pack and sent as
templates (``channels/mercadolibre/reasons.py``), against the fake's documented endpoints."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.errors import ReplyRejected
from channels.models import OutboundReply, TemplateRef
from channels.windows import TemplateSpec
from tests.channels.mercadolibre.harness import adapter
from tests.channels.mercadolibre.provider import BUYER, SELLER, MercadoLibreFake

PACK = "2000000089077943"


def reason(name: str, *parameters: str, inbound: float | None = None) -> OutboundReply:
    return OutboundReply(reply_id="r-1", conversation_id="c-1", channel_type="mercadolibre",
                         channel_instance="shop", thread_id=PACK, recipient_handle=BUYER,
                         text="", template=TemplateRef(name=name, parameters=parameters),
                         last_inbound_at=inbound)


@pytest.fixture
async def fake() -> AsyncIterator[MercadoLibreFake]:
    async with MercadoLibreFake() as running:
        yield running


def guide_calls(fake: MercadoLibreFake) -> list[Any]:
    return [r for r in fake.requests if "action_guide" in r[1]]


async def test_the_conversation_lists_the_open_reasons_of_its_pack(
        fake: MercadoLibreFake) -> None:
    fake.open_guide(PACK)
    fake.guides[PACK][1]["cap_available"] = 0  # REQUEST_BILLING_INFO spent
    async with adapter(fake) as meli:
        listed = await meli.templates_for_thread(PACK, "pt")
    # DELIVERY_PROMISE's template takes variables (undocumented format): left out.
    assert listed == (TemplateSpec(name="REQUEST_VARIANTS"),
                      TemplateSpec(name="SEND_INVOICE_LINK", parameters=("text",)),
                      TemplateSpec(name="OTHER", parameters=("text",)))
    [(method, path, query)] = guide_calls(fake)
    assert (method, path, query) == ("GET", f"/messages/action_guide/packs/{PACK}",
                                     {"tag": "post_sale"})


async def test_a_free_text_reason_and_a_fixed_one_are_sent_through_the_option_post(
        fake: MercadoLibreFake) -> None:
    fake.open_guide(PACK)
    async with adapter(fake) as meli:
        assert await meli.send(reason("OTHER", "Olá! Seu pedido sai amanhã."))
        assert await meli.send(reason("REQUEST_VARIANTS"))
        # OTHER's one message is spent: the next is refused, naming what is open.
        with pytest.raises(ReplyRejected, match=r"cap_available 0.*REQUEST_BILLING_INFO"):
            await meli.send(reason("OTHER", "de novo"))
    assert fake.reasons_sent == [
        {"option_id": "OTHER", "text": "Olá! Seu pedido sai amanhã.", "pack": PACK},
        {"option_id": "REQUEST_VARIANTS", "template_id": "TEMPLATE___REQUEST_VARIANTS___1",
         "pack": PACK}]
    assert fake.sent == [], "a reason never goes through the plain reply POST"


@pytest.mark.parametrize(("name", "parameters", "refusal"), [
    ("NO_SUCH_REASON", (), r"offers no reason 'NO_SUCH_REASON'.*open reasons: REQUEST_VARIANTS"),
    ("OTHER", (), "takes one parameter, the text"),
    ("REQUEST_VARIANTS", ("extra",), "takes no parameters"),
    ("DELIVERY_PROMISE", (), "needs template variables"),
])
async def test_a_reason_the_pack_does_not_take_is_refused_before_the_option_post(
        fake: MercadoLibreFake, name: str, parameters: tuple[str, ...], refusal: str) -> None:
    fake.open_guide(PACK)
    async with adapter(fake) as meli:
        with pytest.raises(ReplyRejected, match=refusal):
            await meli.send(reason(name, *parameters))
    assert fake.reasons_sent == [] and fake.sent == []
    assert [r[0] for r in guide_calls(fake)] == ["GET"], "only the guide was read"


@pytest.mark.parametrize(("text", "refusal"), [
    ("x" * 351, "351 characters; mercadolibre allows 350"),
    ("Olá — tudo bem?", "U\\+2014"),
])
async def test_an_over_long_or_non_latin1_reason_text_never_reaches_the_api(
        fake: MercadoLibreFake, text: str, refusal: str) -> None:
    fake.open_guide(PACK)
    async with adapter(fake) as meli:
        before = len(fake.requests)
        with pytest.raises(ReplyRejected, match=refusal):
            await meli.send(reason("OTHER", text))
        assert len(fake.requests) == before


async def test_free_text_first_is_refused_naming_the_reasons(fake: MercadoLibreFake) -> None:
    async with adapter(fake) as meli:
        reply = OutboundReply(reply_id="r-1", conversation_id="c-1",
                              channel_type="mercadolibre", channel_instance="shop",
                              thread_id=PACK, recipient_handle=BUYER, text="Oi")
        with pytest.raises(ReplyRejected, match="pick a reason from the action guide"):
            await meli.send(reply)
        assert meli.reply_window(None, time.time()).template_required
    assert fake.requests == []


async def test_a_pack_outside_the_action_guide_takes_other_as_a_plain_message(
        fake: MercadoLibreFake) -> None:
    """``blocked_by_excepted_case``: no reasons, the plain reply POST is open."""
    async with adapter(fake, site_id="MPE") as meli:
        assert await meli.templates_for_thread(PACK, "es") == (
            TemplateSpec(name="OTHER", parameters=("text",)),)
        assert await meli.send(reason("OTHER", "Hola, su pedido sale hoy."))
        with pytest.raises(ReplyRejected, match="outside Mercado Libre's action guide"):
            await meli.send(reason("REQUEST_VARIANTS"))
    [sent] = fake.sent
    assert (sent["text"], sent["to"], sent["from"]) == (
        "Hola, su pedido sale hoy.", {"user_id": BUYER}, {"user_id": SELLER})
    assert fake.reasons_sent == []


async def test_a_reason_refused_by_mercado_libre_is_a_reply_rejection_not_an_auth_failure(
        fake: MercadoLibreFake) -> None:
    """Another process spent the cap between our read of the guide and the post."""
    fake.open_guide(PACK)
    fake.reason_failures.append((403, "cap_exceeded"))
    async with adapter(fake) as meli:
        with pytest.raises(ReplyRejected, match="cap_exceeded"):
            await meli.send(reason("OTHER", "Olá"))
