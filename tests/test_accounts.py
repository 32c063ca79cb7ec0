"""Password sign-in against the real app and Redis: cookie sessions, CSRF, failed-login limits,
sign-out, account administration, and scope for a signed-in agent (hub/accounts_api.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from storage.accounts import AccountStore, WeakPassword
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, running_hub
from tests.test_api_scope import ROLES, SUPERVISOR_TOKEN, Hub, routing_config

PASSWORD = "correct horse battery staple"
LIMITS = """
[api]
agent_scope = "pools"
login_failures_per_account = 3
login_failures_per_ip = 6
login_window_minutes = 1
"""


@pytest.fixture
async def client(make_config: Any) -> AsyncIterator[TestClient]:
    async with running_hub(make_config(extra=LIMITS + routing_config(None))) as c:
        yield c


async def create(client: TestClient, account_id: str = "ana.agent", role: str = "agent",
                 password: str = PASSWORD) -> dict[str, Any]:
    r = await client.post("/api/v1/accounts", headers=auth(ADMIN_TOKEN),
                          json={"id": account_id, "name": "Ana", "role": role,
                                "password": password})
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def login(client: TestClient, username: str = "ana.agent",
                password: str = PASSWORD) -> tuple[int, Any, Any]:
    r = await client.post("/api/v1/auth/login",
                          json={"username": username, "password": password})
    return r.status, await r.json(), r


def session_cookie(client: TestClient) -> str | None:
    for cookie in client.session.cookie_jar:
        if cookie.key == "inboxhub_session":
            return cookie.value
    return None


async def test_sign_in_sets_a_strict_http_only_cookie_and_answers_who_i_am(
        client: TestClient) -> None:
    await create(client)
    status, body, response = await login(client)
    assert status == 200, body
    assert body["agent_id"] == "ana.agent" and body["role"] == "agent"
    set_cookie = response.headers["Set-Cookie"]
    assert "inboxhub_session=" in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain http to a hub without an https public_url
    r = await client.get("/api/v1/me")
    me = await r.json()
    assert r.status == 200 and me["agent_id"] == "ana.agent"
    assert me["csrf_token"] == body["csrf_token"]
    cookie = session_cookie(client)
    assert cookie is not None and len(cookie) >= 40


async def test_cookie_behind_https_is_secure(make_config: Any) -> None:
    loaded = make_config(extra=LIMITS + routing_config(None),
                         overrides={"hub": {"public_url": "https://inbox.tienda.example"}})
    async with running_hub(loaded) as client:
        await create(client)
        status, body, response = await login(client)
        assert status == 200, body
        assert "Secure" in response.headers["Set-Cookie"]


async def test_changes_need_the_sessions_csrf_token(client: TestClient) -> None:
    await create(client)
    _, body, _ = await login(client)
    path = "/api/v1/agents/ana.agent/status"
    r = await client.post(path, json={"status": "online"})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
    r = await client.post(path, json={"status": "online"},
                          headers={"X-CSRF-Token": body["csrf_token"][:-1] + "x"})
    assert r.status == 403
    r = await client.post(path, json={"status": "online"},
                          headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status == 200, await r.text()
    # a bearer token needs none (integrations), and reads need none
    r = await client.get("/api/v1/conversations")
    assert r.status == 200


async def test_a_signed_in_agent_sees_exactly_what_their_token_sees(
        client: TestClient) -> None:
    hub = Hub(client)
    convs = await hub.seed()
    await create(client)  # ana.agent: the agent AGENT_TOKEN names
    assert (await login(client))[0] == 200
    by_cookie = await (await client.get("/api/v1/conversations")).json()
    by_token = await (await client.get("/api/v1/conversations",
                                       headers=auth(AGENT_TOKEN))).json()
    ids = {c["id"] for c in by_cookie["conversations"]}
    assert ids == {c["id"] for c in by_token["conversations"]}
    assert ids == {convs["mine"], convs["pool"]}
    r = await client.get(f"/api/v1/conversations/{convs['theirs']}")
    assert r.status == 404  # out of scope reads like an unknown id
    r = await client.get("/api/v1/accounts")
    assert r.status == 403  # an agent is no admin


async def test_unknown_wrong_and_disabled_answer_alike(client: TestClient) -> None:
    await create(client)
    answers = []
    for username, password in (("ana.agent", "wrong password here"),
                               ("nobody", PASSWORD)):
        status, body, _ = await login(client, username, password)
        answers.append((status, body))
    r = await client.post("/api/v1/accounts/ana.agent/disable", headers=auth(ADMIN_TOKEN))
    assert r.status == 200 and (await r.json())["enabled"] is False
    status, body, _ = await login(client)
    answers.append((status, body))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0] == 401 and answers[0][1]["error"]["code"] == "invalid_credentials"


async def test_failed_sign_ins_are_limited_per_account_and_per_address(
        client: TestClient) -> None:
    await create(client)
    await create(client, "bruno")
    for _ in range(3):
        assert (await login(client, "ana.agent", "not the password"))[0] == 401
    status, body, response = await login(client)  # even the right password now waits
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # another account from the same address still signs in, until the address's limit
    status, _, _ = await login(client, "bruno")
    assert status == 200
    for n in range(3):
        assert (await login(client, f"guess{n}", "not the password"))[0] == 401
    status, _, _ = await login(client, "bruno")
    assert status == 429


async def test_sign_out_and_sign_out_everywhere(client: TestClient, make_config: Any) -> None:
    await create(client)
    _, first, _ = await login(client)
    first_cookie = session_cookie(client)
    r = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": first["csrf_token"]})
    assert r.status == 200
    assert (await client.get("/api/v1/me", cookies={"inboxhub_session": first_cookie or ""},
                             )).status == 401

    # two browsers: signing out everywhere from one ends both
    await login(client)
    one_cookie = session_cookie(client)
    _, two, _ = await login(client)
    two_cookie = session_cookie(client)
    assert one_cookie != two_cookie
    client.session.cookie_jar.clear()
    for cookie in (one_cookie, two_cookie):
        r = await client.get("/api/v1/me", cookies={"inboxhub_session": cookie or ""})
        assert r.status == 200
    r = await client.post("/api/v1/auth/logout-everywhere",
                          cookies={"inboxhub_session": two_cookie or ""},
                          headers={"X-CSRF-Token": two["csrf_token"]})
    assert r.status == 200
    client.session.cookie_jar.clear()
    for cookie in (one_cookie, two_cookie):
        r = await client.get("/api/v1/me", cookies={"inboxhub_session": cookie or ""})
        assert r.status == 401


async def test_a_new_password_or_disabling_ends_every_session(client: TestClient) -> None:
    await create(client)
    _, body, _ = await login(client)
    cookie = session_cookie(client)
    # one's own password: only with the current one
    r = await client.post("/api/v1/accounts/ana.agent/password",
                          json={"password": "a brand new passphrase"},
                          headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status == 403
    r = await client.post("/api/v1/accounts/ana.agent/password",
                          json={"password": "a brand new passphrase",
                                "current_password": PASSWORD},
                          headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status == 200, await r.text()
    client.session.cookie_jar.clear()
    assert (await client.get("/api/v1/me",
                             cookies={"inboxhub_session": cookie or ""})).status == 401
    status, _, _ = await login(client, password="a brand new passphrase")
    assert status == 200
    cookie = session_cookie(client)
    r = await client.post("/api/v1/accounts/ana.agent/disable", headers=auth(ADMIN_TOKEN))
    assert r.status == 200
    assert (await client.get("/api/v1/me",
                             cookies={"inboxhub_session": cookie or ""})).status == 401
    r = await client.post("/api/v1/accounts/ana.agent/enable", headers=auth(ADMIN_TOKEN))
    assert r.status == 200 and (await r.json())["enabled"] is True
    assert (await login(client, password="a brand new passphrase"))[0] == 200


async def test_account_administration_by_role_and_bad_input(client: TestClient) -> None:
    body = {"id": "zoe", "name": "Zoé", "role": "supervisor", "password": PASSWORD}
    for role, token in ROLES.items():
        if role == "admin":
            continue
        r = await client.post("/api/v1/accounts", headers=auth(token), json=body)
        assert r.status == 403, role
        r = await client.get("/api/v1/accounts", headers=auth(token))
        assert r.status == 403, role
    created = await create(client, "zoe", "supervisor")
    assert created["role"] == "supervisor" and "hash" not in created
    r = await client.post("/api/v1/accounts", headers=auth(ADMIN_TOKEN), json=body)
    assert r.status == 409
    r = await client.get("/api/v1/accounts", headers=auth(ADMIN_TOKEN))
    listed = await r.json()
    assert [a["id"] for a in listed["accounts"]] == ["zoe"]
    assert "hash" not in str(listed) and PASSWORD not in str(listed)
    bad = [
        {**body, "id": "new", "password": "short"},               # weak
        {**body, "id": "../../etc", "password": PASSWORD},        # not an id
        {**body, "id": "new", "role": "root"},                    # no such role
        {**body, "id": "new", "password": "x" * 2000},            # too long
        {**body, "id": "new", "extra": 1},                        # unknown field
        {"id": 5, "name": [], "role": None, "password": {}},      # wrong types
    ]
    for sent in bad:
        r = await client.post("/api/v1/accounts", headers=auth(ADMIN_TOKEN), json=sent)
        assert r.status == 400, (sent, await r.text())
    r = await client.post("/api/v1/accounts/nobody/disable", headers=auth(ADMIN_TOKEN))
    assert r.status == 404
    r = await client.post("/api/v1/accounts/zoe/password", headers=auth(SUPERVISOR_TOKEN),
                          json={"password": "another passphrase"})
    assert r.status == 403  # the supervisor token is "sam", not zoe


async def test_hostile_sign_in_requests(client: TestClient) -> None:
    await create(client)
    r = await client.post("/api/v1/auth/login", data="username=ana.agent&password=x",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415  # no cross-site form sign-in
    r = await client.post("/api/v1/auth/login", data=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert r.status == 400
    r = await client.post("/api/v1/auth/login", data=b"x" * 100_000,
                          headers={"Content-Type": "application/json"})
    assert r.status == 413
    r = await client.post("/api/v1/auth/login",
                          json={"username": "ana.agent", "password": "p" * 5000})
    assert r.status == 400
    r = await client.get("/api/v1/me", cookies={"inboxhub_session": "forged" * 40})
    assert r.status == 401
    r = await client.get("/api/v1/me", cookies={"inboxhub_session": ""})
    assert r.status == 401


async def test_sessions_end_when_idle_and_at_their_maximum_age(redis: Redis) -> None:
    accounts = AccountStore(redis, idle_seconds=1, max_seconds=3600)
    account = await accounts.create("lu", name="Lu", role="agent", password=PASSWORD)
    idle, _ = await accounts.open_session(account)
    assert await accounts.session(idle) is not None
    await asyncio.sleep(2.2)
    assert await accounts.session(idle) is None

    short = AccountStore(redis, idle_seconds=3600, max_seconds=1)
    aged, _ = await short.open_session(account)
    assert await short.session(aged) is not None
    await asyncio.sleep(1.2)
    assert await short.session(aged) is None
    with pytest.raises(WeakPassword):
        await accounts.create("lu2", name="Lu", role="agent", password="short")
    # nothing in Redis holds the session id or the password in the clear
    dumped = b"".join(await redis.keys("*"))
    for key in await redis.keys("*"):
        if await redis.type(key) == b"hash":
            dumped += b"".join((await redis.hgetall(key)).values())
    assert PASSWORD.encode() not in dumped and aged.encode() not in dumped


def test_the_agents_cli_manages_accounts_without_a_password_in_argv(
        tmp_path: Any, redis_server: Any, hub_env: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from hub.cli import main
    from tests.conftest import write_config

    config = str(write_config(tmp_path, redis_server.url))

    def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(["--config", config, "agents", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert cli("add", "lucia", "--name", "Lucía", "--role", "supervisor",
               stdin=PASSWORD + "\n")[0] == 0
    code, _, err = cli("add", "lucia", "--name", "Lucía", stdin=PASSWORD + "\n")
    assert code == 2 and "exists" in err
    code, _, err = cli("add", "joao", "--name", "João", stdin="short\n")
    assert code == 2 and "12 characters" in err
    code, out, _ = cli("list")
    assert code == 0 and "lucia\tsupervisor\tenabled\tLucía" in out and "joao" not in out
    assert PASSWORD not in out
    assert cli("passwd", "lucia", stdin="another long passphrase\n")[0] == 0
    assert cli("disable", "lucia")[0] == 0
    code, out, _ = cli("list", "--json")
    assert code == 0 and '"enabled":false' in out
    assert cli("enable", "lucia")[0] == 0
    code, _, err = cli("passwd", "nobody", stdin=PASSWORD + "\n")
    assert code == 1 and "nobody" in err
    with pytest.raises(SystemExit):
        cli("add", "../etc/passwd", "--name", "x")

    async def verify() -> bool:
        client = Redis.from_url(redis_server.url)
        try:
            found = await AccountStore(client).verify("lucia", "another long passphrase")
            return found is not None and found.role == "supervisor"
        finally:
            await client.aclose()

    assert asyncio.run(verify())
