"""The SMTP client against a real aiosmtpd: headers intact, 4xx retryable, 5xx permanent."""

from __future__ import annotations

import re
import ssl
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from channels.email.smtp import send_message
from channels.errors import AuthError, PermanentError, ReplyRejected, RetryableError
from tests.email_servers import SmtpServer, free_port

REPLY = (b"From: Ana <ana@shop.test>\r\nTo: buyer@buyer.test\r\nSubject: Re: order 1\r\n"
         b"Message-ID: <r1.ihub@shop.test>\r\nIn-Reply-To: <m1@buyer.test>\r\n"
         b"References: <m0@buyer.test> <m1@buyer.test>\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
         b"\r\nHola, \xc2\xbfqu\xc3\xa9 tal?\r\n")


async def send(smtp: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("mail_from", "ana@shop.test")
    kwargs.setdefault("rcpt_to", ["buyer@buyer.test"])
    kwargs.setdefault("port", smtp.port)
    kwargs.setdefault("security", "none")
    return await send_message(REPLY, host=smtp.host, timeout=10, **kwargs)


async def test_message_arrives_with_headers_intact(smtp_server: Any) -> None:
    result = await send(smtp_server, username=smtp_server.username,
                        password=smtp_server.password)
    assert result.refused == {}
    [mail] = smtp_server.handler.received
    assert mail.mail_from == "ana@shop.test" and mail.rcpt_tos == ["buyer@buyer.test"]
    parsed = message_from_bytes(mail.content, policy=policy.default)
    assert parsed["Message-ID"] == "<r1.ihub@shop.test>"
    assert parsed["In-Reply-To"] == "<m1@buyer.test>"
    assert parsed["References"] == "<m0@buyer.test> <m1@buyer.test>"
    assert parsed.get_content().rstrip() == "Hola, ¿qué tal?"
    assert mail.content.endswith(b"\r\n\r\nHola, \xc2\xbfqu\xc3\xa9 tal?\r\n")  # 8-bit kept


async def test_4xx_is_retryable_with_the_servers_text(smtp_server: Any) -> None:
    smtp_server.handler.refuse_next("451 4.3.0 greylisted, try later")
    with pytest.raises(RetryableError, match=re.escape("451 4.3.0 greylisted")) as caught:
        await send(smtp_server)
    assert not isinstance(caught.value, PermanentError)
    assert smtp_server.handler.received == []
    await send(smtp_server)  # the next attempt goes through
    assert len(smtp_server.handler.received) == 1


async def test_5xx_is_permanent_with_code_and_text(smtp_server: Any) -> None:
    smtp_server.handler.refuse_next("554 5.7.1 message rejected as spam")
    with pytest.raises(PermanentError, match=re.escape("554 5.7.1 message rejected as spam")):
        await send(smtp_server)
    assert smtp_server.handler.received == []


async def test_wrong_password_is_auth_error(smtp_server: Any) -> None:
    with pytest.raises(AuthError, match="535"):
        await send(smtp_server, username=smtp_server.username, password="wrong")


@pytest.mark.parametrize("field", ["mail_from", "rcpt_to"])
@pytest.mark.parametrize("bad", ["a@b.test\r\nRCPT TO:<x@evil.test>", "a@b.test\nDATA",
                                 "a@b\x00.test"])
async def test_cr_lf_in_envelope_is_refused_before_connecting(
        smtp_server: Any, field: str, bad: str) -> None:
    value: Any = [bad] if field == "rcpt_to" else bad
    with pytest.raises(ReplyRejected):
        await send(smtp_server, **{field: value})
    assert smtp_server.handler.received == []


async def test_connection_refused_is_retryable() -> None:
    with pytest.raises(RetryableError):
        await send_message(REPLY, mail_from="ana@shop.test", rcpt_to=["b@b.test"],
                           host="127.0.0.1", port=free_port(), security="none", timeout=5)


async def test_starttls_required_but_not_offered_is_permanent(smtp_server: Any) -> None:
    with pytest.raises(PermanentError, match="STARTTLS"):
        await send(smtp_server, security="starttls")


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_starttls_and_implicit_tls(tmp_path: Path, security: str) -> None:
    server = SmtpServer(cert_dir=tmp_path, implicit_tls=security == "tls")
    try:
        assert server.cert is not None
        context = ssl.create_default_context(cafile=str(server.cert))
        await send(server, security=security, ssl_context=context,
                   username=server.username, password=server.password)
        with pytest.raises(RetryableError):  # an untrusted certificate is never accepted
            await send(server, security=security)
    finally:
        server.stop()
    assert len(server.handler.received) == 1
