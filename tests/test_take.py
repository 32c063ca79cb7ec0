""""Assign to me": an agent takes a conversation waiting in a queue step they serve; one that
does not serve it, a conversation someone has, and a race between two takers are refused."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from tests.conftest import ADMIN_TOKEN
from tests.helpers import running_hub
from tests.test_api_scope import BRUNO_TOKEN, Hub, routing_config

ZOE_TOKEN = "test-zoe-token-take"
LUIS_TOKEN = "test-luis-token-take"


def _tokens() -> str:
    out = ""
    for name, token in (("zoe", ZOE_TOKEN), ("luis", LUIS_TOKEN)):
        digest = hashlib.sha256(token.encode()).hexdigest()
        out += f'\n[[api.tokens]]\nname = "{name}"\nrole = "agent"\ntoken_sha256 = "{digest}"\n'
    return out


LUIS = """
[[routing.agents]]
id = "luis"
languages = { es = 4 }
capacity = { chat = 1 }
weight = 0
"""


async def test_an_agent_takes_a_waiting_conversation_once(make_config: Any) -> None:
    config = make_config(extra=routing_config("pools") + _tokens() + LUIS)
    async with running_hub(config) as client:
        hub = Hub(client)
        # Weight 0 agents are never picked by routing, so the conversation waits for them.
        for agent in ("zoe", "luis", "bruno"):
            await hub.online(agent)
        cid = await hub.buyer("es", expect="queued")

        async def take(token: str) -> tuple[int, Any]:
            return await hub.call("POST", f"/api/v1/conversations/{cid}/take", token)

        status, body = await take(BRUNO_TOKEN)  # serves Portuguese only: not in scope
        assert status == 403, body
        zoe, luis = await asyncio.gather(take(ZOE_TOKEN), take(LUIS_TOKEN))
        statuses = sorted([zoe[0], luis[0]])
        assert statuses in ([200, 403], [200, 409]), (zoe, luis)
        winner = "zoe" if zoe[0] == 200 else "luis"
        assert (zoe if winner == "zoe" else luis)[1]["state"]["assignee"] == winner
        assert (await hub.state(cid))["assignee"] == winner
        # taken: nobody else can take it now, not even its holder again
        status, body = await take(ZOE_TOKEN if winner == "luis" else LUIS_TOKEN)
        assert status in (403, 409), body
        status, body = await take(ZOE_TOKEN if winner == "zoe" else LUIS_TOKEN)
        assert status == 409 and body["error"]["code"] == "not_waiting"
        # unknown id: 404; an admin who is no routing agent: refused, nothing changes
        status, _ = await hub.call("POST", "/api/v1/conversations/0.ffff/take", ZOE_TOKEN)
        assert status == 404
        status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/take",
                                      ADMIN_TOKEN)
        assert status == 409 and body["error"]["code"] == "not_waiting"
        assert (await hub.state(cid))["assignee"] == winner
