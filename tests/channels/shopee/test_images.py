"""Shopee chat images both ways against the local fake: a buyer's image downloaded from the
CDN into the attachment store (https only, no redirect, capped, never with our token), what
cannot be taken kept as a refused attachment with the reason, a passing CDN outage retried;
a reply's images uploaded through ``upload_image`` (signed) and sent before its text, a
failed upload sending nothing, a retry after a failed text not sending the image twice."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from channels.errors import PermanentError, RetryableError
from channels.models import Attachment, InboundMessage, OutboundReply
from channels.services.tokens import OAuthTokens
from channels.shopee.adapter import MAX_IMAGE_BYTES, image_url_problem
from channels.testing.attachments import EXECUTABLE, PNG, MemoryAttachmentStore
from channels.testing.tokens import MemoryTokenStore
from tests.channels.shopee.provider import ShopeeFake
from tests.channels.shopee.test_shopee import BUYER, KEY, PARTNER_ID, SHOP_ID, Rig

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with ShopeeFake(partner_id=PARTNER_ID, partner_key=KEY, shop_id=SHOP_ID) as fake, \
            aiohttp.ClientSession() as session:
        tokens = MemoryTokenStore()
        await tokens.put("shop", OAuthTokens(access_token="at-0", refresh_token="rt-0",
                                             expires_at=time.time() + 4 * 3600))
        yield Rig(fake, session, tokens, attachments=MemoryAttachmentStore())


def files(rig: Rig) -> MemoryAttachmentStore:
    assert isinstance(rig.attachments, MemoryAttachmentStore)
    return rig.attachments


async def only(rig: Rig, conversation: str = "9001") -> InboundMessage:
    [message] = await rig.adapter.fetch(conversation)
    assert isinstance(message, InboundMessage)
    return message


async def test_a_buyer_image_is_stored_typed_by_its_bytes(rig: Rig) -> None:
    # A CDN id without an extension, declared as something else: the bytes decide.
    url = rig.fake.serve_file(JPEG, "br-11134201-7r98o-abc", content_type="text/plain")
    rig.fake.buyer_sends_image("9001", BUYER, url)
    message = await only(rig)
    [image] = message.attachments
    assert (image.name, image.content_type, image.size) == (
        "br-11134201-7r98o-abc.jpg", "image/jpeg", len(JPEG))
    assert image.refused is None and image.storage_ref is not None
    assert await files(rig).get(image.storage_ref) == JPEG
    assert message.text == ""  # no "[image] url" text any more
    [fetched] = rig.fake.file_requests  # once, and without the shop's token (the fake checks)
    assert "access_token" not in fetched


@pytest.mark.parametrize("url, reason", [
    ("http://cdn.example.com/file/a.jpg", "not an https URL"),
    ("ftp://cdn.example.com/file/a.jpg", "not an https URL"),
    ("br-11134201-7r98o-abc", "not a usable URL"),  # a bare CDN id
    ("https://user:pw@cdn.example.com/a.jpg", "not a usable URL"),
    ("https://169.254.169.254/latest/meta-data", "non-public address"),
    ("https://10.0.0.8/a.jpg", "non-public address"),
    ("", "no image URL"),
])
async def test_an_image_url_we_do_not_fetch_is_kept_refused(rig: Rig, url: str,
                                                            reason: str) -> None:
    rig.fake.buyer_sends_image("9001", BUYER, url)
    [image] = (await only(rig)).attachments
    assert image.storage_ref is None and image.refused is not None
    assert reason in image.refused
    if url:
        assert url not in image.refused
    assert rig.fake.file_requests == [] and files(rig).files == {}


def test_plain_http_only_to_loopback_and_only_with_a_local_api() -> None:
    assert image_url_problem("http://127.0.0.1:8080/file/a", local_api=True) is None
    assert image_url_problem("http://127.0.0.1:8080/file/a", local_api=False) is not None
    assert image_url_problem("https://127.0.0.1/file/a", local_api=False) is not None
    assert image_url_problem("https://cf.shopee.com.br/file/br-1", local_api=False) is None


@pytest.mark.parametrize("status, headers, reason", [
    (302, {"Location": "http://127.0.0.1:1/secret"}, "redirect, not followed"),
    (404, {}, "HTTP 404"),
    (403, {}, "HTTP 403"),
])
async def test_an_image_shopee_does_not_serve_is_kept_refused(
        rig: Rig, status: int, headers: dict[str, str], reason: str) -> None:
    url = rig.fake.serve_file(JPEG, "a.jpg", status=status, headers=headers)
    rig.fake.buyer_sends_image("9001", BUYER, url)
    [image] = (await only(rig)).attachments
    assert image.storage_ref is None and image.refused and reason in image.refused
    assert len(rig.fake.file_requests) == 1  # the redirect was not followed


async def test_a_cdn_outage_is_retried_not_lost(rig: Rig) -> None:
    url = rig.fake.serve_file(JPEG, "a.jpg", status=503)
    rig.fake.buyer_sends_image("9001", BUYER, url)
    with pytest.raises(RetryableError) as info:
        await rig.adapter.fetch("9001")
    assert url not in str(info.value)
    file_id = url.split("/file/")[1].split("/")[0]
    rig.fake.files[file_id] = (200, JPEG, "image/jpeg", {})  # the CDN is back
    [image] = (await only(rig)).attachments
    assert image.storage_ref is not None


async def test_oversized_and_wrong_type_images_are_refused_with_the_reason(rig: Rig) -> None:
    big = PNG + bytes(MAX_IMAGE_BYTES + 1 - len(PNG))
    rig.fake.buyer_sends_image("9001", BUYER, rig.fake.serve_file(big, "big.png"))
    rig.fake.buyer_sends_image("9002", BUYER, rig.fake.serve_file(EXECUTABLE, "x.png",
                                                                    content_type="image/png"))
    [large] = (await only(rig, "9001")).attachments
    [wrong] = (await only(rig, "9002")).attachments
    assert large.refused and str(MAX_IMAGE_BYTES) in large.refused
    assert wrong.refused and "application/octet-stream" in wrong.refused
    assert files(rig).files == {}


async def test_a_narrower_setting_lowers_the_limit(rig: Rig) -> None:
    rig.adapter = rig.make(max_attachment_bytes=1000)
    rig.fake.buyer_sends_image("9001", BUYER, rig.fake.serve_file(JPEG, "a.jpg"))
    [image] = (await only(rig)).attachments
    assert image.refused and "1000" in image.refused


async def stored(rig: Rig, data: bytes, name: str, content_type: str) -> Attachment:
    return await files(rig).put(data, name=name, content_type=content_type)


def reply(*attachments: Attachment, text: str = "Segue a etiqueta",
          reply_id: str = "r1") -> OutboundReply:
    return OutboundReply(reply_id=reply_id, conversation_id="c", channel_type="shopee",
                         channel_instance="shop", thread_id="9001",
                         recipient_handle=str(BUYER), text=text,
                         last_inbound_at=time.time(), attachments=attachments)


async def test_images_are_uploaded_then_sent_before_the_text(rig: Rig) -> None:
    one = await stored(rig, PNG, "etiqueta.png", "image/png")
    two = await stored(rig, JPEG, "foto.jpg", "image/jpeg")
    sent = await rig.adapter.send(reply(one, two))
    assert [s["message_type"] for s in rig.fake.sent] == ["image", "image", "text"]
    assert sent.startswith("s-")
    assert rig.fake.sent[-1]["content"] == {"text": "Segue a etiqueta"}
    uploaded = [rig.fake.uploads[s["content"]["image_url"]] for s in rig.fake.sent[:2]]
    assert uploaded == [("etiqueta.png", "image/png", PNG), ("foto.jpg", "image/jpeg", JPEG)]
    paths = [p for p in rig.fake.requests if p.startswith("/api/")]
    assert paths == ["/api/v2/sellerchat/upload_image"] * 2 + \
        ["/api/v2/sellerchat/send_message"] * 3
    assert rig.fake.bad_signs == 0  # the uploads were signed like every shop call


async def test_an_image_only_reply_sends_just_the_image(rig: Rig) -> None:
    one = await stored(rig, PNG, "etiqueta.png", "image/png")
    await rig.adapter.send(reply(one, text=""))
    assert [s["message_type"] for s in rig.fake.sent] == ["image"]


async def test_a_refused_upload_sends_nothing(rig: Rig) -> None:
    one = await stored(rig, PNG, "etiqueta.png", "image/png")
    two = await stored(rig, JPEG, "foto.jpg", "image/jpeg")
    rig.fake.fail_on[("/api/v2/sellerchat/upload_image", 2)] = (400, "error_image")
    with pytest.raises(PermanentError, match="error_image"):
        await rig.adapter.send(reply(one, two))
    assert rig.fake.sent == []  # the first image was uploaded, nothing was sent


async def test_a_retry_after_a_failed_text_does_not_resend_the_image(rig: Rig) -> None:
    one = await stored(rig, PNG, "etiqueta.png", "image/png")
    rig.fake.fail_on[("/api/v2/sellerchat/send_message", 2)] = (503, "error_server")
    with pytest.raises(RetryableError):
        await rig.adapter.send(reply(one))
    assert [s["message_type"] for s in rig.fake.sent] == ["image"]
    await rig.adapter.send(reply(one))  # the hub's retry of the same reply
    assert [s["message_type"] for s in rig.fake.sent] == ["image", "text"]
    assert len(rig.fake.uploads) == 1
    # Done: a later reply with the same files is new and sends both again.
    await rig.adapter.send(reply(one, reply_id="r2"))
    assert [s["message_type"] for s in rig.fake.sent] == ["image", "text", "image", "text"]
