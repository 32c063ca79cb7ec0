"""Supervisors edit agents' profiles; only admins create agents (PUT /api/v1/agents/{id})."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, running_hub
from tests.test_api_scope import SUPERVISOR_TOKEN, routing_config


async def test_supervisors_edit_profiles_admins_create(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config(None))) as client:
        profile = {"languages": {"es": 5, "pt": 3}, "markets": ["MX", "BR"],
                   "capacity": {"chat": 4}}
        r = await client.put("/api/v1/agents/lu", json=profile, headers=auth(SUPERVISOR_TOKEN))
        assert r.status == 200, await r.text()
        r = await client.get("/api/v1/agents", headers=auth(SUPERVISOR_TOKEN))
        lu = next(a for a in (await r.json())["agents"] if a["profile"]["id"] == "lu")
        assert lu["profile"]["languages"] == {"es": 5, "pt": 3}
        assert lu["profile"]["markets"] == ["MX", "BR"]

        r = await client.put("/api/v1/agents/newcomer", json=profile,
                             headers=auth(SUPERVISOR_TOKEN))
        assert r.status == 403 and "admin" in (await r.json())["error"]["message"]
        r = await client.put("/api/v1/agents/lu", json=profile, headers=auth(AGENT_TOKEN))
        assert r.status == 403
        r = await client.put("/api/v1/agents/newcomer", json=profile,
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 200
        # a bad profile is a 400 for supervisors too, and changes nothing
        r = await client.put("/api/v1/agents/lu", json={"languages": {"es": 9}},
                             headers=auth(SUPERVISOR_TOKEN))
        assert r.status == 400
