"""Every message shipped with CPython's own email tests, read from the running interpreter
(never copied here): decades of real-world and deliberately broken mail."""

from __future__ import annotations

import os
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from channels.email.mime import MalformedEmail, parse_email


def _corpus() -> list[Path]:
    try:
        import test.test_email  # the interpreter's own test package; absent in slim builds
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        return []
    folder = Path(os.path.dirname(test.test_email.__file__)) / "data"
    return sorted(folder.glob("msg_*.txt"))


CORPUS = _corpus()


def _has_content(raw: bytes) -> bool:
    """Whether any leaf part has a non-empty payload, judged by the stdlib's own walk."""
    message = BytesParser(policy=policy.compat32).parsebytes(raw)
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload.strip():
            return True
    return False


def test_the_corpus_is_there() -> None:
    if not CORPUS:
        pytest.skip("CPython's test.test_email package is not installed with this interpreter")
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_each_cpython_message_parses_or_is_refused_with_a_reason(path: Path) -> None:
    raw = path.read_bytes()
    try:
        parsed = parse_email(raw, max_attachment_bytes=10_000_000, max_attachments=20)
    except MalformedEmail as refused:
        assert refused.reason
        return
    if _has_content(raw):
        assert parsed.full_text.strip() or parsed.attachments, path.name
    assert len(parsed.content_digest) == 64
