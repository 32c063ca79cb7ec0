"""A buyer's history across channels through the API (hub/contacts_api.py), on the running hub:
the router links each stored message, every route by role and scope, merge and unmerge by a
supervisor, and bad input.

One hub with ``agent_scope = "own"``: Maria writes on the "shop" channel in Spanish (assigned
to ana.agent) and in Portuguese (assigned to bruno), and on "shop2" (waiting: nobody is free);
Jo writes on "shop" (waiting). The api channel's sender ids are no email, phone or buyer id, so
only the same sender on one instance links by itself: Maria's "shop2" contact is a person of
its own until a supervisor merges it.
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, TEXTS, routing_config

SECOND_CHANNEL = """
[[channels]]
name = "shop2"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "http://127.0.0.1:9/none"
timeout_seconds = 2
"""
UNKNOWN_PERSON = "pe.0000000000000000ffffffffff"


class Hub:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.ids = itertools.count()

    async def call(self, method: str, path: str, token: str | None = ADMIN_TOKEN,
                   **kw: Any) -> tuple[int, Any]:
        headers = {**(auth(token) if token else {}), **kw.pop("headers", {})}
        r = await self.client.request(method, path, headers=headers, **kw)
        return r.status, await r.json()

    async def ok(self, method: str, path: str, token: str = ADMIN_TOKEN, **kw: Any) -> Any:
        status, body = await self.call(method, path, token, **kw)
        assert status == 200, (method, path, body)
        return body

    async def says(self, instance: str, sender: str, thread: str, language: str, *,
                   expect: str, assignee: str | None = None) -> str:
        """A buyer writes; returns the conversation id once routed and linked."""
        r = await self.client.post(f"/webhooks/api/{instance}", **signed_post_args(
            {"id": f"m{next(self.ids)}", "sender": sender, "thread": thread,
             "text": TEXTS[language], "language": language}))
        assert r.status == 200, await r.text()

        async def routed() -> str | None:
            body = await self.ok("GET", "/api/v1/conversations?limit=200")
            for c in body["conversations"]:
                if c["thread_id"] == thread and c["channel_instance"] == instance \
                        and c["status"] == expect and c["assignee"] == assignee:
                    return str(c["id"])
            return None

        return str(await eventually(routed))

    async def history(self, cid: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
        return await self.ok("GET", f"/api/v1/conversations/{cid}/contact", token)  # type: ignore[no-any-return]


def ids(body: dict[str, Any]) -> list[str]:
    return [c["id"] for c in body["conversations"]]


async def test_history_scope_merge_unmerge_and_bad_input(make_config: Any) -> None:
    config = make_config(extra=routing_config("own") + SECOND_CHANNEL)
    async with running_hub(config) as client:
        hub = Hub(client)
        for agent in ("ana.agent", "bruno"):
            await hub.ok("POST", f"/api/v1/agents/{agent}/status", json={"status": "online"})
        maria_es = await hub.says("shop", "maria", "maria-es", "es", expect="assigned",
                                  assignee="ana.agent")
        maria_pt = await hub.says("shop", "maria", "maria-pt", "pt", expect="assigned",
                                  assignee="bruno")
        maria_2 = await hub.says("shop2", "maria", "maria-2", "es", expect="queued")
        jo = await hub.says("shop", "jo", "jo-es", "es", expect="queued")

        # -- the router linked Maria's two "shop" conversations (two threads, maybe two
        # partitions); supervisors and admins see both, newest first ----------------------
        async def both() -> dict[str, Any] | None:
            body = await hub.history(maria_es)
            return body if len(body["conversations"]) == 2 else None

        body = await eventually(both)
        person = body["person"]
        pid = person["id"]
        assert ids(body) == [maria_pt, maria_es] and body["next_cursor"] is None
        assert {c["handle"] for c in person["contacts"]} == {"maria"}
        assert {c["channel_instance"] for c in person["contacts"]} == {"shop"}
        assert person["identifiers"] == [] and person["history"] == []
        for token in (SUPERVISOR_TOKEN, ADMIN_TOKEN):
            assert ids(await hub.history(maria_pt, token)) == [maria_pt, maria_es]
            assert (await hub.ok("GET", f"/api/v1/people/{pid}", token))["id"] == pid
        assert ids(await hub.ok("GET", f"/api/v1/people/{pid}/conversations",
                                SUPERVISOR_TOKEN)) == [maria_pt, maria_es]

        # -- agents: only their own conversations of the person; the rest is 404 ----------
        assert ids(await hub.history(maria_es, AGENT_TOKEN)) == [maria_es]
        assert (await hub.ok("GET", f"/api/v1/people/{pid}", AGENT_TOKEN))["id"] == pid
        assert ids(await hub.ok("GET", f"/api/v1/people/{pid}/conversations",
                                AGENT_TOKEN)) == [maria_es]
        assert ids(await hub.ok("GET", f"/api/v1/people/{pid}/conversations",
                                BRUNO_TOKEN)) == [maria_pt]
        status, body = await hub.call("GET", f"/api/v1/conversations/{maria_pt}/contact",
                                      AGENT_TOKEN)
        assert status == 404 and body["error"]["message"] == "no such conversation"
        jo_pid = (await hub.history(jo))["person"]["id"]
        assert jo_pid != pid
        for path in (f"/api/v1/people/{jo_pid}", f"/api/v1/people/{jo_pid}/conversations"):
            status, body = await hub.call("GET", path, AGENT_TOKEN)  # ana sees none of Jo's
            assert status == 404 and body["error"]["message"] == "no such person", path
            await hub.ok("GET", path, SUPERVISOR_TOKEN)

        # -- paging: keyset cursors, one conversation a page -------------------------------
        page = await hub.ok("GET", f"/api/v1/people/{pid}/conversations?limit=1")
        assert ids(page) == [maria_pt] and page["next_cursor"]
        page = await hub.ok("GET", f"/api/v1/people/{pid}/conversations?limit=1&cursor="
                                   f"{page['next_cursor']}")
        assert ids(page) == [maria_es] and page["next_cursor"] is None

        # -- merge: supervisors only; Maria on shop2 joins her person ----------------------
        p2 = (await hub.history(maria_2))["person"]["id"]
        assert p2 != pid
        status, body = await hub.call("POST", f"/api/v1/people/{pid}/merge", AGENT_TOKEN,
                                      json={"person": p2})
        assert status == 403, body
        merged = await hub.ok("POST", f"/api/v1/people/{pid}/merge", SUPERVISOR_TOKEN,
                              json={"person": p2})
        assert merged["id"] == pid
        assert {c["channel_instance"] for c in merged["contacts"]} == {"shop", "shop2"}
        [event] = merged["history"]
        assert (event["action"], event["by"], event["person"]) == ("merge", "sam", p2)
        assert (await hub.ok("GET", f"/api/v1/people/{p2}"))["id"] == pid  # follows
        assert ids(await hub.history(maria_es)) == [maria_2, maria_pt, maria_es]
        assert ids(await hub.history(maria_es, AGENT_TOKEN)) == [maria_es]

        # -- bad input: clear 4xx, nothing changed -----------------------------------------
        merge = f"/api/v1/people/{pid}/merge"
        for payload, want in (({"person": pid}, 400), ({"person": p2}, 400),
                              ({"person": UNKNOWN_PERSON}, 404), ({"person": "nope"}, 404),
                              ({"person": 5}, 400), ({}, 400),
                              ({"person": p2, "extra": 1}, 400),
                              ({"person": "x" * 65}, 400)):
            status, body = await hub.call("POST", merge, SUPERVISOR_TOKEN, json=payload)
            assert status == want, (payload, body)
        status, body = await hub.call("POST", merge, SUPERVISOR_TOKEN, data=b"{not json",
                                      headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"]["code"] == "invalid_body", body
        status, body = await hub.call("POST", f"/api/v1/people/{pid}/merge",
                                      SUPERVISOR_TOKEN, json={"person": pid})
        assert body["error"]["code"] == "same_person"
        for path in (f"/api/v1/people/{UNKNOWN_PERSON}", "/api/v1/people/0.0123",
                     f"/api/v1/people/{UNKNOWN_PERSON}/conversations",
                     "/api/v1/conversations/0.00ff00ff/contact",
                     "/api/v1/conversations/garbage/contact"):
            status, body = await hub.call("GET", path)
            assert status == 404, (path, body)
        status, body = await hub.call("POST", f"/api/v1/people/{UNKNOWN_PERSON}/merge",
                                      SUPERVISOR_TOKEN, json={"person": pid})
        assert status == 404, body
        status, body = await hub.call("GET", f"/api/v1/people/{pid}/conversations?cursor=zz")
        assert status == 400 and body["error"]["code"] == "invalid_cursor"
        status, body = await hub.call("GET", f"/api/v1/people/{pid}/conversations?limit=0")
        assert status == 400, body
        status, _ = await hub.call("GET", f"/api/v1/people/{pid}", None)
        assert status == 401
        assert ids(await hub.history(maria_es)) == [maria_2, maria_pt, maria_es]

        # -- unmerge: Maria's shop2 contact goes back to a person of its own ----------------
        shop2 = next(c["id"] for c in merged["contacts"] if c["channel_instance"] == "shop2")
        status, body = await hub.call("POST", f"/api/v1/contacts/{shop2}/unmerge",
                                      AGENT_TOKEN)
        assert status == 403, body
        split = await hub.ok("POST", f"/api/v1/contacts/{shop2}/unmerge", SUPERVISOR_TOKEN)
        assert split["id"] not in (pid, p2) and split["split_from"] == pid
        assert [c["id"] for c in split["contacts"]] == [shop2]
        assert [(e["action"], e["by"]) for e in split["history"]] == [("split_from", "sam")]
        assert ids(await hub.history(maria_es)) == [maria_pt, maria_es]
        assert ids(await hub.history(maria_2)) == [maria_2]
        after = await hub.ok("GET", f"/api/v1/people/{pid}")
        assert [e["action"] for e in after["history"]] == ["merge", "unmerge"]
        # The only sender of its person: nothing to split; unknown contacts 404.
        status, body = await hub.call("POST", f"/api/v1/contacts/{shop2}/unmerge",
                                      SUPERVISOR_TOKEN)
        assert status == 409 and body["error"]["code"] == "nothing_to_split", body
        for contact in ("0.00ff00ff", "garbage"):
            status, body = await hub.call("POST", f"/api/v1/contacts/{contact}/unmerge",
                                          SUPERVISOR_TOKEN)
            assert status == 404, body

        # -- the split stays: Maria's next shop2 message joins the split person ------------
        later = await hub.says("shop2", "maria", "maria-3", "es", expect="queued")

        async def joined() -> bool:
            return ids(await hub.history(later)) in ([later, maria_2], [maria_2, later]) \
                and (await hub.history(later))["person"]["id"] == split["id"]

        await eventually(joined)
        assert ids(await hub.history(maria_es)) == [maria_pt, maria_es]
