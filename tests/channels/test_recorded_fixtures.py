"""Recorded provider payloads as conformance cases (channels.testing.fixtures): a broken case
file fails loudly with its name instead of quietly testing less."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.testing import fixtures


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_messages_and_refusals_are_loaded_in_file_order(tmp_path: Path) -> None:
    write(tmp_path, "b.json", '{"name": "form body", "raw": "From=%2B1&Body=ol%C3%A1", '
          '"expect": {"provider_message_id": "SM1", "thread_id": "+1", '
          '"sender_handle": "+1", "text": "olá"}}')
    write(tmp_path, "a.json", '{"name": "json", "payload": {"id": 1}, "expect": '
          '{"provider_message_id": "1", "thread_id": "t", "sender_handle": "s", "text": "x",'
          ' "sender_name": "Ana"}}')
    write(tmp_path, "c.json", '{"name": "bad", "payload": {"id": 2}, "malformed": "sender", '
          '"subpath": "status"}')
    first, second = fixtures.inbound_cases(tmp_path)
    assert (first.name, first.payload, first.sender_name) == ("json", {"id": 1}, "Ana")
    assert (second.payload, second.text) == (b"From=%2B1&Body=ol%C3%A1", "olá")
    [refusal] = fixtures.malformed_cases(tmp_path)
    assert (refusal.body, refusal.reason_contains, refusal.subpath) == \
        (b'{"id":2}', "sender", "status")


@pytest.mark.parametrize(("text", "complaint"), [
    ('{"name": "x", "payload": {}, "expect": {"provider_message_id": "1", "thread_id": "t", '
     '"sender_handle": "s", "txt": "typo"}}', "txt"),
    ('{"name": "x", "payload": {}}', "exactly one of 'expect'"),
    ('{"name": "x", "payload": {}, "raw": "b", "malformed": "r"}', "exactly one of 'payload'"),
    ('{"name": "x", "payload": {}, "color": "red", "malformed": "r"}', "color"),
    ("{not json", "JSON"),
])
def test_a_broken_case_file_names_itself_and_the_fault(tmp_path: Path, text: str,
                                                       complaint: str) -> None:
    path = write(tmp_path, "broken.json", text)
    with pytest.raises(ValueError, match=complaint) as caught:
        fixtures.inbound_cases(tmp_path)
    assert str(path) in str(caught.value)


def test_an_empty_fixtures_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no recorded cases"):
        fixtures.inbound_cases(tmp_path)
