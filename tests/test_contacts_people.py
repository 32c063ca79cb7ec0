"""The person layer on real Redis (storage/people.py, storage/lua/people.lua): automatic linking
by email, phone and marketplace buyer id, manual merge and unmerge, concurrent linkers, and
what erasure leaves of a person."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from channels.models import ChannelHints, InboundMessage
from hub.erasure import erase_contact
from routing.classify.skill import SkillClassifier
from routing.config import RoutingConfig
from routing.engine import RoutingEngine
from storage import lifecycle
from storage import people as people_mod
from storage.people import Alone, NotLinked, People, SamePerson, UnknownPerson
from storage.records import Conversation
from storage.store import Store
from tests.test_erasure import dump_everything

_n = itertools.count()


async def said(store: Store, people: People, channel_type: str, instance: str, handle: str,
               *, thread: str | None = None, no_reply: bool = False,
               text: str = "hello") -> Conversation:
    """A buyer's message stored and linked as the router links it."""
    n = next(_n)
    message = InboundMessage(
        channel_type=channel_type, channel_instance=instance, provider_message_id=f"m{n}",
        thread_id=thread or f"t{n}", sender_handle=handle, text=text,
        hints=ChannelHints(replies_disabled="no-reply address" if no_reply else None))
    stored = await store.ingest(message)
    conversation = await store.get_conversation(stored.conversation_id)
    assert conversation is not None
    loaded = await store.load_inbound(stored.message_id)
    await people.link_conversation(conversation, loaded)
    return conversation


async def person_of(people: People, conversation: Conversation) -> str:
    pid = await people.person_of_contact(conversation.contact_id)
    assert pid is not None
    return pid


async def history(people: People, pid: str) -> list[str]:
    return [c.id for c in (await people.page(pid, limit=100)).conversations]


@pytest.fixture
def people(store: Store) -> People:
    return People(store)


async def test_email_links_contacts_across_instances_and_partitions(
        store: Store, people: People) -> None:
    a = await said(store, people, "email", "support", "Ana@Example.com")
    b = await said(store, people, "email", "sales", "ana@example.com")
    c = await said(store, people, "email", "support", "Ana@Example.com")
    other = await said(store, people, "email", "support", "bob@example.com")
    pid = await person_of(people, a)
    assert await person_of(people, b) == pid == await person_of(people, c)
    assert await person_of(people, other) != pid
    person = await people.get(pid)
    assert {x.id for x in person.contacts} == {a.contact_id, b.contact_id, c.contact_id}
    assert [(i.kind, i.value) for i in person.identifiers] == [("email", "ana@example.com")]
    assert set(await history(people, pid)) == {a.id, b.id, c.id}


async def test_a_typed_address_links_nothing(store: Store, people: People) -> None:
    """Only the sender identity links: a buyer writing someone's address is not them."""
    a = await said(store, people, "email", "support", "ana@example.com")
    b = await said(store, people, "whatsapp", "wa", "5511987654321",
                   text="my email is ana@example.com")
    assert await person_of(people, a) != await person_of(people, b)


async def test_phone_in_different_formats_is_one_person(store: Store, people: People) -> None:
    wa = await said(store, people, "whatsapp", "wa-br", "5511987654321")
    sms = await said(store, people, "twilio", "sms-br", "+55 11 98765-4321")
    tw_wa = await said(store, people, "twilio", "sms-br", "whatsapp:+5511987654321")
    pid = await person_of(people, wa)
    assert await person_of(people, sms) == pid == await person_of(people, tw_wa)
    person = await people.get(pid)
    assert [(i.kind, i.value) for i in person.identifiers] == [("phone", "+5511987654321")]
    assert {c.channel for c in person.contacts} == {"whatsapp", "twilio"}


async def test_buyer_ids_link_per_marketplace_only(store: Store, people: People) -> None:
    ml_ar = await said(store, people, "mercadolibre", "ml-ar", "123")
    ml_br = await said(store, people, "mercadolibre", "ml-br", "123")
    shopee = await said(store, people, "shopee", "shopee-sg", "123")
    pid = await person_of(people, ml_ar)
    assert await person_of(people, ml_br) == pid
    assert await person_of(people, shopee) != pid
    assert [(i.kind, i.value) for i in (await people.get(pid)).identifiers] == [
        ("buyer", "mercadolibre:123")]


async def test_no_reply_senders_stay_apart(store: Store, people: People) -> None:
    """One no-reply address speaks for many buyers: its contacts (one per partition) are never
    linked into one person, and it carries no identifier."""
    convs = [await said(store, people, "email", "support", "no-reply@shop.example",
                        thread=f"nr-{i}", no_reply=True) for i in range(6)]
    contacts = {c.contact_id for c in convs}
    assert len(contacts) == 2  # crc32 of these threads lands in both partitions
    persons = {await person_of(people, c) for c in convs}
    assert len(persons) == len(contacts)
    for pid in persons:
        assert (await people.get(pid)).identifiers == []


async def test_linking_is_idempotent_and_history_is_newest_first(
        store: Store, people: People) -> None:
    first = await said(store, people, "email", "support", "ana@example.com", thread="x")
    second = await said(store, people, "email", "support", "ana@example.com", thread="y")
    again = await said(store, people, "email", "support", "ana@example.com", thread="x")
    assert again.id == first.id
    pid = await person_of(people, first)
    for _ in range(3):  # the router may link one message again (a reclaimed entry)
        assert await people.link_conversation(first) == pid
    assert await history(people, pid) == [first.id, second.id]  # x wrote last


async def test_concurrent_linkers_make_one_person(store: Store, people: People) -> None:
    convs = []
    for instance in ("support", "sales", "billing", "returns"):
        message = InboundMessage(
            channel_type="email", channel_instance=instance, provider_message_id=instance,
            thread_id=instance, sender_handle="ana@example.com", text="hi")
        stored = await store.ingest(message)
        conversation = await store.get_conversation(stored.conversation_id)
        assert conversation is not None
        convs.append(conversation)
    # Two hub processes' routers: each its own People (and client calls in flight at once).
    others = [People(store), People(store)]
    pids = await asyncio.gather(*(others[i % 2].link_conversation(c)
                                  for i, c in enumerate(convs)))
    assert len(set(pids)) == 1
    person = await people.get(pids[0])
    assert len(person.contacts) == 4
    assert len(await store.redis.hkeys(people_mod.CONTACT_PERSON)) == 4


async def test_merge_and_unmerge(store: Store, people: People) -> None:
    mail = await said(store, people, "email", "support", "ana@example.com")
    mail2 = await said(store, people, "email", "support", "ana@example.com")
    phone = await said(store, people, "whatsapp", "wa", "5511987654321")
    p_mail, p_phone = await person_of(people, mail), await person_of(people, phone)
    assert p_mail != p_phone

    survivor = await people.merge(p_mail, p_phone, by="sam")
    assert survivor == p_mail
    merged = await people.get(p_phone)  # the merged id names the survivor
    assert merged.id == p_mail
    assert {c.id for c in merged.contacts} == {mail.contact_id, mail2.contact_id,
                                               phone.contact_id}
    assert [(e.action, e.by, e.person) for e in merged.history] == [("merge", "sam", p_phone)]
    assert set(await history(people, p_phone)) == {mail.id, mail2.id, phone.id}
    with pytest.raises(SamePerson):
        await people.merge(p_mail, p_phone, by="sam")
    with pytest.raises(SamePerson):
        await people.merge(p_mail, p_mail, by="sam")
    with pytest.raises(UnknownPerson):
        await people.merge(p_mail, "pe.00000000000000000000000000", by="sam")

    # New phone messages join the merged person.
    later = await said(store, people, "twilio", "sms", "+5511987654321")
    assert await person_of(people, later) == p_mail

    split = await people.unmerge(mail.contact_id, by="lea")
    assert split != p_mail
    alone = await people.get(split)
    # The same sender's contact in the other partition goes with it, and the address too.
    assert {c.id for c in alone.contacts} == {mail.contact_id, mail2.contact_id}
    assert [(i.kind, i.value) for i in alone.identifiers] == [("email", "ana@example.com")]
    assert alone.split_from == p_mail
    assert [(e.action, e.by, e.person) for e in alone.history] == [
        ("split_from", "lea", p_mail)]
    rest = await people.get(p_mail)
    assert {c.id for c in rest.contacts} == {phone.contact_id, later.contact_id}
    assert [e.action for e in rest.history] == ["merge", "unmerge"]
    assert set(await history(people, split)) == {mail.id, mail2.id}
    assert set(await history(people, p_mail)) == {phone.id, later.id}

    # The split stays: the sender's next messages follow it, nothing re-merges.
    again = await said(store, people, "email", "support", "ana@example.com")
    other_box = await said(store, people, "email", "sales", "ana@example.com")
    phone_again = await said(store, people, "whatsapp", "wa", "5511987654321")
    assert await person_of(people, again) == split
    assert await person_of(people, other_box) == split
    assert await person_of(people, phone_again) == p_mail

    # The same sender in two partitions is one sender: nothing to split it from.
    solo = await said(store, people, "email", "support", "zoe@example.com")
    solo2 = await said(store, people, "email", "support", "zoe@example.com")
    assert await person_of(people, solo) == await person_of(people, solo2)
    with pytest.raises(Alone):
        await people.unmerge(solo.contact_id, by="lea")
    with pytest.raises(NotLinked):
        await people.unmerge("0.00ff00ff", by="lea")


async def test_erasure_removes_the_contacts_links_and_identifiers(
        store: Store, people: People, redis: Any) -> None:
    engine = RoutingEngine(store, RoutingConfig(), identifier=None,
                           skills=SkillClassifier.default())
    mail = await said(store, people, "email", "support", "ana@example.com")
    phone = await said(store, people, "whatsapp", "wa", "5511987654321")
    pid = await people.merge(await person_of(people, mail), await person_of(people, phone),
                             by="sam")
    await erase_contact(store, engine, phone.contact_id, actor="admin")
    person = await people.get(pid)
    assert [c.id for c in person.contacts] == [mail.contact_id]
    assert [(i.kind, i.value) for i in person.identifiers] == [("email", "ana@example.com")]
    assert await history(people, pid) == [mail.id]
    assert await people.person_of_contact(phone.contact_id) is None
    # Nothing of the erased buyer's number or contact is left anywhere in the database.
    needles = [b"5511987654321", phone.contact_id.encode(), phone.id.encode()]
    assert [(k, v) for k, v in await dump_everything(redis)
            for n in needles if n in k + b" " + v] == []

    # Erasing the last contact deletes the person, with the tombstone of the one merged in.
    await erase_contact(store, engine, mail.contact_id, actor="admin")
    with pytest.raises(UnknownPerson):
        await people.get(pid)
    assert [k async for k in redis.scan_iter(match=b"ih:{pp}:*")] == []


async def test_paging_and_pruning(store: Store, people: People) -> None:
    convs = [await said(store, people, "email", "support", "ana@example.com")
             for _ in range(7)]
    pid = await person_of(people, convs[0])
    seen: list[str] = []
    page = await people.page(pid, limit=3)
    seen += [c.id for c in page.conversations]
    while page.next is not None:
        page = await people.page(pid, limit=3, after=page.next)
        seen += [c.id for c in page.conversations]
    assert seen == [c.id for c in reversed(convs)]
    # Scoped: only the visible ones, still in order, across pages.
    keep = {convs[1].id, convs[5].id}

    async def visible(batch: Any) -> set[str]:
        return {c.id for c in batch if c.id in keep}

    page = await people.page(pid, limit=1, visible=visible)
    assert [c.id for c in page.conversations] == [convs[5].id]
    assert page.next is not None
    page = await people.page(pid, limit=1, after=page.next, visible=visible)
    assert [c.id for c in page.conversations] == [convs[1].id]
    # A conversation deleted behind the person's back (retention) leaves on the next read.
    k = store.keys_for(convs[3].id)
    assert k is not None
    await store.redis.delete(k.conversation(convs[3].id))
    assert convs[3].id not in await history(people, pid)
    assert await store.redis.zscore(people_mod.person_key(pid, ":convs"), convs[3].id) is None


async def test_retention_takes_deleted_conversations_out_of_the_history(
        store: Store, people: People) -> None:
    old = await said(store, people, "email", "support", "ana@example.com", thread="old")
    new = await said(store, people, "email", "support", "ana@example.com", thread="new")
    pid = await person_of(people, old)
    assert await store.update_conversation(old.id, {"status": "resolved", "updated_at": "1"})
    k = store.keys_for(old.id)
    assert k is not None
    await store.redis.zadd(k.conversations, {old.id: 1})
    assert await lifecycle.purge_expired(store, time.time(), retention_seconds=3600) == 1
    assert await history(people, pid) == [new.id]
    for key in (people_mod.person_key(pid, ":convs"),
                people_mod.contact_key(old.contact_id, ":convs")):
        assert await store.redis.zscore(key, old.id) is None
