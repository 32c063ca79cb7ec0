"""The list endpoints page like a real API: opaque keyset cursors stable on equal timestamps,
filters applied in Redis before the page is cut (no short pages), a 400 naming the problem
for every bad query parameter, and a conversation with 10,000 messages paged to the end.

Records are seeded through the store before the hub starts and their inbound stream entries
dropped, so the router leaves them exactly as written.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from channels.models import InboundMessage
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, running_hub

ROUTING = """
[routing]
languages = ["es", "pt", "en"]

[[routing.queues]]
name = "es"
[[routing.queues.steps]]
languages = { es = 3 }

[[routing.agents]]
id = "lucia"
languages = { es = 5 }

[[routing.agents]]
id = "ana.agent"
languages = { es = 5 }
"""

TIE = 1_750_000_000.25


def _message(i: int, thread: str | None = None) -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance="shop",
                          provider_message_id=f"m{i}", thread_id=thread or f"t{i}",
                          sender_handle=f"s{i}", text=f"mensaje {i}")


async def _seed(store: Store, n: int) -> list[str]:
    """n conversations, all last active at the same instant; every 9th is lucia's, in es."""
    ids: list[str] = []
    for i in range(n):
        cid = (await store.ingest(_message(i))).conversation_id
        fields = {"status": "assigned", "assignee": "lucia", "language": "es",
                  "market": "MX", "queue": "es"} if i % 9 == 0 else \
            {"status": "queued", "language": "pt", "queue": "default", "pool": "default#1"}
        await store.update_conversation(cid, fields)
        k = store.keys_for(cid)
        assert k is not None
        await store.redis.zadd(k.conversations, {cid: TIE})
        ids.append(cid)
    await store.redis.delete(*store.inbound_streams)
    return ids


async def _pages(client: Any, query: str, token: str = ADMIN_TOKEN) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        url = f"/api/v1/conversations?{query}" + (f"&cursor={cursor}" if cursor else "")
        r = await client.get(url, headers=auth(token))
        body = await r.json()
        assert r.status == 200, body
        pages.append([c["id"] for c in body["conversations"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 200


async def test_cursor_pages_are_full_stable_and_complete(make_config: Any,
                                                         store: Store) -> None:
    ids = await _seed(store, 120)
    async with running_hub(make_config(extra=ROUTING)) as client:
        pages = await _pages(client, "limit=7")
        flat = [cid for page in pages for cid in page]
        assert flat == sorted(ids, reverse=True), "all share one timestamp: id order, once each"
        assert [len(p) for p in pages[:-1]] == [7] * (len(pages) - 1)

        lucia = sorted(ids[::9], reverse=True)
        for query in ("limit=4&assignee=lucia", "limit=4&status=assigned",
                      "limit=4&language=ES&market=mx", "limit=4&queue=es&channel=api",
                      "limit=4&status=assigned,resolved&channel=shop"):
            pages = await _pages(client, query)
            assert [cid for page in pages for cid in page] == lucia, query
            assert all(len(p) == 4 for p in pages[:-1]), (query, "no short pages")

        r = await client.get("/api/v1/conversations?mine=true", headers=auth(AGENT_TOKEN))
        assert (await r.json())["conversations"] == []
        r = await client.get("/api/v1/conversations?mine=true&assignee=lucia",
                             headers=auth(ADMIN_TOKEN))
        assert (await r.json()) == {"conversations": [], "next_cursor": None}

        # the older way keeps working: before is exclusive of that instant
        r = await client.get(f"/api/v1/conversations?before={TIE}", headers=auth(ADMIN_TOKEN))
        assert (await r.json())["conversations"] == []
        r = await client.get(f"/api/v1/conversations?before={TIE + 1}&limit=200",
                             headers=auth(ADMIN_TOKEN))
        assert len((await r.json())["conversations"]) == 120


BAD_QUERIES = [
    ("before=nan", "invalid_parameter", "before"),
    ("before=inf", "invalid_parameter", "before"),
    ("before=-1", "invalid_parameter", "before"),
    ("before=1e999", "invalid_parameter", "before"),
    ("before=yesterday", "invalid_parameter", "before"),
    ("before=", "invalid_parameter", "before"),
    ("limit=0", "invalid_parameter", "limit"),
    ("limit=201", "invalid_parameter", "limit"),
    ("limit=1_0", "invalid_parameter", "limit"),
    ("limit=%EF%BC%95", "invalid_parameter", "limit"),  # a full-width digit
    ("limit=10&limit=20", "invalid_parameter", "limit"),
    ("cursor=not-a-cursor", "invalid_cursor", "cursor"),
    ("cursor=", "invalid_parameter", "cursor"),
    ("cursor=eyJ0eXBlIjoiYyJ9", "invalid_cursor", "cursor"),
    ("before=5&cursor=abc", "invalid_parameter", "cursor"),
    ("status=open", "invalid_parameter", "status"),
    ("status=", "invalid_parameter", "status"),
    ("status=queued,", "invalid_parameter", "status"),
    ("channel=nowhere", "unknown_filter_value", "channel"),
    ("language=xx", "unknown_filter_value", "language"),
    ("language=spanish", "invalid_parameter", "language"),
    ("market=ZZ", "unknown_filter_value", "market"),
    ("assignee=ghost", "unknown_filter_value", "assignee"),
    ("queue=nope", "unknown_filter_value", "queue"),
    ("mine=yes", "invalid_parameter", "mine"),
    ("stauts=queued", "invalid_parameter", "stauts"),
]


async def test_every_bad_query_parameter_is_a_400_that_names_it(make_config: Any) -> None:
    message_cursor = base64.urlsafe_b64encode(
        json.dumps({"type": "m", "c": "0.ab", "q": 3, "o": "asc"}).encode()).decode()
    async with running_hub(make_config(extra=ROUTING)) as client:
        for query, code, name in [*BAD_QUERIES,
                                  (f"cursor={message_cursor}", "invalid_cursor", "cursor")]:
            r = await client.get(f"/api/v1/conversations?{query}", headers=auth(ADMIN_TOKEN))
            body = await r.json()
            assert r.status == 400, (query, body)
            assert body["error"]["code"] == code, (query, body)
            assert name in body["error"]["message"], (query, body)
        for path in ("/api/v1/quarantine?limit=0", "/api/v1/dlq?limit=x",
                     "/api/v1/dlq?foo=1"):
            r = await client.get(path, headers=auth(ADMIN_TOKEN))
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_parameter"


async def _ingest_many(store: Store, n: int) -> str:
    results = []
    for start in range(0, n, 50):
        results += await asyncio.gather(*(store.ingest(_message(i, thread="long"))
                                          for i in range(start, min(n, start + 50))))
    await store.redis.delete(*store.inbound_streams)
    assert len({r.conversation_id for r in results}) == 1
    return results[0].conversation_id


async def test_a_conversation_with_ten_thousand_messages_pages_to_the_end(
        make_config: Any, store: Store) -> None:
    cid = await _ingest_many(store, 10_000)
    async with running_hub(make_config()) as client:
        h = auth(ADMIN_TOKEN)
        r = await client.get(f"/api/v1/conversations/{cid}", headers=h)
        body = await r.json()
        assert body["conversation"]["message_count"] == 10_000
        assert [m["seq"] for m in body["messages"]] == list(range(1, 501))
        seqs = [m["seq"] for m in body["messages"]]
        cursor = body["next_cursor"]
        pages = 1
        while cursor is not None:
            r = await client.get(f"/api/v1/conversations/{cid}/messages?limit=500"
                                 f"&cursor={cursor}", headers=h)
            page = await r.json()
            assert r.status == 200, page
            seqs += [m["seq"] for m in page["messages"]]
            cursor = page["next_cursor"]
            pages += 1
        assert seqs == list(range(1, 10_001)) and pages == 20

        r = await client.get(f"/api/v1/conversations/{cid}/messages?order=desc&limit=3",
                             headers=h)
        newest = await r.json()
        assert [m["seq"] for m in newest["messages"]] == [10_000, 9_999, 9_998]
        r = await client.get(f"/api/v1/conversations/{cid}/messages?order=desc&limit=3"
                             f"&cursor={newest['next_cursor']}", headers=h)
        assert [m["seq"] for m in (await r.json())["messages"]] == [9_997, 9_996, 9_995]
        r = await client.get(f"/api/v1/conversations/{cid}/messages?order=asc"
                             f"&cursor={newest['next_cursor']}", headers=h)
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_cursor"
        for bad in ("limit=501", "order=up", "cursor=%00"):
            r = await client.get(f"/api/v1/conversations/{cid}/messages?{bad}", headers=h)
            assert r.status == 400, bad


@pytest.mark.parametrize("path", ["/api/v1/conversations/{id}",
                                  "/api/v1/conversations/{id}/messages"])
async def test_a_message_cursor_belongs_to_its_conversation(make_config: Any, store: Store,
                                                            path: str) -> None:
    a = (await store.ingest(_message(1, thread="a"))).conversation_id
    await store.ingest(_message(2, thread="a"))
    b = (await store.ingest(_message(3, thread="b"))).conversation_id
    await store.redis.delete(*store.inbound_streams)
    async with running_hub(make_config()) as client:
        r = await client.get(path.format(id=a) + "?limit=1", headers=auth(ADMIN_TOKEN))
        cursor = (await r.json())["next_cursor"]
        assert cursor is not None
        r = await client.get(path.format(id=b) + f"?cursor={cursor}",
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_cursor"
