"""The email channel on a real Dovecot (IMAP, IDLE) and aiosmtpd (SMTP): the conformance kit's
core and polling batteries on the kit's memory stores and on Redis, then what is email's own:
bounces, auto-replies, Amazon's relay, threading on our Message-ID, ``\\Seen`` untouched."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.email.adapter import EmailChannel, EmailSettings
from channels.email.threading import reply_token_of
from channels.errors import ReplyRejected
from channels.models import DeliveryUpdate, OutboundReply
from channels.registry import load_adapter_class
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.services.cursors import CursorStore
from channels.services.leases import LeaseManager
from channels.testing import ChannelConformance, FailureKind, InboundCase, KitStore, SentRecord
from channels.testing.attachments import AttachmentBattery
from channels.testing.core import IngestGate, MemoryKitStore
from channels.testing.polling import (
    MemoryCursorStore,
    MemoryLeaseManager,
    PollingBattery,
    PollingHarness,
    PollingKit,
)
from hub.config import ConfigError, load_config
from storage.cursors import RedisCursorStore
from storage.kit import StoreKit
from storage.leases import RedisLeaseManager
from storage.store import Store

SHOP = "ventas@tienda.test"
FIXTURES = Path(__file__).parent / "fixtures"

SMTP_FAILURES: dict[str, str] = {
    "retryable": "451 4.3.0 try again later",
    "rate_limited": "421 4.7.0 too many messages, slow down",
    "permanent": "550 5.1.1 no such user",
    "auth": "535 5.7.8 authentication credentials invalid",
}


def expected_thread(sender: str, root: str) -> str:
    return "e" + hashlib.sha256(f"{sender}\n{root}".encode()).hexdigest()[:32]


def mail(sender: str, subject: str, body: str, message_id: str | None, *,
         name: str = "", headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = SHOP
    msg["Subject"] = subject
    msg["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    if message_id:
        msg["Message-ID"] = message_id
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


def buyer_case(n: int) -> InboundCase:
    text = f"Hola, ¿dónde está mi pedido {n}?"
    message_id = f"<pedido-{n}@buyer.test>"
    return InboundCase(
        name=f"message {n}",
        payload=mail("ana@buyer.test", f"Pedido {n}", text, message_id, name="Ana Pérez"),
        provider_message_id=message_id,
        thread_id=expected_thread("ana@buyer.test", message_id),
        sender_handle="ana@buyer.test", text=text, sender_name="Ana Pérez")


class DovecotProvider:
    """The kit's ``PollingProvider`` for email: publish = an MDA delivering into Dovecot's
    maildir; sends = what aiosmtpd accepted; send failures = the SMTP server's DATA answer."""

    def __init__(self, dovecot: Any, smtp: Any) -> None:
        self.dovecot = dovecot
        self.smtp = smtp

    async def publish(self, case: InboundCase) -> None:
        await self.dovecot.adeliver(case.payload)

    def sent(self) -> list[SentRecord]:
        records = []
        for received in self.smtp.handler.received:
            parsed = email.message_from_bytes(received.content, policy=email.policy.default)
            body = parsed.get_body(("plain",))
            assert body is not None
            text = body.get_content().replace("\r\n", "\n").removesuffix("\n")
            records.append(SentRecord(recipient=received.rcpt_tos[0], text=text,
                                      thread_id=reply_token_of(str(parsed["Message-ID"]))))
        return records

    def fail_next_send(self, kind: FailureKind) -> None:
        self.smtp.handler.refuse_next(SMTP_FAILURES[kind])


def settings_for(dovecot: Any, smtp: Any, **overrides: Any) -> EmailSettings:
    values: dict[str, Any] = dict(
        address=SHOP, imap_host=dovecot.host, imap_port=dovecot.port, imap_security="none",
        imap_username=dovecot.user, imap_password=Secret(dovecot.password, "test"),
        smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none",
        smtp_username=smtp.username, smtp_password=Secret(smtp.password, "test"),
        lease_seconds=1.0)
    values.update(overrides)
    return EmailSettings(**values)


class EmailHarness:
    """The kit's ``PollingHarness`` plus what the attachment battery asks of a harness."""

    def __init__(self, inner: PollingHarness, smtp: Any) -> None:
        self.inner = inner
        self.smtp = smtp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        """Mail has no answer to refuse with: a message is always kept, refused files marked."""
        return await self.inner.deliver(case), ""

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        sends = []
        for received in self.smtp.handler.received:
            parsed = email.message_from_bytes(received.content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            sends.append([(str(part.get_filename()), part.get_content_type(),
                           part.get_payload(decode=True)) for part in parsed.iter_attachments()])
        return sends


class TestEmailChannel(ChannelConformance, PollingBattery, AttachmentBattery):
    def inbound_cases(self) -> list[InboundCase]:
        follow_up = "Y otra cosa: ¿factura?"
        return [
            buyer_case(1),
            InboundCase(
                name="a follow-up referencing the first mail joins its thread",
                payload=mail("ana@buyer.test", "Re: Pedido 1", follow_up, "<f-1@buyer.test>",
                             headers={"In-Reply-To": "<pedido-1@buyer.test>",
                                      "References": "<pedido-1@buyer.test>"}),
                provider_message_id="<f-1@buyer.test>",
                thread_id=expected_thread("ana@buyer.test", "<pedido-1@buyer.test>"),
                sender_handle="ana@buyer.test", text=follow_up),
        ]

    def polling_case(self, n: int) -> InboundCase:
        return buyer_case(n)

    def attachment_case(self, name: str, content_type: str, data: bytes) -> InboundCase:
        text = "Adjunto el archivo."
        message_id = f"<att-{hashlib.sha256(name.encode() + data).hexdigest()[:16]}@buyer.test>"
        msg = email.message_from_bytes(mail("ana@buyer.test", "Archivo", text, message_id),
                                       policy=email.policy.SMTP)
        assert isinstance(msg, EmailMessage)
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return InboundCase(name=f"attachment {name}", payload=msg.as_bytes(),
                           provider_message_id=message_id,
                           thread_id=expected_thread("ana@buyer.test", message_id),
                           sender_handle="ana@buyer.test", text=text)

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit, dovecot: Any, smtp_server: Any,
                      attachment_store: AttachmentStore) -> AsyncIterator[EmailHarness]:
        settings = settings_for(dovecot, smtp_server, max_attachment_bytes=64 * 1024)

        def factory(context: AdapterContext) -> EmailChannel:
            context.attachments = attachment_store
            adapter = EmailChannel("shop", settings, context)
            # The poll fetches anyway after an IDLE wait without news: shorter than the kit's
            # acknowledgement timeout here, so a change notification the server did not send
            # (seen once in a few hundred runs) costs a few seconds, not a failed battery.
            adapter.idle_wait_seconds = 4.0
            return adapter

        async with polling_kit.run(DovecotProvider(dovecot, smtp_server), factory) as harness:
            yield EmailHarness(harness, smtp_server)


class TestEmailChannelOnRedis(TestEmailChannel):
    """The same batteries on the hub's ingest, cursors and leases (real Redis)."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)


# -- email's own behaviour -----------------------------------------------------------------------


class Receipts:
    """A ``DeliveryIndex`` that records what the adapter applied."""

    def __init__(self) -> None:
        self.updates: list[DeliveryUpdate] = []

    async def apply(self, update: DeliveryUpdate) -> bool:
        self.updates.append(update)
        return True


@pytest.fixture
def gate() -> IngestGate:
    return IngestGate(MemoryKitStore())


@pytest.fixture
def receipts() -> Receipts:
    return Receipts()


@pytest.fixture
async def run(gate: IngestGate, receipts: Receipts, dovecot: Any,
              smtp_server: Any) -> AsyncIterator[Any]:
    """Start an adapter (settings overridable) whose context records delivery receipts."""
    leases = MemoryLeaseManager()
    kit = PollingKit(gate, MemoryCursorStore(leases), leases)
    stack: list[Any] = []

    async def start(**overrides: Any) -> PollingHarness:
        settings = settings_for(dovecot, smtp_server, **overrides)

        def factory(context: AdapterContext) -> EmailChannel:
            context.deliveries = receipts
            return EmailChannel("shop", settings, context)

        manager = kit.run(DovecotProvider(dovecot, smtp_server), factory)
        stack.append(manager)
        return await manager.__aenter__()

    yield start
    for manager in reversed(stack):
        await manager.__aexit__(None, None, None)


async def stored(gate: IngestGate, index: int) -> Any:
    message = await gate.store.inbound(gate.results[index].message_id)
    assert message is not None
    return message


async def test_bounce_of_our_reply_marks_it_failed(run: Any, gate: IngestGate,
                                                   receipts: Receipts, smtp_server: Any) -> None:
    harness = await run()
    case = buyer_case(1)
    assert await harness.deliver(case)
    first = await stored(gate, 0)
    reply = OutboundReply(reply_id="r-1", conversation_id="c", channel_type="email",
                          channel_instance="shop", thread_id=first.thread_id,
                          recipient_handle="ana@buyer.test", text="Sale hoy.",
                          in_reply_to=case.provider_message_id)
    our_id = await harness.adapter.send(reply)
    assert reply_token_of(our_id) == first.thread_id
    dsn = (FIXTURES / "dsn_failed.eml").read_bytes().replace(
        b"<ih.r42.abc123@example.com>", our_id.encode())
    await harness.publish(InboundCase(name="dsn", payload=dsn, provider_message_id="dsn",
                                      thread_id="", sender_handle="", text=""))
    await harness.wait_until(lambda: bool(receipts.updates), what="no delivery update")
    [update] = receipts.updates
    assert update.provider_message_id == our_id and update.state == "failed"
    assert update.error is not None and "5.1.1" in update.error
    assert len(gate.results) == 1, "the bounce was ingested as a buyer message"


async def test_auto_reply_is_not_ingested(run: Any, gate: IngestGate) -> None:
    harness = await run()
    vacation = mail("ana@buyer.test", "Fuera de la oficina", "Vuelvo el lunes.",
                    "<ooo-1@buyer.test>", headers={"Auto-Submitted": "auto-replied"})
    await harness.publish(InboundCase(name="ooo", payload=vacation,
                                      provider_message_id="<ooo-1@buyer.test>", thread_id="",
                                      sender_handle="", text=""))
    assert await harness.deliver(buyer_case(2))
    ids = [e.provider_message_id for e in harness.stored()]
    assert ids == ["<pedido-2@buyer.test>"]


async def test_amazon_relay_gets_market_and_order_id(run: Any, gate: IngestGate) -> None:
    harness = await run()
    sender = "wrmqqxtlynjf6kg@marketplace.amazon.es"
    text = "¿Cuándo llega mi pedido?"
    case = InboundCase(
        name="amazon",
        payload=mail(sender, "Consulta del pedido 402-1234567-7654321", text,
                     "<amz-1@marketplace.amazon.es>"),
        provider_message_id="<amz-1@marketplace.amazon.es>",
        thread_id=expected_thread(sender, "<amz-1@marketplace.amazon.es>"),
        sender_handle=sender, text=text)
    assert await harness.deliver(case)
    message = await stored(gate, 0)
    assert message.hints.market == "ES"
    assert message.hints.order_id == "402-1234567-7654321"


async def test_buyer_reply_to_our_message_id_joins_the_thread(
    run: Any, gate: IngestGate, smtp_server: Any, dovecot: Any
) -> None:
    harness = await run()
    case = buyer_case(1)
    assert await harness.deliver(case)
    first = await stored(gate, 0)
    reply = OutboundReply(reply_id="r-1", conversation_id="c", channel_type="email",
                          channel_instance="shop", thread_id=first.thread_id,
                          recipient_handle="ana@buyer.test", text="Sale hoy.",
                          in_reply_to=case.provider_message_id)
    our_id = await harness.adapter.send(reply)
    [sent] = smtp_server.handler.received
    headers = email.message_from_bytes(sent.content, policy=email.policy.default)
    # a long Message-ID is folded onto its own line (RFC 5322 allows FWS before msg-id)
    assert headers["Message-ID"].strip() == our_id
    assert headers["In-Reply-To"].strip() == case.provider_message_id
    assert headers["References"].strip() == case.provider_message_id
    assert headers["Subject"] == "Re: Pedido 1"
    [uid] = await asyncio.to_thread(uids, dovecot)
    assert "\\Answered" in await asyncio.to_thread(dovecot.flags, uid)
    # Outlook style: In-Reply-To our id, no References at all, a new subject
    text = "Gracias, ¿y el número de seguimiento?"
    answer = InboundCase(
        name="buyer reply", payload=mail("ana@buyer.test", "otra pregunta", text,
                                         "<ans-1@buyer.test>",
                                         headers={"In-Reply-To": our_id}),
        provider_message_id="<ans-1@buyer.test>", thread_id=first.thread_id,
        sender_handle="ana@buyer.test", text=text)
    assert await harness.deliver(answer)
    assert gate.results[1].conversation_id == gate.results[0].conversation_id
    assert (await stored(gate, 1)).thread_id == first.thread_id


def uids(dovecot: Any) -> list[int]:
    conn = dovecot.imap()
    try:
        typ, data = conn.uid("SEARCH", "ALL")
        assert typ == "OK"
        return [int(u) for u in data[0].split()]
    finally:
        conn.logout()


async def test_fetch_leaves_seen_unless_mark_seen(run: Any, gate: IngestGate,
                                                  dovecot: Any) -> None:
    harness = await run()
    assert await harness.deliver(buyer_case(1))
    assert await harness.deliver(buyer_case(2))  # a later poll: the first is surely stored
    for uid in await asyncio.to_thread(uids, dovecot):
        assert "\\Seen" not in await asyncio.to_thread(dovecot.flags, uid)
    await harness.stop(harness.adapter)

    marked = await run(mark_seen=True)
    assert await marked.deliver(buyer_case(3))
    assert await marked.deliver(buyer_case(4))
    all_uids = await asyncio.to_thread(uids, dovecot)
    third = all_uids[2]

    async def third_seen() -> bool:
        return "\\Seen" in await asyncio.to_thread(dovecot.flags, third)

    deadline = time.monotonic() + 10
    while not await third_seen():
        assert time.monotonic() < deadline, "mark_seen did not flag the stored message"
        await asyncio.sleep(0.05)
    for uid in all_uids[:2]:
        assert "\\Seen" not in await asyncio.to_thread(dovecot.flags, uid)



async def test_new_mail_wakes_the_idle_poll(run: Any) -> None:
    """The poll waits in IDLE (IDLE_WAIT_SECONDS, far above the kit's 10 s acknowledgement
    timeout): a delivery is stored because the server's EXISTS ends the wait."""
    harness = await run()
    assert await harness.deliver(buyer_case(1))
    adapter = harness.adapter
    assert isinstance(adapter, EmailChannel)
    assert adapter.idle_wait_seconds > harness.ack_timeout
    client = adapter._client
    assert client is not None
    await asyncio.wait_for(client.idling.wait(), 10)
    assert await harness.deliver(buyer_case(2))
    assert adapter._client is client, "the session was replaced instead of woken"
    assert client.idle_commands >= 1


async def test_dovecot_restart_mid_idle_loses_nothing(run: Any, dovecot: Any) -> None:
    harness = await run()
    assert await harness.deliver(buyer_case(1))
    adapter = harness.adapter
    assert isinstance(adapter, EmailChannel) and adapter._client is not None
    await asyncio.wait_for(adapter._client.idling.wait(), 10)
    await asyncio.to_thread(dovecot.restart, hard=True)
    assert await harness.deliver(buyer_case(2))
    stored_events = harness.stored()
    assert [e.provider_message_id for e in stored_events] == [
        "<pedido-1@buyer.test>", "<pedido-2@buyer.test>"]
    assert not any(e.duplicate for e in stored_events)


async def test_uidvalidity_change_refetches_and_dedupes(run: Any, dovecot: Any) -> None:
    harness = await run()
    assert await harness.deliver(buyer_case(1))
    assert await harness.deliver(buyer_case(2))
    await asyncio.to_thread(dovecot.stop_process, hard=True)
    await asyncio.to_thread(dovecot.change_uidvalidity)
    await harness.wait_until(
        lambda: sum(e.duplicate for e in harness.stored()) >= 2, timeout=30,
        what="the mailbox was not refetched after the UIDVALIDITY change")
    assert await harness.deliver(buyer_case(3))
    fresh = [e.provider_message_id for e in harness.stored() if not e.duplicate]
    assert fresh == [f"<pedido-{n}@buyer.test>" for n in (1, 2, 3)]



async def test_unreadable_mail_is_quarantined_and_the_mailbox_moves_on(run: Any) -> None:
    harness = await run()
    garbage = b"no headers here, only words\r\n\r\n"
    await harness.publish(InboundCase(name="garbage", payload=garbage, provider_message_id="x",
                                      thread_id="", sender_handle="", text=""))
    assert await harness.deliver(buyer_case(1))
    [(raw, reason)] = harness.quarantined
    assert raw == garbage and "IMAP UID" in reason
    assert [e.provider_message_id for e in harness.stored()] == ["<pedido-1@buyer.test>"]



async def test_replies_amazon_would_block_or_that_inject_headers_are_never_sent(
    run: Any, smtp_server: Any
) -> None:
    harness = await run()

    def reply(recipient: str, text: str) -> OutboundReply:
        return OutboundReply(reply_id=f"r-{time.time_ns()}", conversation_id="c",
                             channel_type="email", channel_instance="shop",
                             thread_id="e" + "0" * 32, recipient_handle=recipient, text=text)

    alias = "wrmqqxtlynjf6kg@marketplace.amazon.es"
    with pytest.raises(ReplyRejected, match="links"):
        await harness.adapter.send(reply(alias, "Siga su envío en https://track.example/1"))
    with pytest.raises(ReplyRejected):
        await harness.adapter.send(reply("ana@buyer.test\r\nBcc: x@evil.test", "hola"))
    assert smtp_server.handler.received == []
    assert await harness.adapter.send(reply(alias, "Su pedido sale hoy."))
    [sent] = smtp_server.handler.received
    assert sent.rcpt_tos == [alias]
    parsed = email.message_from_bytes(sent.content, policy=email.policy.default)
    assert parsed["From"] == SHOP and not parsed.get_body(("html",))


# -- config ---------------------------------------------------------------------------------


def test_email_is_a_builtin_type() -> None:
    assert load_adapter_class("email") is EmailChannel


def email_toml(tmp_path: Path, settings: str) -> Path:
    path = tmp_path / "inboxhub.toml"
    path.write_text(f"""
[hub]
data_dir = "{tmp_path / 'data'}"

[[channels]]
name = "mail"
type = "email"
[channels.settings]
{settings}
""")
    return path


BASE = """address = "ventas@tienda.test"
imap_host = "imap.tienda.test"
imap_username = "ventas"
imap_password = "env:IH_TEST_IMAP"
smtp_host = "smtp.tienda.test"
smtp_security = "starttls"
"""


def test_config_requires_explicit_imap_security(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IH_TEST_IMAP", "imap-secret")
    with pytest.raises(ConfigError, match="imap_security"):
        load_config(email_toml(tmp_path, BASE))
    loaded = load_config(email_toml(tmp_path, BASE + 'imap_security = "tls"\n'))
    settings = loaded.channel_settings["mail"]
    assert isinstance(settings, EmailSettings)
    assert settings.mailbox == "INBOX" and settings.mark_seen is False
    with pytest.raises(ConfigError, match="imap_sekurity"):
        load_config(email_toml(tmp_path, BASE + 'imap_sekurity = "tls"\n'))


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[3] / "config" / "example-email.toml"
    for name in ("INBOXHUB_IMAP_PASSWORD", "INBOXHUB_SMTP_PASSWORD", "INBOXHUB_ADMIN_TOKEN"):
        monkeypatch.setenv(name, "x" * 40)
    loaded = load_config(example)
    assert any(isinstance(s, EmailSettings) for s in loaded.channel_settings.values())



async def test_html_replies_carry_an_alternative_except_to_amazon(
    run: Any, smtp_server: Any
) -> None:
    harness = await run(html_replies=True)
    assert harness.adapter.capabilities.html

    def reply(recipient: str) -> OutboundReply:
        return OutboundReply(reply_id=f"r-{time.time_ns()}", conversation_id="c",
                             channel_type="email", channel_instance="shop",
                             thread_id="e" + "1" * 32, recipient_handle=recipient,
                             text="Hola <Ana>,\n\nsale hoy.")

    await harness.adapter.send(reply("ana@buyer.test"))
    await harness.adapter.send(reply("wrmqqxtlynjf6kg@marketplace.amazon.es"))
    to_buyer, to_amazon = (email.message_from_bytes(r.content, policy=email.policy.default)
                           for r in smtp_server.handler.received)
    assert isinstance(to_buyer, EmailMessage) and isinstance(to_amazon, EmailMessage)
    html_part = to_buyer.get_body(("html",))
    assert html_part is not None and "Hola &lt;Ana&gt;," in html_part.get_content()
    assert to_amazon.get_content_type() == "text/plain"
