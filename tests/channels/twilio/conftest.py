"""One Twilio channel served as the hub serves it, with its fake REST API and the kit's
in-memory services, for the tests beyond the conformance kit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.testing import IngestGate, MemoryKitStore
from channels.testing.attachments import MemoryAttachmentStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.receipts import MemoryDeliveries
from channels.testing.webhooks import MemoryQuarantine, ServedWebhook, WebhookAnswer, WebhookKit
from channels.twilio.adapter import TwilioSmsChannel
from tests.channels.twilio.provider import TwilioFake, form_body, sign_form
from tests.channels.twilio.test_conformance import FORM, INSTANCE, PUBLIC_URL, settings


class Served:
    """The adapter behind a proxy at ``PUBLIC_URL``, and everything around it."""

    def __init__(self, harness: ServedWebhook, provider: TwilioFake, gate: IngestGate,
                 store: MemoryKitStore, quarantine: MemoryQuarantine,
                 deliveries: MemoryDeliveries, fetches: MemoryFetchQueue,
                 attachments: MemoryAttachmentStore) -> None:
        self.harness, self.provider, self.gate, self.store = harness, provider, gate, store
        self.quarantine, self.deliveries = quarantine, deliveries
        self.fetches, self.attachments = fetches, attachments

    @property
    def adapter(self) -> TwilioSmsChannel:
        adapter = self.harness.adapter
        assert isinstance(adapter, TwilioSmsChannel)
        return adapter

    def public(self, subpath: str = "") -> str:
        return f"{PUBLIC_URL}/webhooks/twilio/{INSTANCE}" + (f"/{subpath}" if subpath else "")

    async def post(self, body: bytes, *, subpath: str = "", signed_url: str | None = None,
                   headers: dict[str, str] | None = None) -> WebhookAnswer:
        """POST ``body`` signed (by twilio-python) for ``signed_url`` (default: the public
        URL of ``subpath``), as Twilio would."""
        url = signed_url if signed_url is not None else self.public(subpath)
        sent = {"X-Twilio-Signature": sign_form(url, body), "Content-Type": FORM}
        sent.update(headers or {})
        return await self.harness.request("POST", subpath, body, sent)

    async def post_form(self, fields: dict[str, str], **kwargs: Any) -> WebhookAnswer:
        return await self.post(form_body(fields), **kwargs)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store, quarantine = MemoryKitStore(), MemoryQuarantine()
    gate = IngestGate(store)
    deliveries, fetches = MemoryDeliveries(), MemoryFetchQueue()
    attachments = MemoryAttachmentStore()
    async with TwilioFake() as provider, WebhookKit(gate, quarantine).run(
        provider, lambda context: TwilioSmsChannel(INSTANCE, settings(provider), context),
        sign=lambda body, subpath: {}, deliveries=deliveries, public_url=PUBLIC_URL,
        fetches=fetches, attachments=attachments,
    ) as harness:
        yield Served(harness, provider, gate, store, quarantine, deliveries, fetches,
                     attachments)
