"""Inbound Twilio webhooks: the signature (twilio-python's published vectors and its own
validator as the reference), the public URL behind a proxy, ports, TwiML answers, redelivery
storms, market hints, hostile input, status callbacks and MMS media fetched after notify."""

from __future__ import annotations

import asyncio
import urllib.parse

import msgspec
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, MultiDict
from twilio.request_validator import RequestValidator

from channels.base import AdapterContext
from channels.errors import InvalidSignature
from channels.secrets import Secret
from channels.testing.webhooks import MemoryQuarantine
from channels.twilio.adapter import EMPTY_TWIML, TwilioSettings, TwilioSmsChannel, phone_country
from channels.twilio.signature import compute_signature
from routing.classify.market import classify_market
from tests.channels.twilio.conftest import Served
from tests.channels.twilio.provider import (
    ACCOUNT_SID,
    OUR_NUMBER,
    form_body,
    sid,
    sign_form,
)
from tests.channels.twilio.test_conformance import FORM, PUBLIC_URL, inbound_form, status_form

# twilio-python's published vectors (tests/unit/test_request_validator.py; CHANNELS.md §3).
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
                 "From": "+14158675309", "To": "+18005551212"}
VECTORS = {
    "https://mycompany.com/myapp.php?foo=1&bar=2": "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
    "https://mycompany.com:443/myapp.php?foo=1&bar=2": "kvajT1Ptam85bY51eRf/AJRuM3w=",
    "http://mycompany.com:80/myapp.php?foo=1&bar=2": "0ZXoZLH/DfblKGATFgpif+LLRf4=",
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0" + b"JFIF" + bytes(300)


# -- the signature ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), list(VECTORS.items()))
def test_published_vectors(url: str, expected: str) -> None:
    validator = RequestValidator(VECTOR_TOKEN)
    assert validator.compute_signature(url, VECTOR_PARAMS) == expected  # the reference
    assert compute_signature(VECTOR_TOKEN.encode(), url, MultiDict(VECTOR_PARAMS)) == expected
    assert validator.validate(url, VECTOR_PARAMS, expected)


def _vector_adapter(public_url: str) -> TwilioSmsChannel:
    context = AdapterContext(http=None, quarantine=MemoryQuarantine(),  # type: ignore[arg-type]
                             spawn=lambda coro, name: None,  # type: ignore[arg-type,return-value]
                             public_url=public_url)
    return TwilioSmsChannel("vector", TwilioSettings(
        account_sid=ACCOUNT_SID, auth_token=Secret(VECTOR_TOKEN, "test"),
        from_number=OUR_NUMBER), context)


@pytest.mark.parametrize(("public_url", "signature"), [
    ("https://mycompany.com", VECTORS["https://mycompany.com/myapp.php?foo=1&bar=2"]),
    ("https://mycompany.com", VECTORS["https://mycompany.com:443/myapp.php?foo=1&bar=2"]),
    ("https://mycompany.com:443", VECTORS["https://mycompany.com/myapp.php?foo=1&bar=2"]),
    ("http://mycompany.com", VECTORS["http://mycompany.com:80/myapp.php?foo=1&bar=2"]),
])
def test_verify_accepts_the_vectors_with_and_without_the_port(public_url: str,
                                                              signature: str) -> None:
    adapter = _vector_adapter(public_url)
    request = make_mocked_request("POST", "/myapp.php?foo=1&bar=2", headers=CIMultiDict(
        {"X-Twilio-Signature": signature, "Content-Type": FORM}))
    adapter.verify(request, form_body(VECTOR_PARAMS))  # raises if it does not match
    with pytest.raises(InvalidSignature):
        adapter.verify(request, form_body({**VECTOR_PARAMS, "Digits": "1235"}))
    moved = make_mocked_request("POST", "/myapp.php?foo=1&bar=3", headers=CIMultiDict(
        {"X-Twilio-Signature": signature, "Content-Type": FORM}))
    with pytest.raises(InvalidSignature):  # the query is part of what Twilio signed
        adapter.verify(moved, form_body(VECTOR_PARAMS))


def test_a_non_default_port_is_never_toggled() -> None:
    adapter = _vector_adapter("https://mycompany.com:8443")
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    request = make_mocked_request("POST", "/myapp.php?foo=1&bar=2", headers=CIMultiDict({
        "X-Twilio-Signature": RequestValidator(VECTOR_TOKEN).compute_signature(
            url, VECTOR_PARAMS), "Content-Type": FORM}))
    with pytest.raises(InvalidSignature):
        adapter.verify(request, form_body(VECTOR_PARAMS))


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                 max_size=8)
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(_names, _values), max_size=12),
       path=st.text(st.sampled_from("abc/%-_.~?=&"), max_size=20))
def test_our_signature_is_twilios_for_any_parameters(pairs: list[tuple[str, str]],
                                                     path: str) -> None:
    """Repeated keys, repeated values, Unicode, empty values: the reference decides."""
    params = MultiDict(pairs)
    url = f"https://hub.example.com/{path}"
    assert compute_signature(b"a-token", url, params) == \
        RequestValidator("a-token").compute_signature(url, params)


# -- served behind a proxy ---------------------------------------------------------------------


async def test_signed_for_the_public_url_is_stored_and_answered_with_empty_twiml(
        served: Served) -> None:
    answer = await served.post_form(inbound_form(1, "+34600111222", "Hola"))
    assert answer.status == 200
    assert answer.body.decode() == EMPTY_TWIML == \
        '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert answer.headers["Content-Type"].startswith("text/xml")
    [result] = served.gate.results
    stored = await served.store.inbound(result.message_id)
    assert stored is not None and stored.provider_message_id == sid("SM", 1)
    assert stored.sender_handle == stored.thread_id == "+34600111222"


async def test_behind_a_proxy_only_the_public_url_verifies(served: Served) -> None:
    body = form_body(inbound_form(1, "+34600111222", "Hola"))
    local = str(served.harness.server.make_url("/webhooks/twilio/sms"))
    answer = await served.post(body, signed_url=local)
    assert answer.status == 401 and b"public_url" in answer.body
    served.adapter.context.public_url = None  # no proxy: the request's own URL is signed
    assert (await served.post(body, signed_url=local)).status == 200
    assert (await served.post(body)).status == 401  # the public one no longer matches
    assert len(served.gate.results) == 1


@pytest.mark.parametrize("signed", [
    "https://sms.example.com:443/webhooks/twilio/sms",
    "https://sms.example.com/webhooks/twilio/sms",
])
async def test_twilio_signing_with_or_without_the_default_port(served: Served,
                                                               signed: str) -> None:
    answer = await served.post_form(inbound_form(1, "+34600111222", "Hola"), signed_url=signed)
    assert answer.status == 200


async def test_public_url_with_a_path_prefix_the_proxy_strips(served: Served) -> None:
    served.adapter.context.public_url = "https://example.com/inbox/"
    answer = await served.post_form(inbound_form(1, "+34600111222", "Hola"),
                                    signed_url="https://example.com/inbox/webhooks/twilio/sms")
    assert answer.status == 200
    assert served.adapter.status_callback_url() == \
        "https://example.com/inbox/webhooks/twilio/sms/status"


async def test_a_query_on_the_configured_url_is_signed(served: Served) -> None:
    body = form_body(inbound_form(1, "+34600111222", "Hola"))
    headers = {"X-Twilio-Signature": sign_form(served.public() + "?shop=es", body),
               "Content-Type": FORM}
    assert (await served.harness.request("POST", "?shop=es", body, headers)).status == 200
    assert (await served.harness.request("POST", "?shop=pt", body, headers)).status == 401


async def test_a_redelivery_storm_stores_one_message(served: Served) -> None:
    body = form_body(inbound_form(9, "+34600111222", "¿Llega hoy?"))
    answers = await asyncio.gather(*(served.post(body) for _ in range(50)))
    assert [a.status for a in answers] == [200] * 50
    assert all(a.body.decode() == EMPTY_TWIML for a in answers)
    assert len(served.gate.results) == 50
    assert sum(not r.duplicate for r in served.gate.results) == 1
    assert len({r.message_id for r in served.gate.results}) == 1
    conversation = await served.store.conversation(served.gate.results[0].conversation_id)
    assert conversation is not None and conversation.provider_message_ids == (sid("SM", 9),)


# -- market hints ------------------------------------------------------------------------------


@pytest.mark.parametrize(("sender", "from_country", "expected"), [
    ("+34600111222", "ES", "ES"),
    ("+5511987654321", None, "BR"),          # no geo lookup: the number says Brazil
    ("+14165550123", "", "CA"),              # +1 416 is Toronto, not the US
    ("+351912345678", "XX", "PT"),           # an unusable FromCountry falls back to the number
    ("+34600111222", "mx", "MX"),            # Twilio's lookup wins when it names a region
    ("BRAND", None, None),                   # an alphanumeric sender has no country
    ("whatsapp:+5215512345678", None, "MX"),  # a WhatsApp sender through Twilio
])
async def test_from_country_and_the_number_give_the_market_hint(
        served: Served, sender: str, from_country: str | None, expected: str | None) -> None:
    fields = inbound_form(3, sender, "hola")
    fields.pop("FromCountry")
    if from_country is not None:
        fields["FromCountry"] = from_country
    assert (await served.post_form(fields)).status == 200
    stored = await served.store.inbound(served.gate.results[-1].message_id)
    assert stored is not None and stored.hints.phone_country == expected
    assert phone_country(sender, from_country) == expected
    if expected is not None:  # what routing makes of it
        assert classify_market(phone_country=stored.hints.phone_country).market is not None


# -- hostile input -------------------------------------------------------------------------------


async def _refused(served: Served, body: bytes, headers: dict[str, str],
                   status: int) -> str:
    answer = await served.harness.request("POST", "", body, headers)
    assert answer.status == status, answer.body
    assert served.gate.results == [] and served.quarantine.kept == []
    return answer.body.decode()


async def test_unsigned_and_wrongly_signed_requests_are_401(served: Served) -> None:
    body = form_body(inbound_form(1, "+34600111222", "Hola"))
    await _refused(served, body, {"Content-Type": FORM}, 401)
    await _refused(served, body, {"Content-Type": FORM, "X-Twilio-Signature": "AAAA"}, 401)
    other_token = sign_form(served.public(), body, token="not-the-auth-token-0123456789")
    await _refused(served, body, {"Content-Type": FORM, "X-Twilio-Signature": other_token}, 401)
    signature = sign_form(served.public(), body)
    tampered = body.replace(b"Body=Hola", b"Body=Adios")
    await _refused(served, tampered, {"Content-Type": FORM, "X-Twilio-Signature": signature},
                   401)
    added = body + b"&Extra=1"  # a parameter nobody signed
    await _refused(served, added, {"Content-Type": FORM, "X-Twilio-Signature": signature}, 401)
    await _refused(served, body, {"Content-Type": FORM, "X-Twilio-Signature": signature + " x"},
                   401)


async def test_a_shared_key_signature_is_refused_not_misread(served: Served) -> None:
    body = form_body(inbound_form(1, "+34600111222", "Hola"))
    text = await _refused(served, body, {
        "Content-Type": FORM, "X-Twilio-Signature": sign_form(served.public(), body),
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }, 401)
    assert "shared key" in text and "another algorithm" in text
    shared = sign_form(served.public(), body, token="the-shared-key-secret-0123456789")
    text = await _refused(served, body, {
        "Content-Type": FORM, "X-Twilio-Signature": shared,
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA1",
    }, 401)
    assert "names a shared key" in text


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    (b"MessageSid=SM1&Body=%zz", FORM, "malformed %-escape"),
    ("Body=caf\u00e9".encode(), FORM, "not ASCII"),
    (b"Body=%ff%fe", FORM, "UTF-8"),
    (b"From=a&&To=b", FORM, "malformed"),
    (b'{"MessageSid": "SM1"}', "application/json", "expected Content-Type"),
    (b"From=a", "multipart/form-data; boundary=x", "expected Content-Type"),
    (b"From=a", FORM + "; charset=iso-8859-1", "charset"),
    (b"&".join(b"k%d=v" % i for i in range(1001)), FORM, "more than 1000"),
])
async def test_malformed_forms_and_wrong_content_types_are_400_and_not_kept(
        served: Served, body: bytes, content_type: str, reason: str) -> None:
    signature = sign_form(served.public(), body)
    text = await _refused(served, body, {"Content-Type": content_type,
                                         "X-Twilio-Signature": signature}, 400)
    assert reason in text


async def test_a_giant_payload_is_413_before_anything_is_read(served: Served) -> None:
    body = form_body(inbound_form(1, "+34600111222", "x" * (70 * 1024)))
    await _refused(served, body, {"Content-Type": FORM,
                                  "X-Twilio-Signature": sign_form(served.public(), body)}, 413)


async def test_an_over_long_body_field_is_quarantined_not_stored(served: Served) -> None:
    answer = await served.post_form(inbound_form(1, "+34600111222", "x" * 20_001))
    assert answer.status == 400 and b"Body" in answer.body
    assert served.gate.results == [] and len(served.quarantine.kept) == 1
    assert served.quarantine.kept[0].headers == {"Content-Type": FORM}


async def test_a_quarantined_body_parses_again_from_what_was_kept(served: Served) -> None:
    """``inboxhub quarantine retry`` re-parses with the kept Content-Type and sub-path."""
    body = status_form(sid("SM", 4), "delivered")
    adapter = served.adapter
    items = await adapter.reparse(body, {"Content-Type": FORM, ":path": "status"})
    assert [type(i).__name__ for i in items] == ["DeliveryUpdate"]
    items = await adapter.reparse(form_body(inbound_form(4, "+34600111222", "hola")),
                                  {"Content-Type": FORM})
    assert [type(i).__name__ for i in items] == ["InboundMessage"]


# -- status callbacks ----------------------------------------------------------------------------


async def test_status_callbacks_from_the_url_each_send_names(served: Served) -> None:
    """Twilio signs the StatusCallback URL we gave it; the receipts arrive out of order."""
    from channels.models import OutboundReply

    reply = OutboundReply(reply_id="r-1", conversation_id="c-1", channel_type="twilio",
                          channel_instance="sms", thread_id="+34600111222",
                          recipient_handle="+34600111222", text="Sale hoy")
    reply = await served.deliveries.outbound(reply)
    provider_id = await served.adapter.send(reply)
    await served.deliveries.sent(reply.reply_id, provider_id)
    callback = served.provider.forms[-1]["StatusCallback"]
    assert callback == f"{PUBLIC_URL}/webhooks/twilio/sms/status"
    subpath = urllib.parse.urlsplit(callback).path.rsplit("/", 1)[-1]
    for status in ("delivered", "sending", "sent", "queued"):
        answer = await served.post(status_form(provider_id, status), subpath=subpath,
                                   signed_url=callback)
        assert answer.status == 200 and answer.body.decode() == EMPTY_TWIML
    found = await served.deliveries.status(reply.reply_id)
    assert found is not None and found.state == "delivered"
    assert served.gate.results == [], "a receipt was stored as a buyer message"


@pytest.mark.parametrize(("status", "code", "error"), [
    ("undelivered", "30007", "Twilio error 30007: Message filtered"),
    ("failed", "30034", "Twilio error 30034: Message from an unregistered number"),
    ("failed", "63999", "Twilio error 63999"),
    ("undelivered", None, "Twilio reported the message undelivered"),
])
async def test_a_failure_shows_twilios_code_and_words(served: Served, status: str,
                                                       code: str | None, error: str) -> None:
    from channels.models import OutboundReply

    reply = await served.deliveries.outbound(OutboundReply(
        reply_id="r-2", conversation_id="c-1", channel_type="twilio", channel_instance="sms",
        thread_id="+34600111222", recipient_handle="+34600111222", text="Sale hoy"))
    provider_id = await served.adapter.send(reply)
    await served.deliveries.sent(reply.reply_id, provider_id)
    answer = await served.post(status_form(provider_id, status, code), subpath="status")
    assert answer.status == 200
    found = await served.deliveries.status(reply.reply_id)
    assert found is not None and (found.state, found.error) == ("failed", error)


async def test_an_unsigned_status_callback_changes_nothing(served: Served) -> None:
    body = status_form(sid("SM", 1), "failed", "30003")
    answer = await served.harness.request("POST", "status", body, {"Content-Type": FORM})
    assert answer.status == 401
    signed_for_main = sign_form(served.public(), body)  # the wrong URL of the two
    answer = await served.harness.request("POST", "status", body, {
        "Content-Type": FORM, "X-Twilio-Signature": signed_for_main})
    assert answer.status == 401


# -- MMS: media fetched after the notification ---------------------------------------------------


async def _stored_after_fetch(served: Served, count: int = 1) -> None:
    async with served.fetches.running({served.adapter.instance: served.adapter}):
        for _ in range(400):
            if len([r for r in served.gate.results if not r.duplicate]) >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the MMS was not stored after its fetch")


async def test_an_mms_is_acknowledged_at_once_and_stored_with_its_media(
        served: Served) -> None:
    message_sid = sid("MM", 1)
    fields = served.provider.publish_mms(message_sid, "+34600111222", "Mire la caja rota",
                                         [("image/png", PNG), ("image/jpeg", JPEG)])
    answer = await served.post_form(fields)
    assert answer.status == 200 and answer.body.decode() == EMPTY_TWIML
    assert served.gate.results == [], "stored before the media were fetched"
    await _stored_after_fetch(served)
    stored = await served.store.inbound(served.gate.results[0].message_id)
    assert stored is not None
    assert (stored.provider_message_id, stored.text) == (message_sid, "Mire la caja rota")
    assert stored.sent_at == 1767225601 and stored.hints.phone_country == "ES"
    assert [(a.content_type, a.size) for a in stored.attachments] == [
        ("image/png", len(PNG)), ("image/jpeg", len(JPEG))]
    files = [await served.attachments.get(a.storage_ref or "") for a in stored.attachments]
    assert files == [PNG, JPEG]
    api = [auth for _, path, auth in served.provider.requests if path.startswith("/2010")]
    store = [auth for _, path, auth in served.provider.requests if path.startswith("/media")]
    assert api and all(a and a.startswith("Basic ") for a in api)
    assert len(store) == 2 and store == [None, None], "credentials sent to the media store"


async def test_a_redelivered_mms_is_fetched_once(served: Served) -> None:
    fields = served.provider.publish_mms(sid("MM", 2), "+34600111222", "foto",
                                         [("image/png", PNG)])
    for _ in range(5):
        assert (await served.post_form(fields)).status == 200
    await _stored_after_fetch(served)
    message_gets = [p for _, p, _ in served.provider.requests if p.endswith(f"{sid('MM', 2)}.json")]
    assert len(message_gets) == 1
    assert sum(not r.duplicate for r in served.gate.results) == 1


async def test_a_failed_fetch_is_retried(served: Served) -> None:
    served.provider.fetch_failures = [503, 429]
    fields = served.provider.publish_mms(sid("MM", 3), "+34600111222", "foto",
                                         [("image/png", PNG)])
    assert (await served.post_form(fields)).status == 200
    await _stored_after_fetch(served)
    assert served.provider.fetch_failures == []


async def test_an_oversized_file_is_kept_as_a_refused_placeholder(served: Served) -> None:
    served.adapter.settings = msgspec.structs.replace(served.adapter.settings,
                                                      max_attachment_bytes=100)
    fields = served.provider.publish_mms(sid("MM", 4), "+34600111222", "dos fotos",
                                         [("image/png", PNG), ("image/jpeg", JPEG[:50])])
    assert (await served.post_form(fields)).status == 200
    await _stored_after_fetch(served)
    stored = await served.store.inbound(served.gate.results[0].message_id)
    assert stored is not None
    big, small = stored.attachments
    assert big.storage_ref is None and big.refused and "100 bytes" in big.refused
    assert small.storage_ref is not None and small.refused is None


async def test_an_mms_the_api_does_not_know_fails_visibly(served: Served) -> None:
    fields = served.provider.publish_mms(sid("MM", 5), "+34600111222", "foto", [])
    fields["NumMedia"] = "1"
    served.provider.messages.clear()
    assert (await served.post_form(fields)).status == 200
    async with served.fetches.running({served.adapter.instance: served.adapter}):
        for _ in range(200):
            failed = await served.fetches.entries(served.adapter.instance, "failed")
            if failed:
                break
            await asyncio.sleep(0.01)
    [entry] = failed
    assert "20404" in (entry.last_error or "")
    assert served.gate.results == []
