"""The OpenAPI document is generated from the route table and covers every route; every
error the hub answers has one shape, aiohttp's own 404/405/413 included; responses carry
typed fields."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from hub.app import build_app
from hub.auth import UNAUTHENTICATED_PATHS, TokenIndex, make_auth_middleware
from hub.openapi import build_openapi, undocumented
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, running_hub

ROUTING = """
[routing]
languages = ["es", "pt", "en"]

[[routing.agents]]
id = "ana.agent"
languages = { es = 5 }
capacity = { chat = 4, email = 12 }
"""


def _routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            out.add((route.method.lower(), route.resource.canonical))
    return out


def test_every_route_is_documented_and_nothing_else(make_config: Any) -> None:
    app = build_app(make_config())
    assert undocumented(app) == []
    doc = build_openapi(app)
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    routes = _routes(app)
    webhooks = ("/webhooks/{type}/{instance}", "/webhooks/{type}/{instance}/{path}")
    for webhook in webhooks:  # catch-all routes, documented per method
        assert ("*", webhook) in routes
    per_method = {(m, w) for w in webhooks for m in ("post", "get")}
    assert {(m, p) for m, p in routes if m != "*"} | per_method == documented


def test_a_route_without_a_description_is_reported() -> None:
    app = web.Application()

    async def stray(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/api/v1/stray", stray)
    assert undocumented(app) == ["GET /api/v1/stray"]


def test_document_is_complete_and_consistent(make_config: Any) -> None:
    doc = build_openapi(build_app(make_config()))
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorBody"]["properties"]["error"] == {"$ref":
                                                           "#/components/schemas/ErrorDetail"}
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    missing = {r for r in refs if r.rsplit("/", 1)[-1] not in schemas}
    assert not missing
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method} {path}"
            assert op["summary"] and op["responses"], where
            if path.startswith("/api/") and path not in UNAUTHENTICATED_PATHS:
                assert op["security"] == [{"bearer": []}, {"session": []}], where
                assert "401" in op["responses"], where
            for status, response in op["responses"].items():
                # /readyz's 503 is a health report (status + reason) for load balancers;
                # the survey page answers a buyer's browser, errors included, with a page
                if path.startswith("/survey/"):
                    assert set(response["content"]) == {"text/html"}, where
                elif int(status) >= 400 and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, where
            names = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert names == [part[1:-1] for part in path.split("/") if part.startswith("{")]
    listing = doc["paths"]["/api/v1/conversations"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "limit", "cursor", "before", "status", "channel", "language", "market", "assignee",
        "queue", "mine", "unassigned", "tag", "sla", "sla_due_within"}
    assert set(schemas["ConversationList"]["required"]) == {"conversations", "next_cursor"}


def _is_error(body: Any) -> bool:
    return (isinstance(body, dict) and set(body) == {"error"}
            and set(body["error"]) == {"code", "message"}
            and all(isinstance(v, str) and v for v in body["error"].values()))


async def test_every_error_has_one_shape(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        admin, agent = auth(ADMIN_TOKEN), auth(AGENT_TOKEN)
        big = "x" * (2 * 1024 * 1024)
        cases = [
            ("GET", "/nowhere", {}, None, 404),
            ("GET", "/api/v1/nowhere", admin, None, 404),
            ("DELETE", "/api/v1/conversations", admin, None, 405),
            ("PATCH", "/healthz", {}, None, 405),
            ("GET", "/api/v1/conversations", {}, None, 401),
            ("GET", "/api/v1/conversations", {"Authorization": "Bearer nope"}, None, 401),
            ("GET", "/api/v1/quarantine", agent, None, 403),
            ("GET", "/api/v1/conversations?limit=0", admin, None, 400),
            ("GET", "/api/v1/conversations/0.00ff", admin, None, 404),
            ("POST", "/api/v1/conversations/0.00ff/replies", admin, b"{", 400),
            ("POST", "/api/v1/conversations/0.00ff/replies", admin, big.encode(), 413),
            ("PUT", "/api/v1/agents/x", admin, b"[1]", 400),
            ("POST", "/api/v1/dlq/0.00ff/retry", admin, None, 404),
            ("POST", "/webhooks/api/nope", {}, b"{}", 404),
            ("POST", "/webhooks/telegram/shop", {}, b"{}", 404),
            ("PUT", "/webhooks/api/shop", {}, b"{}", 405),
            ("POST", "/webhooks/api/shop", {}, b"{}", 401),
            ("POST", "/webhooks/api/shop", {"X-Inboxhub-Signature": "sha256=00"},
             big.encode(), 413),
        ]
        for method, path, headers, body, status in cases:
            data = io.BytesIO(body) if body is not None and len(body) > 1024 else body
            r = await client.request(method, path, headers=headers, data=data)
            assert r.status == status, (method, path, await r.text())
            assert r.content_type == "application/json", (method, path)
            payload = await r.json()
            assert _is_error(payload), (method, path, payload)
            if status == 405:
                assert r.headers.get("Allow"), (method, path)
            if status == 401 and path.startswith("/api/"):
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await client.request("DELETE", "/api/v1/conversations", headers=admin)
        assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_unexpected_failures_are_shaped_too() -> None:
    """A bug is a 500 and Redis down a 503 with Retry-After, in the same shape."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def redis_down(request: web.Request) -> web.Response:
        raise RedisConnectionError("gone")

    app = web.Application(middlewares=[make_auth_middleware(TokenIndex([]))])
    app.router.add_get("/broken", broken)
    app.router.add_get("/redis", redis_down)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/broken")
        assert r.status == 500 and _is_error(await r.json())
        assert "bug" not in (await r.text()), "internals stay in the log"
        r = await client.get("/redis")
        assert r.status == 503 and _is_error(await r.json())
        assert r.headers["Retry-After"] == "1"


async def test_agent_state_is_typed(make_config: Any) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        r = await client.post("/api/v1/agents/ana.agent/status", json={"status": "online"},
                              headers=auth(AGENT_TOKEN))
        assert r.status == 200
        r = await client.get("/api/v1/agents", headers=auth(ADMIN_TOKEN))
        [entry] = (await r.json())["agents"]
        state = entry["state"]
        assert state["capacity"] == {"chat": 4, "email": 12}
        assert state["load"] == {"chat": 0, "email": 0}
        assert state["weight"] == 1 and state["status"] == "online"
        assert isinstance(state["idle_since"], float)
        assert not any(":" in key for key in state)
        r = await client.get("/api/v1/queues", headers=auth(ADMIN_TOKEN))
        pools = (await r.json())["pools"]
        assert all(isinstance(p["step"], int) and isinstance(p["online_agents"], int)
                   for p in pools)


@pytest.mark.parametrize("path", ["/api/v1/openapi.json"])
async def test_the_document_is_served_without_a_token(make_config: Any, path: str) -> None:
    async with running_hub(make_config()) as client:
        r = await client.get(path)
        assert r.status == 200
        assert (await r.json())["paths"]["/api/v1/conversations"]["get"]["summary"]
