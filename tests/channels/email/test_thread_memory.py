"""Threading that needs memory (``channels/email/conversations.py``), on real Dovecot, aiosmtpd
and the hub's Redis store: what one process saw, another process or a restart decides alike."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.base import AdapterContext
from channels.email.adapter import EmailChannel
from channels.email.conversations import EmailThreads, thread_root_id
from channels.email.mime import ParsedEmail, parse_email
from channels.models import OutboundReply
from channels.services.threads import MemoryThreads
from channels.testing import InboundCase
from channels.testing.core import IngestGate
from channels.testing.polling import (
    MemoryCursorStore,
    MemoryLeaseManager,
    PollingHarness,
    PollingKit,
)
from storage.kit import StoreKit
from storage.store import Store
from storage.threads import RedisThreads
from tests.channels.email.test_conformance import DovecotProvider, mail, settings_for

ANA = "ana@buyer.test"
LIMITS: dict[str, Any] = {"max_attachment_bytes": 1024, "max_attachments": 1}


@pytest.fixture
def gate(store: Store) -> IngestGate:
    return IngestGate(StoreKit(store))


@pytest.fixture
async def run(gate: IngestGate, store: Store, dovecot: Any,
              smtp_server: Any) -> AsyncIterator[Any]:
    """Start adapters that share the store's thread memory, as two hub processes would."""
    leases = MemoryLeaseManager()
    kit = PollingKit(gate, MemoryCursorStore(leases), leases)
    running: list[Any] = []

    async def start(**overrides: Any) -> PollingHarness:
        settings = settings_for(dovecot, smtp_server, **overrides)

        def factory(context: AdapterContext) -> EmailChannel:
            context.threads = RedisThreads(store)
            return EmailChannel("shop", settings, context)

        manager = kit.run(DovecotProvider(dovecot, smtp_server), factory)
        running.append(manager)
        return await manager.__aenter__()

    async def stop(harness: PollingHarness) -> None:
        await harness.stop(harness.adapter)

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for manager in reversed(running):
        await manager.__aexit__(None, None, None)


def case(raw: bytes, message_id: str, sender: str = ANA) -> InboundCase:
    return InboundCase(name=message_id, payload=raw, provider_message_id=message_id,
                       thread_id="", sender_handle=sender, text="")


async def deliver(harness: PollingHarness, gate: IngestGate, raw: bytes, message_id: str,
                  sender: str = ANA) -> tuple[str, str]:
    """Deliver one mail; its (thread id, conversation id) once stored."""
    before = len(gate.results)
    await harness.publish(case(raw, message_id, sender))
    await harness.wait_until(lambda: len(gate.results) > before, what=f"{message_id} not stored")
    result = gate.results[-1]
    message = await gate.store.inbound(result.message_id)
    assert message is not None and message.provider_message_id == message_id
    return message.thread_id, result.conversation_id


def reply_to(thread_id: str, in_reply_to: str | None, text: str = "Sale hoy.") -> OutboundReply:
    return OutboundReply(reply_id=f"r-{thread_id[-6:]}-{in_reply_to}", conversation_id="c",
                         channel_type="email", channel_instance="shop", thread_id=thread_id,
                         recipient_handle=ANA, text=text, in_reply_to=in_reply_to)


def last_sent(smtp: Any) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(smtp.handler.received[-1].content,
                                      policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


async def test_outlook_reply_to_the_buyers_second_mail_joins_the_first_thread(
    run: Any, gate: IngestGate
) -> None:
    harness = await run()
    first, conv = await deliver(harness, gate, mail(ANA, "Pedido 5", "¿Dónde está?",
                                                    "<p5@buyer.test>"), "<p5@buyer.test>")
    second, conv2 = await deliver(harness, gate, mail(
        ANA, "Re: Pedido 5", "¿Y la factura?", "<p5b@buyer.test>",
        headers={"In-Reply-To": "<p5@buyer.test>", "References": "<p5@buyer.test>"}),
        "<p5b@buyer.test>")
    assert (second, conv2) == (first, conv)
    # Outlook: In-Reply-To only, naming the buyer's second mail, a subject of its own
    third, conv3 = await deliver(harness, gate, mail(
        ANA, "factura", "La necesito a nombre de la empresa.", "<p5c@buyer.test>",
        headers={"In-Reply-To": "<p5b@buyer.test>"}), "<p5c@buyer.test>")
    assert (third, conv3) == (first, conv)
    # the same headers from another sender open their own conversation
    other, conv4 = await deliver(harness, gate, mail(
        "eve@other.test", "factura", "yo también", "<x1@other.test>",
        headers={"In-Reply-To": "<p5b@buyer.test>"}), "<x1@other.test>", "eve@other.test")
    assert other != first and conv4 != conv


async def test_our_token_counts_only_from_the_threads_buyer(
    run: Any, gate: IngestGate
) -> None:
    harness = await run()
    thread, conv = await deliver(harness, gate, mail(ANA, "Pedido 6", "hola", "<p6@buyer.test>"),
                                 "<p6@buyer.test>")
    ours = await harness.adapter.send(reply_to(thread, "<p6@buyer.test>"))
    forwarded, conv2 = await deliver(harness, gate, mail(
        "eve@other.test", "Fwd: Pedido 6", "mira esto", "<fw@other.test>",
        headers={"In-Reply-To": ours, "References": ours}), "<fw@other.test>", "eve@other.test")
    assert forwarded != thread and conv2 != conv
    answer, conv3 = await deliver(harness, gate, mail(
        ANA, "Re: Pedido 6", "gracias", "<p6b@buyer.test>", headers={"In-Reply-To": ours}),
        "<p6b@buyer.test>")
    assert (answer, conv3) == (thread, conv)


async def test_subject_and_sender_thread_only_within_the_time_limit(
    run: Any, gate: IngestGate
) -> None:
    harness = await run(subject_thread_days=7)
    thread, conv = await deliver(harness, gate, mail(ANA, "Pedido 7", "hola", "<p7@buyer.test>"),
                                 "<p7@buyer.test>")
    # a webmail that sends no In-Reply-To or References at all, a localized prefix
    again, conv2 = await deliver(harness, gate, mail(ANA, "RV: [Important] pedido 7",
                                                     "¿hay novedades?", "<p7b@buyer.test>"),
                                 "<p7b@buyer.test>")
    assert (again, conv2) == (thread, conv)
    # same subject, another buyer: their own conversation
    other, _ = await deliver(harness, gate, mail("eve@other.test", "Pedido 7", "hola",
                                                 "<e7@other.test>"),
                             "<e7@other.test>", "eve@other.test")
    assert other != thread
    # a subject that is only a prefix never matches anything
    bare1, _ = await deliver(harness, gate, mail(ANA, "Re:", "uno", "<b1@buyer.test>"),
                             "<b1@buyer.test>")
    bare2, _ = await deliver(harness, gate, mail(ANA, "RE: ", "dos", "<b2@buyer.test>"),
                             "<b2@buyer.test>")
    assert len({bare1, bare2, thread}) == 3


async def test_subject_fallback_expires() -> None:
    """The time limit, on the decision itself (memory with a clock the test sets)."""
    memory = MemoryThreads()
    threads = EmailThreads("shop", memory, subject_window_seconds=3600)
    def dated(subject: str, message_id: str, date: str) -> ParsedEmail:
        raw = mail(ANA, subject, "hola", message_id).replace(
            b"Tue, 01 Dec 2026 10:00:00 +0000", date.encode())
        return parse_email(raw, **LIMITS)

    first = dated("Pedido 8", "<p8@buyer.test>", "Tue, 01 Dec 2026 10:00:00 +0000")
    later = dated("Re: Pedido 8", "<p8b@buyer.test>", "Tue, 01 Dec 2026 10:50:00 +0000")
    late = dated("Re: Pedido 8", "<p8c@buyer.test>", "Tue, 01 Dec 2026 11:02:00 +0000")
    now = 1_800_000_000.0  # read long after (a backlog): the mails' own dates decide
    thread = await threads.thread_for(first, now=now)
    await threads.remember(first, thread, uidvalidity=1, uid=1, now=now)
    within = await threads.thread_for(later, now=now)
    after = await threads.thread_for(late, now=now)
    assert within == thread
    assert after == thread_root_id(late) != thread


async def test_new_subject_after_resolve_opens_a_new_conversation(
    run: Any, gate: IngestGate, store: Store
) -> None:
    harness = await run()
    thread, conv = await deliver(harness, gate, mail(ANA, "Pedido 9", "hola", "<p9@buyer.test>"),
                                 "<p9@buyer.test>")
    ours = await harness.adapter.send(reply_to(thread, "<p9@buyer.test>"))
    assert await store.update_conversation(conv, {"status": "resolved"})
    # "reply" on our old mail, same subject: the resolved conversation reopens
    same, conv2 = await deliver(harness, gate, mail(
        ANA, "Re: Pedido 9", "no llegó", "<p9b@buyer.test>", headers={"In-Reply-To": ours}),
        "<p9b@buyer.test>")
    assert (same, conv2) == (thread, conv)
    reopened = await store.get_conversation(conv)
    assert reopened is not None and reopened.status == "new"
    # resolved again; now the buyer uses the old mail to ask something new
    assert await store.update_conversation(conv, {"status": "resolved"})
    new, conv3 = await deliver(harness, gate, mail(
        ANA, "Devolución de otro producto", "quiero devolver", "<p9c@buyer.test>",
        headers={"In-Reply-To": ours, "References": f"<p9@buyer.test> {ours}"}),
        "<p9c@buyer.test>")
    assert new != thread and conv3 != conv
    # while a conversation is open a changed subject stays in it
    open_thread, open_conv = await deliver(harness, gate, mail(
        ANA, "otra cosa", "y otra", "<p9d@buyer.test>",
        headers={"In-Reply-To": "<p9c@buyer.test>"}), "<p9d@buyer.test>")
    assert (open_thread, open_conv) == (new, conv3)


async def test_reply_after_a_restart_keeps_subject_and_references(
    run: Any, gate: IngestGate, smtp_server: Any
) -> None:
    first_process = await run()
    thread, _ = await deliver(first_process, gate, mail(
        ANA, "Pedido 10", "hola", "<p10b@buyer.test>",
        headers={"In-Reply-To": "<p10@buyer.test>", "References": "<p10@buyer.test>"}),
        "<p10b@buyer.test>")
    await run.stop(first_process)
    second_process = await run()  # knows nothing in memory: only the store's memos
    ours = await second_process.adapter.send(reply_to(thread, "<p10b@buyer.test>"))
    sent = last_sent(smtp_server)
    assert sent["Subject"] == "Re: Pedido 10"
    assert sent["In-Reply-To"].strip() == "<p10b@buyer.test>"
    assert sent["References"].split() == ["<p10@buyer.test>", "<p10b@buyer.test>"]
    assert sent["Message-ID"].strip() == ours
    # a reply naming no mail (the agent wrote first in the thread) still gets the subject
    await second_process.adapter.send(reply_to(thread, None, "¿Algo más?"))
    assert last_sent(smtp_server)["Subject"] == "Re: Pedido 10"


class CountingThreads(RedisThreads):
    """The store's thread memory, counting the round trips the decisions make."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.calls: list[str] = []

    async def recall(self, instance: str, key: str) -> bytes | None:
        self.calls.append("recall")
        return await super().recall(instance, key)

    async def recall_many(self, instance: str, keys: Any) -> list[bytes | None]:
        self.calls.append("recall_many")
        return await super().recall_many(instance, keys)

    async def remember_many(self, instance: str, writes: Any) -> None:
        self.calls.append("remember_many")
        await super().remember_many(instance, writes)


def backlog() -> list[ParsedEmail]:
    """Mails whose threads depend on each other: replies (by In-Reply-To only, as Outlook
    writes them) to earlier mails of the same batch, a subject-only follow-up, strangers."""
    raws = [
        mail(ANA, "Pedido 1", "hola", "<b1@buyer.test>"),
        mail(ANA, "Re: Pedido 1", "otra vez", "<b2@buyer.test>",
             headers={"In-Reply-To": "<b1@buyer.test>"}),
        mail(ANA, "RE: Pedido 1", "y otra", "<b3@buyer.test>",
             headers={"In-Reply-To": "<b2@buyer.test>"}),
        mail(ANA, "Pedido 2", "nuevo", "<b4@buyer.test>"),
        mail(ANA, "Re: Pedido 2", "sin cabeceras", None),
        mail("eve@other.test", "Re: Pedido 1", "not Ana", "<e1@other.test>",
             headers={"In-Reply-To": "<b1@buyer.test>"}),
    ]
    return [parse_email(raw, **LIMITS) for raw in raws]


async def decide(threads: EmailThreads, mails: list[ParsedEmail]) -> list[str]:
    decided = []
    for n, parsed in enumerate(mails, 1):
        thread = await threads.thread_for(parsed, now=1_800_000_000.0)
        await threads.remember(parsed, thread, uidvalidity=1, uid=n, now=1_800_000_000.0)
        decided.append(thread)
    return decided


async def test_a_batch_threads_exactly_as_mail_by_mail_in_three_round_trips(
        store: Store) -> None:
    one_by_one = await decide(EmailThreads("one", RedisThreads(store),
                                           subject_window_seconds=86400), backlog())
    counting = CountingThreads(store)
    threads = EmailThreads("batch", counting, subject_window_seconds=86400)
    mails = backlog()
    async with threads.batch(mails):
        batched = await decide(threads, mails)
    assert batched == one_by_one
    assert batched[0] == batched[1] == batched[2] != batched[3] == batched[4]
    assert batched[5] not in batched[:5]  # another sender never joins Ana's thread
    # nothing known yet: one read finds nothing to follow, then one write
    assert counting.calls == ["recall_many", "remember_many"]

    # The memos reached Redis: the next batch (another process) decides from them, reading
    # the parent mails' memos, then the threads they name, then writing once.
    follow_ups = [parse_email(mail(ANA, "Re: Pedido 1", "¿y?", "<b5@buyer.test>",
                                   headers={"In-Reply-To": "<b3@buyer.test>"}), **LIMITS),
                  parse_email(mail(ANA, "Re: Pedido 2", "¿y el 2?", "<b6@buyer.test>"),
                              **LIMITS)]
    counting.calls.clear()
    async with threads.batch(follow_ups):
        later = await decide(threads, follow_ups)
    assert later == [batched[0], batched[3]]
    assert counting.calls == ["recall_many", "recall_many", "remember_many"]


async def test_a_batch_that_fails_writes_no_memos(store: Store) -> None:
    threads = EmailThreads("failed", RedisThreads(store), subject_window_seconds=86400)
    mails = backlog()
    with pytest.raises(RuntimeError, match="storing failed"):
        async with threads.batch(mails):
            await decide(threads, mails)
            raise RuntimeError("storing failed")
    assert await threads.parent("<b1@buyer.test>") is None  # nothing reached Redis
    # and the memory is the store's again, not the batch's buffer
    assert isinstance(threads.memory, RedisThreads)
