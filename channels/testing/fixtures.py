"""Conformance cases from recorded provider payloads: ``tests/channels/<name>/fixtures/*.json``.

A channel's test class can write its cases in Python, or keep what the provider really sent
(captured from a sandbox, or generated with the provider's own library) as files beside the
tests and load them here, so a new payload shape becomes a test by dropping in a file. One
file per case::

    {"name": "spanish buyer",
     "payload": {...},                      # the JSON body, as the provider sent it
     "expect": {"provider_message_id": "m-1", "thread_id": "c-1", "sender_handle": "ana",
                "text": "Hola", "sender_name": "Ana"}}

A body that is not JSON (Twilio's form, eBay's SOAP) is ``"raw": "<the body as text>"``
instead of ``payload``. An authentic body the adapter must refuse has ``"malformed": "<words
its quarantine reason contains>"`` instead of ``expect`` (and optionally ``"subpath"``). A
file with a typo in a key, or with neither ``expect`` nor ``malformed``, fails loudly with its
name, never silently tests less.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from channels.testing.core import InboundCase
from channels.testing.webhooks import MalformedCase


class Expected(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider_message_id: str
    thread_id: str
    sender_handle: str
    text: str
    sender_name: str | None = None


class RecordedCase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    payload: Any = msgspec.UNSET
    raw: str | msgspec.UnsetType = msgspec.UNSET
    expect: Expected | msgspec.UnsetType = msgspec.UNSET
    malformed: str | msgspec.UnsetType = msgspec.UNSET
    subpath: str = ""

    def __post_init__(self) -> None:
        if (self.payload is msgspec.UNSET) == (self.raw is msgspec.UNSET):
            raise ValueError("give exactly one of 'payload' (JSON) and 'raw' (any other body)")
        if (self.expect is msgspec.UNSET) == (self.malformed is msgspec.UNSET):
            raise ValueError("give exactly one of 'expect' (a message) and 'malformed' (a "
                             "refusal)")

    def body(self) -> Any:
        """The payload as the harness posts it: JSON encoded by the kit, raw bytes as is."""
        return self.raw.encode() if isinstance(self.raw, str) else self.payload


_decoder = msgspec.json.Decoder(RecordedCase)


def load_recorded(directory: Path) -> list[RecordedCase]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no recorded cases (*.json) in {directory}")
    cases: list[RecordedCase] = []
    for path in files:
        try:
            cases.append(_decoder.decode(path.read_bytes()))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None
    return cases


def inbound_cases(directory: Path) -> list[InboundCase]:
    """The recorded messages of ``directory``, for ``ChannelConformance.inbound_cases``."""
    return [
        InboundCase(name=case.name, payload=case.body(),
                    provider_message_id=case.expect.provider_message_id,
                    thread_id=case.expect.thread_id, sender_handle=case.expect.sender_handle,
                    text=case.expect.text, sender_name=case.expect.sender_name)
        for case in load_recorded(directory) if isinstance(case.expect, Expected)
    ]


def malformed_cases(directory: Path) -> list[MalformedCase]:
    """The recorded refusals of ``directory``, for ``HostileWebhookBattery.malformed_bodies``."""
    out: list[MalformedCase] = []
    for case in load_recorded(directory):
        if isinstance(case.malformed, str):
            body = case.body()
            out.append(MalformedCase(
                case.name, body if isinstance(body, bytes) else msgspec.json.encode(body),
                case.malformed, case.subpath))
    return out
