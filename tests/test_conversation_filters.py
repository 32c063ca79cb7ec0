"""List filters (unassigned, tag, combined with the existing ones) and tags, by role and scope,
against the running hub; paging with tag filters through every plan of the list script on the
store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels.models import InboundMessage
from storage.store import ConversationFilter, Position, Store
from storage.tags import MAX_TAGS, TooManyTags, change_tags, normalise_tag
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import running_hub
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, Hub, routing_config


async def ids(hub: Hub, query: str, token: str = SUPERVISOR_TOKEN) -> set[str]:
    status, body = await hub.call("GET", f"/api/v1/conversations?{query}", token)
    assert status == 200, (query, body)
    return {c["id"] for c in body["conversations"]}


async def tag(hub: Hub, cid: str, token: str, **change: Any) -> tuple[int, Any]:
    return await hub.call("POST", f"/api/v1/conversations/{cid}/tags", token, json=change)


async def test_filters_and_tags_by_role_and_scope(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        c = await hub.seed()  # mine, pool (es, queued), theirs (bruno), elsewhere (pt), resolved

        # -- unassigned, alone and with the existing filters ----------------------------------
        assert await ids(hub, "unassigned=true") == {c["pool"], c["elsewhere"]}
        assert await ids(hub, "unassigned=true", AGENT_TOKEN) == {c["pool"]}
        assert await ids(hub, "unassigned=true", BRUNO_TOKEN) == {c["elsewhere"]}
        assert await ids(hub, "unassigned=false") == set(c.values())
        assert await ids(hub, "unassigned=true&language=pt") == {c["elsewhere"]}
        assert await ids(hub, "unassigned=true&queue=es") == {c["pool"]}
        assert await ids(hub, "unassigned=true&status=queued,resolved") == {
            c["pool"], c["elsewhere"]}
        assert await ids(hub, "unassigned=true&status=assigned") == set()
        assert await ids(hub, "unassigned=true&mine=true", AGENT_TOKEN) == set()
        assert await ids(hub, "unassigned=true&assignee=bruno") == set()
        assert await ids(hub, "mine=true&status=assigned", AGENT_TOKEN) == {c["mine"]}
        assert await ids(hub, "channel=api&market=ES,BR&status=assigned") <= {
            c["mine"], c["theirs"]}

        # -- tags: normalised, shown on the conversation, scoped like any action -------------
        status, body = await tag(hub, c["mine"], AGENT_TOKEN,
                                 add=["  Urgent ", "REFUND  Request", "urgent", "Devolución"])
        assert status == 200, body
        assert body == {"conversation_id": c["mine"],
                        "tags": ["urgent", "refund request", "devolución"]}
        assert (await hub.conv(c["mine"]))["tags"] == ["urgent", "refund request", "devolución"]
        status, _ = await tag(hub, c["pool"], AGENT_TOKEN, add=["urgent"])
        assert status == 200  # waiting in a queue she serves: in scope
        for cid in (c["theirs"], c["elsewhere"], c["resolved"]):
            status, body = await tag(hub, cid, AGENT_TOKEN, add=["urgent"])
            assert status == 403 and body["error"]["code"] == "out_of_scope", body
            assert (await hub.conv(cid))["tags"] == []  # nothing changed
        status, body = await tag(hub, "0.00ff00ff", AGENT_TOKEN, add=["urgent"])
        assert status == 404
        status, body = await tag(hub, "not-an-id", SUPERVISOR_TOKEN, add=["urgent"])
        assert status == 404
        for token in (SUPERVISOR_TOKEN, ADMIN_TOKEN):
            status, body = await tag(hub, c["theirs"], token, add=["VIP"])
            assert status == 200 and body["tags"] == ["vip"]

        # -- tag filter: case-insensitive, OR among values, AND with other filters, scoped ---
        assert await ids(hub, "tag=URGENT") == {c["mine"], c["pool"]}
        assert await ids(hub, "tag=urgent&status=queued") == {c["pool"]}
        assert await ids(hub, "tag=urgent&mine=true", AGENT_TOKEN) == {c["mine"]}
        assert await ids(hub, "tag=urgent&unassigned=true") == {c["pool"]}
        assert await ids(hub, "tag=vip,urgent") == {c["mine"], c["pool"], c["theirs"]}
        assert await ids(hub, "tag=vip", AGENT_TOKEN) == set()  # bruno's: out of her scope
        assert await ids(hub, "tag=vip", BRUNO_TOKEN) == {c["theirs"]}
        assert await ids(hub, "tag=refund%20request") == {c["mine"]}
        assert await ids(hub, "tag=DEVOLUCIÓN") == {c["mine"]}
        assert await ids(hub, "tag=nobody-uses-this") == set()

        # -- remove (removal wins over add), then the filter forgets it -----------------------
        status, body = await tag(hub, c["pool"], AGENT_TOKEN, add=["later"], remove=["Urgent"])
        assert status == 200 and body["tags"] == ["later"]
        status, body = await tag(hub, c["pool"], AGENT_TOKEN, add=["x1"], remove=["x1"])
        assert body["tags"] == ["later"]
        assert await ids(hub, "tag=urgent") == {c["mine"]}

        # -- bounded: at most MAX_TAGS, refused whole ----------------------------------------
        many = [f"t{i}" for i in range(MAX_TAGS)]
        status, body = await tag(hub, c["pool"], AGENT_TOKEN, add=many)
        assert status == 422 and body["error"]["code"] == "too_many_tags"
        assert (await hub.conv(c["pool"]))["tags"] == ["later"]

        # -- bad input: 400 naming the problem, nothing written ------------------------------
        bad: list[Any] = [
            b"{not json", b"[]", b'{"add": "urgent"}', b'{"add": [1]}', b'{"colour": []}',
            b'{"add": ["' + b"x" * 65 + b'"]}', b'{"add": ["a,b"]}',
            b'{"add": [""]}', b'{"add": ["   "]}', b'{"add": ["-dash"]}',
            b'{"add": ["\\u0000x"]}', b'{"add": [' + b",".join([b'"t"'] * 21) + b"]}",
            b'{"add": ["' + "ü".encode() * 33 + b'"]}',
        ]
        for payload in bad:
            r = await client.post(f"/api/v1/conversations/{c['mine']}/tags", data=payload,
                                  headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
            body = await r.json()
            assert r.status == 400, (payload, body)
            assert body["error"]["code"] == "invalid_body"
        assert (await hub.conv(c["mine"]))["tags"] == ["urgent", "refund request", "devolución"]
        r = await client.post(f"/api/v1/conversations/{c['mine']}/tags", json={"add": ["a1"]})
        assert r.status == 401
        for query in ("tag=a,b,", "tag=%0A", "tag=" + "x" * 65, "unassigned=yes",
                      "tag=ok&tag=ok", "tag=_"):
            status, body = await hub.call("GET", f"/api/v1/conversations?{query}", AGENT_TOKEN)
            assert status == 400 and body["error"]["code"] == "invalid_parameter", query

        # -- concurrent tagging loses nothing ------------------------------------------------
        await tag(hub, c["theirs"], SUPERVISOR_TOKEN, remove=["vip"])
        answers = await asyncio.gather(*(tag(hub, c["theirs"], SUPERVISOR_TOKEN, add=[f"c{i}"])
                                         for i in range(MAX_TAGS)))
        assert all(status == 200 for status, _ in answers)
        assert sorted((await hub.conv(c["theirs"]))["tags"]) == sorted(
            f"c{i}" for i in range(MAX_TAGS))


def msg(i: int) -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance="shop",
                          provider_message_id=f"m{i}", thread_id=f"t{i}",
                          sender_handle=f"s{i}", text="hola")


@pytest.mark.parametrize("small,min_scan", [(2000, 1024), (0, 3), (0, 1000)])
async def test_tag_filter_pages_without_dupes_or_misses(redis: Any, small: int,
                                                        min_scan: int) -> None:
    store = Store(redis, partitions=3)
    results = await store.ingest_many([msg(i) for i in range(80)])
    cids = [r.conversation_id for r in results if not isinstance(r, Exception)]
    for i, cid in enumerate(cids):
        if i % 3 == 0:
            await change_tags(store, cid, ["even" if i % 2 == 0 else "odd", "all"], [])
        if i % 5 == 0:
            await store.update_conversation(cid, {"status": "resolved"})
    cases = [
        (ConversationFilter(tag=("even",)), {c for i, c in enumerate(cids) if i % 6 == 0}),
        (ConversationFilter(tag=("even", "odd")), {c for i, c in enumerate(cids) if i % 3 == 0}),
        (ConversationFilter(tag=("all",), status=("resolved",)),
         {c for i, c in enumerate(cids) if i % 15 == 0}),
    ]
    for filters, expected in cases:
        seen: list[str] = []
        after: Position | None = None
        while True:
            page = await store.page_conversations(limit=4, after=after, filters=filters,
                                                  small_driver=small, min_scan=min_scan)
            seen += [c.id for c in page.conversations]
            if page.next is None:
                break
            assert len(page.conversations) == 4
            after = page.next
        assert len(seen) == len(set(seen)) and set(seen) == expected, filters


async def test_tags_store_rules(store: Store) -> None:
    result = await store.ingest(msg(1))
    cid = result.conversation_id
    assert normalise_tag("  ÉTÉ\u00a0 Sale ") == "été sale"
    assert normalise_tag("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"
    assert normalise_tag("two\n\tlines") == "two lines"  # whitespace collapses
    for bad in ("", " ", "a" * 33, "x,y", "_x", "x.", "\x00", "x\x00y", "\u200bx"):
        with pytest.raises(ValueError):
            normalise_tag(bad)
    assert await change_tags(store, cid, ["a1"], []) == ["a1"]
    with pytest.raises(TooManyTags):
        await change_tags(store, cid, [f"n{i}" for i in range(MAX_TAGS)], [])
    assert await change_tags(store, cid, [], ["a1"]) == []
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation.tags == []
    assert (await store.page_conversations(filters=ConversationFilter(tag=("a1",)))
            ).conversations == []
