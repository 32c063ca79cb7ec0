"""Sends through Twilio's REST Messages API (the local fake speaks it): the documented form,
Basic auth, the StatusCallback, the sender settings, the 1600-character limit, and Twilio's
error answers mapped to retry-with-backoff or permanent failure with Twilio's message."""

from __future__ import annotations

import base64

import msgspec
import pytest

from channels.errors import (
    AuthError,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
)
from channels.models import Attachment, OutboundReply
from channels.twilio.adapter import TwilioSettings, twilio_error
from hub.config import ConfigError, convert
from hub.sender import backoff_delay
from tests.channels.twilio.conftest import Served
from tests.channels.twilio.provider import ACCOUNT_SID, AUTH_TOKEN, OUR_NUMBER, SERVICE_SID

BUYER = "+34600111222"


def reply(text: str = "Su pedido sale hoy", **extra: object) -> OutboundReply:
    fields: dict[str, object] = {"recipient_handle": BUYER, **extra}
    return OutboundReply(reply_id="r-1", conversation_id="c-1", channel_type="twilio",
                         channel_instance="sms", thread_id=BUYER, text=text,
                         **fields)  # type: ignore[arg-type]


async def test_the_documented_form_with_basic_auth_and_the_status_callback(
        served: Served) -> None:
    provider_id = await served.adapter.send(reply("Hola Ana & co. = 100% 📦"))
    assert provider_id.startswith("SM") and len(provider_id) == 34
    [form] = served.provider.forms
    assert list(form.items()) == [
        ("To", BUYER), ("From", OUR_NUMBER), ("Body", "Hola Ana & co. = 100% 📦"),
        ("StatusCallback", "https://sms.example.com/webhooks/twilio/sms/status")]
    [(method, path, authorization)] = served.provider.requests
    assert (method, path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    assert authorization == "Basic " + base64.b64encode(
        f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


async def test_a_messaging_service_sends_instead_of_a_number(served: Served) -> None:
    served.adapter.settings = msgspec.structs.replace(
        served.adapter.settings, from_number=None, messaging_service_sid=SERVICE_SID)
    await served.adapter.send(reply())
    [form] = served.provider.forms
    assert form["MessagingServiceSid"] == SERVICE_SID and "From" not in form


async def test_without_a_public_url_no_status_callback_is_named(served: Served) -> None:
    served.adapter.context.public_url = None
    await served.adapter.send(reply())
    assert "StatusCallback" not in served.provider.forms[0]


async def test_1600_characters_counted_as_utf16(served: Served) -> None:
    assert await served.adapter.send(reply("a" * 1600))
    assert await served.adapter.send(reply("📦" * 800))  # 1600 UTF-16 units
    for text in ("a" * 1601, "📦" * 801):
        with pytest.raises(ReplyRejected) as info:
            await served.adapter.send(reply(text))
        assert "1600" in str(info.value)
    assert len(served.provider.records) == 2


async def test_outbound_media_is_refused_with_the_reason(served: Served) -> None:
    photo = Attachment(name="a.png", content_type="image/png", size=10, storage_ref="mem:1")
    with pytest.raises(ReplyRejected) as info:
        await served.adapter.send(reply(attachments=(photo,)))
    assert "public URL" in str(info.value)
    assert served.provider.records == []


async def test_429_is_rate_limited_with_retry_after(served: Served) -> None:
    served.provider.fail_with(429, {"Retry-After": "7"})
    with pytest.raises(RateLimited) as info:
        await served.adapter.send(reply())
    assert info.value.retry_after == 7
    assert "20429" in str(info.value) and "Too Many Requests" in str(info.value)
    # The hub's sender waits at least what Twilio asked for before the next attempt.
    assert backoff_delay(1, 0.5, 60, info.value.retry_after) >= 7
    assert await served.adapter.send(reply())  # and then it goes through


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (503, {}, None), (500, {"Retry-After": "2"}, 2.0), (502, {}, None)])
async def test_5xx_is_retryable(served: Served, status: int, headers: dict[str, str],
                                retry_after: float | None) -> None:
    served.provider.fail_with(status, headers)
    with pytest.raises(RetryableError) as info:
        await served.adapter.send(reply())
    assert not isinstance(info.value, PermanentError)
    assert info.value.retry_after == retry_after and f"HTTP {status}" in str(info.value)


async def test_4xx_is_permanent_with_twilios_code_and_message(served: Served) -> None:
    served.provider.fail_with(400)
    with pytest.raises(PermanentError) as info:
        await served.adapter.send(reply())
    assert not isinstance(info.value, RetryableError)
    assert str(info.value) == (
        "Twilio error 21211: The 'To' number +3400000 is not a valid phone number. "
        "(https://www.twilio.com/docs/errors/21211) [HTTP 400]")


async def test_a_bad_recipient_the_fake_validates_is_permanent(served: Served) -> None:
    with pytest.raises(PermanentError) as info:
        await served.adapter.send(reply(recipient_handle=""))
    assert "21604" in str(info.value) and "'To' phone number is required" in str(info.value)


async def test_refused_credentials_are_an_auth_error(served: Served) -> None:
    served.provider.fail_with(401)
    with pytest.raises(AuthError) as info:
        await served.adapter.send(reply())
    assert "20003" in str(info.value)


@pytest.mark.parametrize(("status", "kind"), [
    (429, RateLimited), (503, RetryableError), (401, AuthError), (404, PermanentError)])
def test_an_unreadable_error_answer_still_maps_by_status(status: int,
                                                         kind: type[Exception]) -> None:
    error = twilio_error(status, b"<html>Bad gateway</html>", {})
    assert type(error) is kind and str(error) == f"Twilio answered HTTP {status} [HTTP {status}]"


async def test_a_redirect_is_not_followed(served: Served) -> None:
    served.adapter.settings = msgspec.structs.replace(
        served.adapter.settings, api_base_url=served.provider.url + "/moved")
    with pytest.raises(PermanentError):
        await served.adapter.send(reply())
    assert served.provider.records == []


async def test_an_unreachable_api_is_retryable(served: Served) -> None:
    served.adapter.settings = msgspec.structs.replace(
        served.adapter.settings, api_base_url="http://127.0.0.1:9")
    with pytest.raises(RetryableError):
        await served.adapter.send(reply())


# -- settings ------------------------------------------------------------------------------------


def _settings(**values: object) -> TwilioSettings:
    base: dict[str, object] = {"account_sid": ACCOUNT_SID, "auth_token": "env:IH_TWILIO_TOKEN"}
    base.update(values)
    return convert(base, TwilioSettings, "channels[0].settings")  # type: ignore[no-any-return]


def test_settings_take_exactly_one_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IH_TWILIO_TOKEN", AUTH_TOKEN)
    assert _settings(from_number=OUR_NUMBER).from_number == OUR_NUMBER
    assert _settings(messaging_service_sid=SERVICE_SID).api_base_url == "https://api.twilio.com"
    for wrong in ({}, {"from_number": OUR_NUMBER, "messaging_service_sid": SERVICE_SID}):
        with pytest.raises(ConfigError, match="exactly one of from_number"):
            _settings(**wrong)
    with pytest.raises(ConfigError, match="account_sid"):
        _settings(account_sid="AC123", from_number=OUR_NUMBER)
    with pytest.raises(ConfigError, match="auth_token"):
        _settings(auth_token=AUTH_TOKEN, from_number=OUR_NUMBER)  # a literal, not env:/file:
    assert AUTH_TOKEN not in repr(_settings(from_number=OUR_NUMBER))
