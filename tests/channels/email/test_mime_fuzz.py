"""Random damage to real-shaped messages: parse_email returns a ParsedEmail or raises
MalformedEmail, never anything else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email.mime import MalformedEmail, ParsedEmail, parse_email
from tests.channels.email.test_cpython_corpus import CORPUS

SEEDS = [path.read_bytes() for path in sorted((Path(__file__).parent / "fixtures").glob("*.eml"))]
SEEDS += [path.read_bytes() for path in CORPUS]  # CPython's messages, when installed
JUNK = st.sampled_from([b"\r\n", b"\n\n", b"--", b"--b1", b"--alt--", b"=?", b"?=", b"=?utf-8?b?",
                        b"=?x-bad?q?", b"\xff\xfe", b"\x00", b":", b";", b"\"", b"<", b">",
                        b"Content-Type: multipart/mixed; boundary=\"alt\"\r\n",
                        b"Content-Transfer-Encoding: base64\r\n", b"charset=\"", b"=\r\n"])


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 12))):
        at = draw(st.integers(0, len(raw)))
        if draw(st.booleans()):
            raw[at:at] = draw(JUNK)
        else:
            del raw[at:at + draw(st.integers(1, 40))]
    return bytes(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_messages_parse_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        parsed = parse_email(raw, max_attachment_bytes=100_000, max_attachments=5)
    except MalformedEmail as refused:
        assert refused.reason
    else:
        assert isinstance(parsed, ParsedEmail) and len(parsed.content_digest) == 64
