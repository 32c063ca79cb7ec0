"""Private notes in the message history (``GET .../messages?include=notes``) and the order a
conversation is about (``order_id`` on ``GET /api/v1/conversations/{id}``), on the running hub.

A conversation gets buyer messages, a reply and notes in between; the history must show them
in time order with their kind, page exactly (every cut, both orders) with its own cursor, stay
in the agent's scope, and no note may reach the operator's endpoint or the export.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, eventually, running_hub
from tests.workflow_hub import BRUNO_TOKEN, SUPERVISOR_TOKEN, WorkflowHub, config

NOTE_TEXTS = ("Cliente habitual, tratar con cuidado", "Revisé el envío: sale mañana",
              "Pidió factura")


@contextlib.asynccontextmanager
async def history_hub(make_config: Any, redis: Any,
                      ) -> AsyncIterator[tuple[WorkflowHub, OperatorEndpoint, dict[str, str]]]:
    """The seeded hub, and the "mine" conversation with messages and notes interleaved:
    buyer, note, reply, note, buyer, note."""
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url, extra=config("pools"))) as client:
        hub = WorkflowHub(client, redis)
        convs = await hub.seed()
        cid = convs["mine"]
        buyer = (await hub.conv(cid))["contact_handle"]
        await _note(hub, cid, NOTE_TEXTS[0])
        status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                      AGENT_TOKEN, json={"text": "Lo reviso ahora"})
        assert status == 202, body
        await eventually(lambda: _async(len(operator.received) == 1))
        await _note(hub, cid, NOTE_TEXTS[1])
        await hub.write(buyer, "Gracias")
        await hub.router_idle()
        await _note(hub, cid, NOTE_TEXTS[2])
        yield hub, operator, convs


async def _async(value: bool) -> bool:
    return value


async def _note(hub: WorkflowHub, cid: str, text: str) -> None:
    status, body = await hub.post(f"/api/v1/conversations/{cid}/notes", AGENT_TOKEN,
                                  {"text": text})
    assert status == 201, body


async def _history(hub: WorkflowHub, cid: str, query: str,
                   token: str = AGENT_TOKEN) -> tuple[int, Any]:
    return await hub.call("GET", f"/api/v1/conversations/{cid}/messages?{query}", token)


async def _walk(hub: WorkflowHub, cid: str, query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        status, body = await _history(hub, cid, query + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        items += body["messages"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def _shape(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["kind"], i["text"]) for i in items]


async def test_notes_interleave_in_time_order_and_page_exactly(make_config: Any,
                                                               redis: Any) -> None:
    async with history_hub(make_config, redis) as (hub, operator, convs):
        cid = convs["mine"]
        status, plain = await _history(hub, cid, "")
        assert status == 200, plain
        assert [m["kind"] for m in plain["messages"]] == ["message"] * 3
        first_text = plain["messages"][0]["text"]

        status, body = await _history(hub, cid, "include=notes")
        assert status == 200, body
        expected = [("message", first_text), ("note", NOTE_TEXTS[0]),
                    ("message", "Lo reviso ahora"), ("note", NOTE_TEXTS[1]),
                    ("message", "Gracias"), ("note", NOTE_TEXTS[2])]
        assert _shape(body["messages"]) == expected
        assert body["next_cursor"] is None
        note = body["messages"][1]
        assert note["author"] == "ana.agent" and note["conversation_id"] == cid
        assert note["id"].startswith("note-") and "seq" not in note
        times = [i["created_at"] for i in body["messages"]]
        assert times == sorted(times)

        for limit in (1, 2, 3, 4, 5):
            assert _shape(await _walk(hub, cid, f"include=notes&limit={limit}")) == expected
            assert _shape(await _walk(hub, cid, f"include=notes&order=desc&limit={limit}")) \
                == expected[::-1]
        assert _shape(await _walk(hub, cid, "limit=2")) == [e for e in expected
                                                           if e[0] == "message"]

        # Notes are never sent, nor exported.
        assert [m["text"] for m in operator.received] == ["Lo reviso ahora"]
        status, export = await hub.call("GET", f"/api/v1/conversations/{cid}/export",
                                        AGENT_TOKEN)
        assert status == 200
        dumped = json.dumps(export, ensure_ascii=False)
        assert "Lo reviso ahora" in dumped
        assert not any(text in dumped for text in NOTE_TEXTS)


async def test_cursors_scope_and_bad_input(make_config: Any, redis: Any) -> None:
    async with history_hub(make_config, redis) as (hub, _operator, convs):
        cid = convs["mine"]
        _, plain = await _history(hub, cid, "limit=1")
        _, noted = await _history(hub, cid, "include=notes&limit=1")
        _, other = await _history(hub, convs["pool"], "include=notes&limit=1", ADMIN_TOKEN)
        assert plain["next_cursor"] and noted["next_cursor"]
        bad = [
            f"include=notes&cursor={plain['next_cursor']}",   # a page without notes
            f"cursor={noted['next_cursor']}",                 # the other way round
            f"include=notes&order=desc&cursor={noted['next_cursor']}",
            "include=notes&cursor=%%%",
            "include=notes&cursor=eyJ0eXBlIjoiaCJ9",
            "include=note",
            "include=notes&include=notes",
            "include=notes&limit=0",
            "include=notes&limit=501",
        ]
        if other["next_cursor"]:
            bad.append(f"include=notes&cursor={other['next_cursor']}")
        for query in bad:
            status, body = await _history(hub, cid, query)
            assert status == 400, (query, body)
            assert body["error"]["code"] in ("invalid_cursor", "invalid_parameter"), body

        # Scope: like the messages themselves.
        for token, relation, expected in ((AGENT_TOKEN, "mine", 200), (AGENT_TOKEN, "pool", 200),
                                          (AGENT_TOKEN, "theirs", 404),
                                          (AGENT_TOKEN, "elsewhere", 404),
                                          (BRUNO_TOKEN, "mine", 404),
                                          (SUPERVISOR_TOKEN, "theirs", 200),
                                          (ADMIN_TOKEN, "elsewhere", 200)):
            status, _ = await _history(hub, convs[relation], "include=notes", token)
            assert status == expected, (token, relation)
        status, _ = await _history(hub, "0.ffffffff", "include=notes")
        assert status == 404
        r = await hub.client.get(f"/api/v1/conversations/{cid}/messages?include=notes")
        assert r.status == 401


async def test_the_view_shows_the_order_reference(make_config: Any, redis: Any) -> None:
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url, extra=config("pools"))) as client:
        hub = WorkflowHub(client, redis)
        await hub.online("ana.agent")
        cid = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        status, view = await hub.call("GET", f"/api/v1/conversations/{cid}", AGENT_TOKEN)
        assert status == 200 and view["order_id"] is None
        buyer = (await hub.conv(cid))["contact_handle"]
        await hub.write(buyer, "Es el pedido 702-1", order_id="702-1")
        await hub.write(buyer, "Perdón, es el 702-2", order_id="702-2")
        await hub.router_idle()
        status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                      AGENT_TOKEN, json={"text": "Gracias"})
        assert status == 202, body
        await hub.write(buyer, "¿Y bien?")  # the newest message names no order
        await hub.router_idle()
        status, view = await hub.call("GET", f"/api/v1/conversations/{cid}", AGENT_TOKEN)
        assert status == 200 and view["order_id"] == "702-2"
        assert view["conversation"]["message_count"] == 5
