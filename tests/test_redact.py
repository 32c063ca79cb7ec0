"""Error text is kept (logs, channel health, failed fetches) where erasing a buyer does not
reach: personal data an error quotes is masked before, the wording an operator needs is not."""

from __future__ import annotations

import pytest

from channels.errors import PermanentError
from channels.redact import redact
from channels.supervisor import describe


@pytest.mark.parametrize(("text", "kept", "gone"), [
    ("HTTP 400 invalid recipient +52 55 1234 5678", "HTTP 400 invalid recipient", "5678"),
    ("bounce for ana.perez+shop@example.com.mx: mailbox full", "mailbox full", "ana.perez"),
    ("attachment 'Maria_Lopez_DNI.pdf' is 20971520 bytes; telegram allows 10485760",
     "attachment", "Maria_Lopez"),
    ('recipient "Ana Pérez" blocked the page', "blocked the page", "Ana"),
    ("order 7001234567890 not found", "not found", "7001234567890"),
])
def test_personal_data_is_masked_and_the_wording_kept(text: str, kept: str, gone: str) -> None:
    masked = redact(text)
    assert kept in masked and gone not in masked, masked


@pytest.mark.parametrize("text", ["HTTP 503 Service Unavailable", "timed out after 30s",
                                  "connection failed: ClientConnectorError", "HTTP 429 (retry 7)",
                                  "port 6379 refused", "2026 limits reached"])
def test_what_an_operator_needs_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_describe_masks_what_an_exception_quotes() -> None:
    described = describe(PermanentError("HTTP 400: +5511987654321 is not a WhatsApp user"))
    assert described == "PermanentError: HTTP 400: [number] is not a WhatsApp user"


def test_redaction_is_linear_on_hostile_text() -> None:
    hostile = "1 " * 50_000 + "@" * 50_000 + "'" * 50_000
    assert len(redact(hostile)) > 0
