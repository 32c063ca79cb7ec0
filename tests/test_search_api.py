"""GET /api/v1/search against the running hub: awkward text, buyer names and order ids, AND
semantics, paging, the agent's scope (ana never finds bruno's buyer), and hostile input."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import eventually, running_hub, signed_post_args
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, Hub, routing_config


async def write(hub: Hub, text: str, *, language: str, expect: str,
                assignee: str | None = None, **extra: Any) -> str:
    """A buyer writes; returns the conversation id once routing shows on the record."""
    hub.n += 1
    sender = f"buyer{hub.n}"
    r = await hub.client.post("/webhooks/api/shop", **signed_post_args(
        {"id": f"m{hub.n}", "sender": sender, "text": text, "language": language, **extra}))
    assert r.status == 200, await r.text()

    async def routed() -> str | None:
        status, body = await hub.call("GET", "/api/v1/conversations?limit=200", ADMIN_TOKEN)
        assert status == 200, body
        for c in body["conversations"]:
            if c["thread_id"] == sender and c["status"] == expect \
                    and c["assignee"] == assignee:
                return str(c["id"])
        return None

    return str(await eventually(routed))


async def search(hub: Hub, q: str, token: str = SUPERVISOR_TOKEN, **params: Any) -> list[str]:
    query = "&".join([f"q={quote(q)}", *(f"{k}={v}" for k, v in params.items())])
    status, body = await hub.call("GET", f"/api/v1/search?{query}", token)
    assert status == 200, (q, body)
    return [c["id"] for c in body["conversations"]]


async def test_search_text_names_orders_and_scope(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        await hub.online("bruno")
        mine = await write(hub, "Hola, quiero devolver la canción que compré ayer",
                           language="es", expect="assigned", assignee="ana.agent",
                           name="Lucía Pérez", order_id="702-8837261-5521")
        pool = await write(hub, "Hola, ¿dónde está mi pedido? La canción no llegó",
                           language="es", expect="queued", name="Jorge")
        theirs = await write(hub, "Olá, meu pedido não chegou, a canción sumiu", language="pt",
                             expect="assigned", assignee="bruno", name="João Canção")
        elsewhere = await write(hub, "Olá, quero trocar o produto da canción", language="pt",
                                expect="queued", name="Wanderléia")

        # -- accents and case, by every role and scope ---------------------------------------
        everyone = {mine, pool, theirs, elsewhere}
        for q in ("cancion", "CANCIÓN", "Canción"):
            assert set(await search(hub, q)) == everyone
            assert set(await search(hub, q, ADMIN_TOKEN)) == everyone
            assert set(await search(hub, q, AGENT_TOKEN)) == {mine, pool}
            assert set(await search(hub, q, BRUNO_TOKEN)) == {theirs, elsewhere}
        # ana cannot find bruno's buyer by name, nor bruno ana's by order id
        assert await search(hub, "joao", AGENT_TOKEN) == []
        assert await search(hub, "joao cancao") == [theirs]
        assert await search(hub, "wanderleia", AGENT_TOKEN) == []
        assert await search(hub, "702-8837261-5521", BRUNO_TOKEN) == []
        assert await search(hub, "702-8837261-5521", AGENT_TOKEN) == [mine]
        assert await search(hub, "lucia perez", AGENT_TOKEN) == [mine]
        assert await search(hub, "buyer1") == [mine]  # the handle
        # AND across words
        assert set(await search(hub, "cancion pedido")) == {pool, theirs}
        assert await search(hub, "cancion zzzunknown") == []

        # -- paging: most recently active first, no dupes, no misses -------------------------
        seen: list[str] = []
        cursor = None
        while True:
            extra = f"&cursor={cursor}" if cursor else ""
            status, body = await hub.call("GET", f"/api/v1/search?q=cancion&limit=1{extra}",
                                          SUPERVISOR_TOKEN)
            assert status == 200, body
            seen += [c["id"] for c in body["conversations"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(everyone) and len(seen) == 4
        assert seen == [elsewhere, theirs, pool, mine]  # newest activity first


async def test_search_awkward_text(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        texts = {
            "zh": "我的包裹在哪里？已经两个星期了",
            "ar": "مرحبا، أين طلبي؟ لم يصل بعد",
            "he": "שלום, איפה החבילה שלי?",
            "emoji": "📦📦 where is my box 😡🇪🇸",
            "ja": "荷物はまだ届いていません",
        }
        ids: dict[str, str] = {}
        for key, text in texts.items():
            hub.n += 1
            r = await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": f"m-{key}", "sender": f"s-{key}", "text": text, "language": "en"}))
            assert r.status == 200

            async def stored(key: str = key) -> str | None:
                _, body = await hub.call("GET", "/api/v1/conversations?limit=200",
                                         ADMIN_TOKEN)
                found = [c["id"] for c in body["conversations"] if c["thread_id"] == f"s-{key}"]
                return found[0] if found else None

            ids[key] = str(await eventually(stored))
        assert await search(hub, "包裹") == [ids["zh"]]
        assert await search(hub, "包") == [ids["zh"]]
        assert await search(hub, "两个星期") == [ids["zh"]]
        assert await search(hub, "طلبي") == [ids["ar"]]
        assert await search(hub, "החבילה") == [ids["he"]]
        assert await search(hub, "BOX 📦") == [ids["emoji"]]
        assert await search(hub, "荷物") == [ids["ja"]]
        # the conversation view shows the text as it came (JSON, never HTML)
        status, body = await hub.call("GET", f"/api/v1/conversations/{ids['ar']}",
                                      SUPERVISOR_TOKEN)
        assert status == 200 and body["messages"][0]["text"] == texts["ar"]


HOSTILE = [
    ("", "invalid_parameter"),                       # no q at all
    ("q=", "invalid_parameter"),                     # empty
    ("q=" + "a" * 257, "invalid_parameter"),         # too long
    ("q=%F0%9F%98%80%20%21%21", "invalid_parameter"),  # only emoji and punctuation
    ("q=%00%07%1b", "invalid_parameter"),            # control characters only
    ("q=x", "invalid_parameter"),                    # one Latin letter: nothing to search
    ("q=" + "+".join(f"w{i}" for i in range(9)), "invalid_parameter"),  # too many words
    ("q=ok&q=ok", "invalid_parameter"),              # repeated
    ("q=ok&limit=0", "invalid_parameter"),
    ("q=ok&limit=abc", "invalid_parameter"),
    ("q=ok&cursor=notacursor", "invalid_cursor"),
    ("q=ok&status=new", "invalid_parameter"),        # unknown parameter
]


async def test_search_refuses_hostile_input(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        for query, code in HOSTILE:
            status, body = await hub.call("GET", f"/api/v1/search?{query}", AGENT_TOKEN)
            assert status == 400, (query, body)
            assert body["error"]["code"] == code, query
        r = await client.get("/api/v1/search?q=hola")
        assert r.status == 401
        # a word with control characters around it is still searchable
        status, body = await hub.call("GET", "/api/v1/search?q=%00hola%07", AGENT_TOKEN)
        assert status == 200 and body == {"conversations": [], "next_cursor": None}
