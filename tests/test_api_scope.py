"""Agents see and act only on their own work (api.agent_scope), against the running hub.

One hub per scope ("own", "pools", "all") with five conversations in every relation an agent
can have to one: assigned to her (mine), waiting in a queue she serves (pool), waiting in a
queue she does not serve (elsewhere), assigned to another agent (theirs) and resolved. Every
conversation endpoint is called by every role on every relation; reads out of scope answer
404 (as an unknown id does), actions 403, and a refused action changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args

SUPERVISOR_TOKEN = "test-supervisor-token"
BRUNO_TOKEN = "test-bruno-token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def routing_config(scope: str | None) -> str:
    scope_line = f'[api]\nagent_scope = "{scope}"\n' if scope else ""
    return scope_line + f"""
[[api.tokens]]
name = "sam"
role = "supervisor"
token_sha256 = "{_digest(SUPERVISOR_TOKEN)}"

[[api.tokens]]
name = "bruno"
role = "agent"
token_sha256 = "{_digest(BRUNO_TOKEN)}"

[routing]
languages = ["es", "pt", "en"]
reassign_after_no_reply_minutes = 0
sticky_hours = 0

[[routing.queues]]
name = "es"
[[routing.queues.steps]]
languages = {{ es = 3 }}

[[routing.queues]]
name = "pt"
[[routing.queues.steps]]
languages = {{ pt = 3 }}

[[routing.rules]]
name = "spanish"
queue = "es"
when = {{ language = ["es"] }}

[[routing.rules]]
name = "portuguese"
queue = "pt"
when = {{ language = ["pt"] }}

[[routing.agents]]
id = "ana.agent"
languages = {{ es = 5 }}
capacity = {{ chat = 1 }}

[[routing.agents]]
id = "bruno"
languages = {{ pt = 5 }}
capacity = {{ chat = 1 }}

[[routing.agents]]
id = "zoe"
languages = {{ es = 4, pt = 4 }}
capacity = {{ chat = 1 }}
weight = 0

[[routing.agents]]
id = "lu"
languages = {{ es = 2 }}
capacity = {{ chat = 3 }}

[[routing.agents]]
id = "carla"
languages = {{ en = 5 }}
capacity = {{ chat = 2 }}
"""


ROLES = {"agent": AGENT_TOKEN, "supervisor": SUPERVISOR_TOKEN, "admin": ADMIN_TOKEN}
RELATIONS = ("mine", "pool", "elsewhere", "theirs", "resolved")
VISIBLE = {"own": {"mine"}, "pools": {"mine", "pool"}, "all": set(RELATIONS)}
TEXTS = {
    "es": "Hola, ¿dónde está mi pedido? Lo compré hace dos semanas",
    "pt": "Olá, cadê meu pedido? Já faz duas semanas que comprei",
    "en": "Hello, where is my order? I bought it two weeks ago",
}


class Hub:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.n = 0

    async def call(self, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
        r = await self.client.request(method, path, headers=auth(token), **kw)
        return r.status, await r.json()

    async def conv(self, cid: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/conversations/{cid}", ADMIN_TOKEN)
        assert status == 200, body
        return body["conversation"]  # type: ignore[no-any-return]

    async def state(self, cid: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/conversations/{cid}/routing",
                                       ADMIN_TOKEN)
        assert status == 200, body
        return body["state"]  # type: ignore[no-any-return]

    async def buyer(self, language: str, *, expect: str, assignee: str | None = None) -> str:
        """A buyer writes; returns the conversation id once the record shows the routing."""
        self.n += 1
        await self.client.post("/webhooks/api/shop", **signed_post_args(
            {"id": f"m{self.n}", "sender": f"buyer{self.n}", "text": TEXTS[language],
             "language": language}))

        async def routed() -> str | None:
            status, body = await self.call("GET", "/api/v1/conversations?limit=200",
                                           ADMIN_TOKEN)
            assert status == 200, body
            for c in body["conversations"]:
                if c["thread_id"] == f"buyer{self.n}" and c["status"] == expect \
                        and c["assignee"] == assignee:
                    return str(c["id"])
            return None

        return str(await eventually(routed))

    async def online(self, agent: str) -> None:
        status, body = await self.call("POST", f"/api/v1/agents/{agent}/status", ADMIN_TOKEN,
                                       json={"status": "online"})
        assert status == 200, body

    async def resolve(self, cid: str) -> None:
        status, body = await self.call("POST", f"/api/v1/conversations/{cid}/resolve",
                                       ADMIN_TOKEN)
        assert status == 200, body
        await eventually(lambda: self._has_status(cid, "resolved"))

    async def _has_status(self, cid: str, status: str) -> bool:
        return (await self.conv(cid))["status"] == status

    async def seed(self) -> dict[str, str]:
        await self.online("ana.agent")
        await self.online("bruno")
        resolved = await self.buyer("es", expect="assigned", assignee="ana.agent")
        await self.resolve(resolved)
        return {
            "resolved": resolved,
            "mine": await self.buyer("es", expect="assigned", assignee="ana.agent"),
            "pool": await self.buyer("es", expect="queued"),
            "theirs": await self.buyer("pt", expect="assigned", assignee="bruno"),
            "elsewhere": await self.buyer("pt", expect="queued"),
        }


READS = ("/api/v1/conversations/{id}", "/api/v1/conversations/{id}/messages",
         "/api/v1/conversations/{id}/routing")
ACTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("/api/v1/conversations/{id}/replies", {"text": "Un momento, por favor"}),
    ("/api/v1/conversations/{id}/resolve", {}),
    ("/api/v1/conversations/{id}/language", {"language": "es"}),
    ("/api/v1/conversations/{id}/transfer", {"queue": "es"}),
)


def visible(role: str, scope: str, relation: str) -> bool:
    return role != "agent" or relation in VISIBLE[scope]


@pytest.mark.parametrize("scope", ["own", "pools", "all"])
async def test_every_endpoint_by_role_and_scope(make_config: Any, scope: str) -> None:
    async with running_hub(make_config(extra=routing_config(scope))) as client:
        hub = Hub(client)
        convs = await hub.seed()

        # -- the list: exactly what the principal may see, filters inside the scope -------
        for role, token in ROLES.items():
            status, body = await hub.call("GET", "/api/v1/conversations", token)
            assert status == 200, body
            expected = {convs[r] for r in RELATIONS if visible(role, scope, r)}
            assert {c["id"] for c in body["conversations"]} == expected, (role, scope)
        status, body = await hub.call("GET", "/api/v1/conversations?mine=true", AGENT_TOKEN)
        assert [c["id"] for c in body["conversations"]] == [convs["mine"]]
        status, body = await hub.call("GET", "/api/v1/conversations?status=queued",
                                      AGENT_TOKEN)
        expected = {convs[r] for r in ("pool", "elsewhere") if visible("agent", scope, r)}
        assert {c["id"] for c in body["conversations"]} == expected
        status, body = await hub.call("GET", "/api/v1/conversations", BRUNO_TOKEN)
        bruno_sees = {"own": {"theirs"}, "pools": {"theirs", "elsewhere"},
                      "all": set(RELATIONS)}[scope]
        assert {c["id"] for c in body["conversations"]} == {convs[r] for r in bruno_sees}

        # -- reads: 200 in scope, 404 (like an unknown id) outside --------------------------
        for path in READS:
            for role, token in ROLES.items():
                for relation in RELATIONS:
                    status, body = await hub.call("GET", path.format(id=convs[relation]),
                                                  token)
                    want = 200 if visible(role, scope, relation) else 404
                    assert status == want, (path, role, scope, relation, body)
                    if want == 404:
                        assert body == {"error": {"code": "not_found",
                                                  "message": "no such conversation"}}
                status, body = await hub.call("GET", path.format(id="0.00ff00ff"), token)
                assert status == 404 and body["error"]["code"] == "not_found"

        # -- refused actions: 403, and nothing changed --------------------------------------
        before = {r: await hub.state(c) for r, c in convs.items()}
        for path, payload in ACTIONS:
            for relation in RELATIONS:
                if visible("agent", scope, relation):
                    continue
                status, body = await hub.call("POST", path.format(id=convs[relation]),
                                              AGENT_TOKEN, json=payload)
                assert status == 403, (path, scope, relation, body)
                assert body["error"]["code"] == "out_of_scope"
            status, body = await hub.call("POST", path.format(id="0.00ff00ff"), AGENT_TOKEN,
                                          json=payload)
            assert status == 404, (path, body)
        # agents transfer only what is assigned to them, whatever the scope
        for relation in ("pool", "elsewhere", "theirs"):
            if not visible("agent", scope, relation):
                continue
            status, body = await hub.call(
                "POST", f"/api/v1/conversations/{convs[relation]}/transfer", AGENT_TOKEN,
                json={"queue": "es"})
            assert status == 403 and body["error"]["code"] == "not_assigned_to_you", body
        assert {r: await hub.state(c) for r, c in convs.items()} == before

        # -- allowed actions: the author is always the caller -------------------------------
        for relation in RELATIONS:
            if relation == "resolved" or not visible("agent", scope, relation):
                continue
            status, body = await hub.call(
                "POST", f"/api/v1/conversations/{convs[relation]}/replies", AGENT_TOKEN,
                json={"text": "Ya lo miro"})
            assert status == 202, (relation, body)
            assert body["message"]["author"] == "ana.agent"
        status, body = await hub.call(
            "POST", f"/api/v1/conversations/{convs['mine']}/replies", AGENT_TOKEN,
            json={"text": "Soy Bruno", "author": "bruno"})
        assert status == 403 and body["error"]["code"] == "author_mismatch"
        status, body = await hub.call(
            "POST", f"/api/v1/conversations/{convs['theirs']}/replies", SUPERVISOR_TOKEN,
            json={"text": "Olá, sou a supervisora", "author": "sam"})
        assert status == 202 and body["message"]["author"] == "sam"
        status, body = await hub.call(
            "POST", f"/api/v1/conversations/{convs['mine']}/resolve", AGENT_TOKEN)
        assert status == 200, body
        # her capacity is free again: the Spanish buyer waiting in her pool is hers now
        await eventually(lambda: _assigned_to(hub, convs["pool"], "ana.agent"))


async def _assigned_to(hub: Hub, cid: str, agent: str) -> bool:
    return (await hub.conv(cid))["assignee"] == agent


async def test_default_scope_is_pools(make_config: Any) -> None:
    loaded = make_config(extra=routing_config(None))
    assert loaded.config.api.agent_scope == "pools"
    async with running_hub(loaded) as client:
        hub = Hub(client)
        convs = await hub.seed()
        status, body = await hub.call("GET", "/api/v1/conversations", AGENT_TOKEN)
        assert status == 200, body
        assert {c["id"] for c in body["conversations"]} == {convs["mine"], convs["pool"]}


async def test_transfer_rules(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        convs = await hub.seed()
        mine, waiting = convs["mine"], convs["pool"]

        async def transfer(cid: str, token: str, **body: Any) -> tuple[int, Any]:
            return await hub.call("POST", f"/api/v1/conversations/{cid}/transfer", token,
                                  json=body)

        await hub.online("lu")
        await hub.online("zoe")  # weight 0: takes no work on her own, but takes transfers
        # the language floor: bruno speaks no Spanish; lu speaks it below the queue's level 3
        status, body = await transfer(mine, AGENT_TOKEN, agent="bruno")
        assert status == 409 and body["error"]["code"] == "language_floor", body
        assert "es at level 3" in body["error"]["message"]
        status, body = await transfer(mine, AGENT_TOKEN, agent="lu")
        assert status == 409 and body["error"]["code"] == "language_floor", body
        status, body = await transfer(mine, AGENT_TOKEN, agent="carla")
        assert status == 409 and body["error"]["code"] in ("language_floor", "agent_offline")
        status, body = await transfer(mine, AGENT_TOKEN, agent="nobody")
        assert status == 422 and body["error"]["code"] == "unknown_agent"
        assert (await hub.state(mine))["assignee"] == "ana.agent"

        status, body = await transfer(mine, AGENT_TOKEN, agent="zoe")
        assert status == 200, body
        assert body["state"]["assignee"] == "zoe" and body["state"]["status"] == "assigned"
        # ana's capacity went to the Spanish buyer who was waiting; mine is zoe's now
        await eventually(lambda: _assigned_to(hub, waiting, "ana.agent"))
        status, body = await transfer(mine, AGENT_TOKEN, agent="ana.agent")
        assert status == 403 and body["error"]["code"] == "out_of_scope", body
        # zoe is full (capacity 1)
        status, body = await transfer(waiting, SUPERVISOR_TOKEN, agent="zoe")
        assert status == 409 and body["error"]["code"] == "agent_full", body
        status, body = await transfer(waiting, SUPERVISOR_TOKEN, agent="carla")
        assert status == 409 and body["error"]["code"] in ("language_floor", "agent_offline")

        # a resolved conversation is never reopened by a transfer, to an agent or a queue
        resolved = convs["resolved"]
        for target in ({"agent": "lu"}, {"agent": "zoe"}, {"queue": "es"}):
            status, body = await transfer(resolved, ADMIN_TOKEN, **target)
            assert status == 409 and body["error"]["code"] == "resolved", (target, body)
        assert (await hub.state(resolved))["status"] == "closed"
        assert (await hub.conv(resolved))["status"] == "resolved"

        status, body = await transfer(waiting, AGENT_TOKEN, queue="nope")
        assert status == 422 and body["error"]["code"] == "unknown_queue"
        # the owner may hand her conversation back to a queue
        status, body = await transfer(waiting, AGENT_TOKEN, queue="pt")
        assert status == 200 and body["state"]["queue"] == "pt", body


async def test_the_buyers_language_counts_outside_language_queues(make_config: Any) -> None:
    """No rule for English: the default queue asks for no language, the buyer's own still
    has to be spoken by whoever receives a transfer."""
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        await hub.online("zoe")
        english = await hub.buyer("en", expect="queued")
        assert (await hub.conv(english))["queue"] == "default"
        status, body = await hub.call(
            "POST", f"/api/v1/conversations/{english}/transfer", SUPERVISOR_TOKEN,
            json={"agent": "zoe"})
        assert status == 409 and body["error"]["code"] == "language_floor", body
        assert "en at level 1" in body["error"]["message"]
