"""Erasure of a buyer (GDPR art. 17, LGPD art. 18): ``DELETE /api/v1/contacts/{id}``.

Every conversation of the contact is first released through the routing engine (the agent's
capacity is freed and handed the next waiting conversation, as on resolve), then detached and
deleted with all it owns (``storage.lifecycle`` lists it), then the contact itself; quarantined
bodies that name the buyer go too. The audit entry records who erased how much, and nothing
about whom. Safe to run again if it was interrupted: it finishes what is left.

A message from the buyer that arrives while the erasure runs is a new act: it starts a new
conversation, which a second erasure removes.
"""

from __future__ import annotations

import msgspec

from routing.engine import RoutingEngine
from storage import lifecycle
from storage.store import Store


class UnknownContact(LookupError):
    """No contact has that id (never had, or already erased)."""


class ErasureReport(msgspec.Struct, frozen=True):
    conversations: int
    messages: int
    quarantined: int
    audit_id: str
    files: int = 0  # attachment files deleted (files other buyers' messages name are kept)


async def erase_contact(store: Store, engine: RoutingEngine, contact_id: str, *,
                        actor: str) -> ErasureReport:
    contact = await lifecycle.get_contact(store, contact_id)
    if contact is None:
        raise UnknownContact(contact_id)
    k = store.partition_keys()[contact.partition]
    conversation_ids = (await lifecycle.conversations_of(store, k, [contact.id]))[contact.id]
    prints = []
    for cid in conversation_ids:
        fp = await lifecycle.footprint(store, cid)
        if fp is None:
            continue
        await engine.release(cid, "erased")
        await lifecycle.detach(store, fp, only_resolved_before=None)
        prints.append(fp)
    counts = await lifecycle.delete_conversations(store, prints)
    needles = [contact.handle, contact.id, *conversation_ids,
               *(m for fp in prints for m in fp.message_ids),
               *(p for fp in prints for p in fp.provider_ids)]
    counts.quarantined = await lifecycle.remove_quarantined(store, contact, needles)
    counts.keys += await lifecycle.delete_contact(store, contact)
    audit_id = await lifecycle.write_audit(store, "erase_contact", actor, counts)
    return ErasureReport(conversations=counts.conversations, messages=counts.messages,
                         quarantined=counts.quarantined, audit_id=audit_id,
                         files=counts.files)
