"""Exporting a conversation as dispute evidence: JSON and a printable HTML page with every
message's channel, times, direction, author, delivery state and attachment names, on awkward
text (accents, CJK, RTL, emoji) and hostile text that must stay text (HTML, script, event
handlers, javascript: URLs), by role and scope."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from typing import Any

from redis.asyncio import Redis

from hub.export_api import CSP
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub
from tests.workflow_hub import SUPERVISOR_TOKEN, WorkflowHub, config

HOSTILE = ('<script>alert("x")</script><img src=x onerror=alert(1)> '
           '<a href="javascript:alert(2)">clique</a> \' " & </div></body>')
AWKWARD = [
    "Olá, ação! ¿Dónde está mi pedido? Ñandú, naïve, Ærøskøbing",
    "我的订单在哪里？请尽快回复。注文はどこですか",
    "أين طلبي؟ لم يصل بعد — שלום, איפה ההזמנה שלי",
    "📦🚚 chegou? 👍🏽👨‍👩‍👧 \u200d",
    HOSTILE,
]
REPLY = 'Hola </div><script>steal()</script> <b onmouseover="x()">ok</b> javascript:void(0)'
BAD_NAME = "<svg onload=alert(3)>recibo.txt"
BUYER_NAME = "<b>Eve</b> & \"Mallory\""
# What the page may contain: its own structure, nothing that runs, loads or links.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "table", "tr", "td",
             "div", "span", "p"}


class Page(HTMLParser):
    """Every tag and attribute of the page, and its text as a browser would show it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def _seed(hub: WorkflowHub) -> tuple[dict[str, str], str]:
    convs = await hub.seed()
    mine = convs["mine"]
    sender = await hub.thread_of(mine)
    for n, text in enumerate(AWKWARD):
        extra: dict[str, Any] = {"name": BUYER_NAME} if n == 0 else {}
        if n == 4:
            extra["attachments"] = [{"name": BAD_NAME, "data": base64.b64encode(
                b"recibo 42").decode(), "content_type": "text/plain"}]
        await hub.write(sender, text, **extra)
    return convs, mine


async def test_export_json_and_html_escape_everything(make_config: Any, redis: Redis) -> None:
    async with OperatorEndpoint() as endpoint, running_hub(make_config(
            outbound_url=endpoint.url, extra=config())) as client:
        hub = WorkflowHub(client, redis)
        convs, mine = await _seed(hub)
        status, body = await hub.post(f"/api/v1/conversations/{mine}/replies", AGENT_TOKEN,
                                      {"text": REPLY})
        assert status == 202, body
        status, note = await hub.post(f"/api/v1/conversations/{mine}/notes", AGENT_TOKEN,
                                      {"text": "nota interna: não exportar"})
        assert status == 201 and note["kind"] == "note"
        await eventually(lambda: _reply_sent(hub, mine))

        # -- JSON -------------------------------------------------------------------------
        r = await client.get(f"/api/v1/conversations/{mine}/export", headers=auth(AGENT_TOKEN))
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Content-Disposition"] == \
            f'attachment; filename="conversation-{mine}.json"'
        data = json.loads(await r.read())
        assert data["exported_by"] == "ana.agent" and not data["truncated"]
        assert data["conversation"]["id"] == mine
        messages = data["messages"]
        assert [m["seq"] for m in messages] == list(range(1, len(AWKWARD) + 3))
        inbound = [m for m in messages if m["direction"] == "in"]
        assert [m["text"] for m in inbound[1:]] == AWKWARD
        assert all(m["channel"] == "api" and m["channel_instance"] == "shop" for m in messages)
        assert all(m["status"] == "received" and m["created_at"] > 0 for m in inbound)
        assert inbound[1]["author"] == BUYER_NAME
        assert inbound[-1]["attachments"] == [BAD_NAME]
        out = messages[-1]
        assert out["direction"] == "out" and out["author"] == "ana.agent"
        assert out["text"] == REPLY and out["status"] == "sent"
        assert out["status_at"] is not None and out["provider_message_id"] == "op-1"
        assert "não exportar" not in json.dumps(data, ensure_ascii=False)

        # -- HTML -------------------------------------------------------------------------
        r = await client.get(f"/api/v1/conversations/{mine}/export?format=html",
                             headers=auth(AGENT_TOKEN))
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Content-Security-Policy"] == CSP == \
            "default-src 'none'; style-src 'unsafe-inline'"
        assert r.headers["Content-Disposition"] == \
            f'attachment; filename="conversation-{mine}.html"'
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        page_text = (await r.read()).decode("utf-8")
        page = Page()
        page.feed(page_text)
        assert {tag for tag, _ in page.tags} <= PAGE_TAGS, page.tags
        for _tag, attrs in page.tags:
            assert {name for name, _ in attrs} <= {"class", "charset"}, attrs
        lowered = page_text.lower()
        # hostile words survive only as escaped text, never as markup
        for forbidden in ("<script", "<img", "<svg", "<a ", "<b>", "<b ", "</div></body>"):
            assert forbidden not in lowered, forbidden
        shown = "".join(page.text)
        for text in [*AWKWARD, REPLY, BAD_NAME, BUYER_NAME]:
            assert text in shown, text  # exactly what was written, shown as text
        assert "&lt;script&gt;" in page_text and "onerror=alert(1)&gt;" in page_text
        assert "&quot;Mallory&quot;" in page_text
        assert "não exportar" not in shown
        assert "state sent since" in shown and "Agent: ana.agent" in shown
        assert f"Attachments: {BAD_NAME}" in shown

        # -- roles, scope, bad input ------------------------------------------------------
        for token in (SUPERVISOR_TOKEN, ADMIN_TOKEN):
            r = await client.get(f"/api/v1/conversations/{convs['theirs']}/export",
                                 headers=auth(token))
            assert r.status == 200
        for relation in ("theirs", "elsewhere", "resolved"):
            for fmt in ("json", "html"):
                r = await client.get(
                    f"/api/v1/conversations/{convs[relation]}/export?format={fmt}",
                    headers=auth(AGENT_TOKEN))
                assert r.status == 404, relation
                assert (await r.json())["error"]["message"] == "no such conversation"
        r = await client.get(f"/api/v1/conversations/{convs['pool']}/export",
                             headers=auth(AGENT_TOKEN))
        assert r.status == 200  # waiting in a queue she serves
        for query in ("?format=pdf", "?format=", "?format=html&format=json", "?x=1"):
            r = await client.get(f"/api/v1/conversations/{mine}/export{query}",
                                 headers=auth(AGENT_TOKEN))
            assert r.status == 400, query
        r = await client.get("/api/v1/conversations/0.00ff00ff/export?format=html",
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 404
        r = await client.get(f"/api/v1/conversations/{mine}/export")
        assert r.status == 401


async def _reply_sent(hub: WorkflowHub, cid: str) -> bool:
    messages = (await hub.admin_get(f"/api/v1/conversations/{cid}/messages"))["messages"]
    return any(m["direction"] == "out" and m["status"] == "sent" for m in messages)
