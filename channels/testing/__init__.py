"""The conformance kit: behavioural batteries every channel adapter runs.

``ChannelConformance`` (``core.py``) is the battery every adapter inherits: normalization,
dedupe on redelivery, acknowledge-only-after-store, send, error mapping, length limit and the
reply window. Capability batteries (polling, delivery receipts, hostile webhooks,
fetch-after-notify, token refresh, rate limits, windows and templates, attachments) live in
their own modules here; an adapter's test class mixes in the ones its channel supports. See
``tests/channels/api/test_conformance.py`` and the README's "write a channel" guide.
"""

from channels.testing.core import (
    HTTP_FAILURES,
    ChannelConformance,
    ConformanceHarness,
    FailureKind,
    InboundCase,
    IngestGate,
    KitConversation,
    KitStore,
    MemoryKitStore,
    MemoryOutcome,
    SentRecord,
)

__all__ = [
    "HTTP_FAILURES",
    "ChannelConformance",
    "ConformanceHarness",
    "FailureKind",
    "InboundCase",
    "IngestGate",
    "KitConversation",
    "KitStore",
    "MemoryKitStore",
    "MemoryOutcome",
    "SentRecord",
]
