"""Replies through the WhatsApp channel against the local Graph API: the documented request
bodies, the 24-hour window and the templates that go instead, and Graph error codes mapped to
what the hub's sender does (retry with backoff, refuse with the template path, give up with
Meta's words)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from channels.errors import (
    AuthError,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
)
from channels.models import Attachment, OutboundReply, TemplateRef
from channels.whatsapp.adapter import DEFAULT_API_BASE_URL, WhatsAppSettings
from channels.windows import WindowClosed
from tests.channels.whatsapp import fixtures as f
from tests.channels.whatsapp.graph import PHONE_NUMBER_ID
from tests.channels.whatsapp.harness import WhatsAppHarness, WhatsAppKit, settings

HOUR = 3600.0


def reply(text: str = "Su pedido sale hoy 🚚", *, age: float | None = HOUR,
          **fields: Any) -> OutboundReply:
    base = OutboundReply(
        reply_id=f"r-{time.time_ns()}", conversation_id="c-1", channel_type="whatsapp",
        channel_instance="wa-shop", thread_id=f.BUYER_MX, recipient_handle=f.BUYER_MX,
        text=text, in_reply_to="wamid.buyer-1",
        last_inbound_at=None if age is None else time.time() - age)
    return msgspec.structs.replace(base, **fields) if fields else base


ES_TEMPLATE = TemplateRef("order_update", "es", ("Ana", "MX-123"))


class TestOutbound(WhatsAppKit):

    async def test_free_text_inside_the_window_is_the_documented_body(
            self, harness: WhatsAppHarness) -> None:
        wamid = await harness.adapter.send(reply())
        assert wamid.startswith("wamid.")
        assert harness.graph.bodies == [{
            "messaging_product": "whatsapp", "recipient_type": "individual",
            "to": f.BUYER_MX, "type": "text",
            "text": {"body": "Su pedido sale hoy 🚚", "preview_url": False},
            "context": {"message_id": "wamid.buyer-1"}}]

    async def test_a_reply_to_a_media_message_quotes_the_wamid(
            self, harness: WhatsAppHarness) -> None:
        await harness.adapter.send(reply(in_reply_to="wamid.img-7/media"))
        assert harness.graph.bodies[0]["context"] == {"message_id": "wamid.img-7"}

    async def test_the_4096_character_limit(self, harness: WhatsAppHarness) -> None:
        assert harness.adapter.capabilities.max_text_length == 4096
        assert await harness.adapter.send(reply("ñ" * 4096))
        with pytest.raises(ReplyRejected, match="4097 characters"):
            await harness.adapter.send(reply("ñ" * 4097))
        assert len(harness.sent()) == 1

    async def test_free_text_after_24_hours_is_refused_naming_the_templates(
            self, harness: WhatsAppHarness) -> None:
        late = reply(age=24 * HOUR + 60)
        with pytest.raises(WindowClosed) as info:
            await harness.adapter.send(late)
        message = str(info.value)
        assert "closed at" in message and "template" in message
        assert "order_update (es, 2 parameters)" in message
        assert "order_update (pt_BR, 2 parameters)" in message
        assert harness.sent() == [], "a refused reply reached the provider"
        state = harness.adapter.reply_window(late.last_inbound_at, time.time())
        assert (state.open, state.template_required, state.templates) == (False, True, True)

    async def test_writing_first_needs_a_template(self, harness: WhatsAppHarness) -> None:
        with pytest.raises(WindowClosed, match="cannot start a conversation"):
            await harness.adapter.send(reply(age=None))
        assert harness.sent() == []

    @pytest.mark.parametrize("age", [HOUR, 24 * HOUR + 60, 30 * 24 * HOUR, None])
    async def test_a_template_goes_inside_and_outside_the_window(
            self, harness: WhatsAppHarness, age: float | None) -> None:
        wamid = await harness.adapter.send(reply("", age=age, template=ES_TEMPLATE))
        assert wamid.startswith("wamid.")
        assert harness.graph.bodies == [{
            "messaging_product": "whatsapp", "recipient_type": "individual",
            "to": f.BUYER_MX, "type": "template", "template": {
                "name": "order_update", "language": {"code": "es"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Ana"}, {"type": "text", "text": "MX-123"}]}]}}]
        assert harness.sent_templates() == [ES_TEMPLATE]

    async def test_a_template_without_parameters_has_no_components(
            self, harness: WhatsAppHarness) -> None:
        await harness.adapter.send(reply("", age=48 * HOUR,
                                         template=TemplateRef("follow_up", "en_US")))
        assert harness.graph.bodies[0]["template"] == {
            "name": "follow_up", "language": {"code": "en_US"}}

    async def test_a_template_not_configured_for_the_language_is_refused(
            self, harness: WhatsAppHarness) -> None:
        with pytest.raises(ReplyRejected, match="language"):
            await harness.adapter.send(reply("", age=48 * HOUR, template=TemplateRef(
                "order_update", "fr", ("Ana", "1"))))
        with pytest.raises(ReplyRejected, match="2 parameter"):
            await harness.adapter.send(reply("", age=48 * HOUR, template=TemplateRef(
                "order_update", "es", ("Ana",))))
        assert harness.sent() == []

    async def test_templates_for_the_conversations_language(
            self, harness: WhatsAppHarness) -> None:
        adapter = harness.adapter
        assert [t.language for t in adapter.templates_for("pt")] == ["pt_BR"]
        assert [t.language for t in adapter.templates_for("es-MX")] == ["es"]
        assert len(adapter.templates_for("de")) == 3  # none in German: all of them
        assert len(adapter.templates_for(None)) == 3

    async def test_meta_re_engagement_131047_is_the_window_closed_refusal(
            self, harness: WhatsAppHarness) -> None:
        # Our clock says the window is open (the hub saw the message arrive recently) but
        # Meta counts from the buyer's message: it refuses, and the agent is told why.
        harness.graph.window_closed.add(f.BUYER_MX)
        with pytest.raises(WindowClosed) as info:
            await harness.adapter.send(reply(age=23 * HOUR))
        message = str(info.value)
        assert "131047" in message and "Re-engagement message" in message
        assert "more than 24 hours have passed" in message
        assert "template" in message and "order_update (es" in message
        assert harness.sent() == []
        assert await harness.adapter.send(reply("", age=23 * HOUR, template=ES_TEMPLATE))

    @pytest.mark.parametrize(("status", "code", "title"), [
        (400, 131026, "Message undeliverable"),
        (400, 131051, "Unsupported message type"),
        (400, 100, "Invalid parameter"),
        (400, 131009, "Parameter value is not valid"),
        (404, 100, "Unsupported post request"),
    ])
    async def test_permanent_failures_keep_metas_words(
            self, harness: WhatsAppHarness, status: int, code: int, title: str) -> None:
        harness.graph.fail_next_send_with(status, code, title)
        with pytest.raises(PermanentError) as info:
            await harness.adapter.send(reply())
        assert not isinstance(info.value, RetryableError | WindowClosed)
        assert f"(#{code}) {title}" in str(info.value)

    @pytest.mark.parametrize(("status", "code", "headers", "wait"), [
        (400, 130429, {}, 1.0),                  # throughput limit, as a 400
        (400, 131056, {}, 6.0),                  # pair rate limit
        (429, 130429, {"Retry-After": "12"}, 12.0),
        (400, 80007, {}, 60.0),
        (403, 4, {}, 60.0),                      # app call limit
    ])
    async def test_throttling_is_retried_after_a_wait(
            self, harness: WhatsAppHarness, status: int, code: int,
            headers: dict[str, str], wait: float) -> None:
        harness.graph.fail_next_send_with(status, code, "Rate limit hit", headers)
        with pytest.raises(RateLimited) as info:
            await harness.adapter.send(reply())
        assert info.value.retry_after == wait
        assert await harness.adapter.send(reply())  # one-off: the retry goes through

    @pytest.mark.parametrize(("status", "code"), [
        (500, 131000), (503, 2), (502, 1), (400, 131057), (400, 131016)])
    async def test_metas_trouble_is_retryable(self, harness: WhatsAppHarness, status: int,
                                              code: int) -> None:
        harness.graph.fail_next_send_with(status, code, "Something went wrong")
        with pytest.raises(RetryableError) as info:
            await harness.adapter.send(reply())
        assert not isinstance(info.value, PermanentError)

    async def test_an_expired_token_is_an_auth_error(self, harness: WhatsAppHarness) -> None:
        harness.graph.fail_next_send_with(400, 190, "Error validating access token")
        with pytest.raises(AuthError, match="190"):
            await harness.adapter.send(reply())

    async def test_files_are_refused_before_any_request(self, harness: WhatsAppHarness) -> None:
        with pytest.raises(ReplyRejected, match="not files"):
            await harness.adapter.send(reply(attachments=(Attachment(
                "foto.jpg", "image/jpeg", 10, storage_ref="mem:x"),)))
        assert harness.sent() == []


class TestSlowGraph(WhatsAppKit):
    def settings_overrides(self) -> dict[str, Any]:
        return {"timeout_seconds": 0.3}

    async def test_a_send_that_hangs_times_out_as_retryable(
            self, harness: WhatsAppHarness) -> None:
        harness.graph.send_hold.clear()
        try:
            with pytest.raises(RetryableError, match="timed out"):
                await harness.adapter.send(reply())
        finally:
            harness.graph.send_hold.set()


def test_settings_defaults_and_checks() -> None:
    base = settings("http://127.0.0.1:1/v21.0")
    fields = {name: getattr(base, name) for name in
              ("access_token", "app_secret", "verify_token", "phone_number_id")}
    assert WhatsAppSettings(**fields).api_base_url == DEFAULT_API_BASE_URL
    assert DEFAULT_API_BASE_URL == "https://graph.facebook.com/v21.0"
    with pytest.raises(ValueError, match="api_base_url"):
        WhatsAppSettings(**fields, api_base_url="ftp://graph.facebook.com")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**fields, "phone_number_id": "12/../34"}, WhatsAppSettings,
                        dec_hook=lambda t, o: o)
    assert base.phone_number_id == PHONE_NUMBER_ID
