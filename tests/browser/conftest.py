"""The web inbox in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser), one browser for the whole session and one running hub per module.

Without /usr/bin/chromium or the playwright package the tests skip with the reason; under
CI=true a missing one fails them (``tests.conftest.need_service``), as Redis and Dovecot do.
Everything runs on one event loop for the session (``loop_scope="session"``) so the browser
and the module's hub outlive a single test.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from hub.app import build_app
from hub.config import load_config
from storage.store import Store
from tests.conftest import (
    ADMIN_TOKEN,
    AGENT_TOKEN,
    TEST_SECRET,
    RedisServer,
    need_service,
    write_config,
)
from tests.helpers import OperatorEndpoint, auth, eventually, signed_post_args

try:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the chromium fixture skips (or fails under CI=true) with the reason
    PlaywrightTimeout = TimeoutError  # type: ignore[misc,assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "correct horse battery staple"
SUPERVISOR_TOKEN = "test-browser-supervisor-token"
DAY = 86400.0

# Ana serves Spanish and Portuguese; Carla English (a queue Ana is not eligible for). Scope
# "pools": Ana sees her own conversations and those waiting in her queues, never Carla's.
ROUTING = f"""
[api]
agent_scope = "pools"

[[api.tokens]]
name = "sam"
role = "supervisor"
token_sha256 = "{hashlib.sha256(SUPERVISOR_TOKEN.encode()).hexdigest()}"

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

[[routing.queues]]
name = "en"
[[routing.queues.steps]]
languages = {{ en = 3 }}

[[routing.rules]]
name = "spanish"
queue = "es"
when = {{ language = ["es"] }}

[[routing.rules]]
name = "portuguese"
queue = "pt"
when = {{ language = ["pt"] }}

[[routing.rules]]
name = "english"
queue = "en"
when = {{ language = ["en"] }}

[[routing.agents]]
id = "ana.agent"
name = "Ana Souza"
languages = {{ es = 5, pt = 5 }}
capacity = {{ chat = 50 }}

[[routing.agents]]
id = "carla"
name = "Carla Reyes"
languages = {{ en = 5 }}
capacity = {{ chat = 50 }}
"""

# The API channel with a 24-hour reply window and one approved Spanish template: outside
# the window the page must offer the template picker.
TEMPLATES = """
[[channels.settings.templates]]
name = "order_update"
language = "es"
parameters = ["nombre", "pedido"]
body = "Hola {{1}}, su pedido {{2}} salió hoy."
"""

CANNED = (
    ("greeting", "es", "Hola {buyer_name}, soy {agent_name}. Ya reviso su pedido."),
    ("greeting", "pt", "Olá {buyer_name}, aqui é {agent_name}. Já vou verificar o seu pedido."),
    ("greeting", "en", "Hello {buyer_name}, this is {agent_name}. Checking your order now."),
)


class BrowserHub:
    """A running hub with accounts, canned replies and the operator's endpoint, plus the
    calls the browser tests make around the page (a buyer writing, the record's state)."""

    def __init__(self, client: TestClient, operator: OperatorEndpoint, redis: Redis) -> None:
        self.client = client
        self.operator = operator
        self.redis = redis
        self.url = str(client.make_url("/inbox"))

    async def call(self, method: str, path: str, token: str = ADMIN_TOKEN,
                   body: Any = None) -> Any:
        r = await self.client.request(method, path, headers=auth(token), json=body)
        assert r.status < 300, (method, path, r.status, await r.text())
        return await r.json()

    async def write(self, sender: str, text: str, **fields: Any) -> None:
        """The buyer ``sender`` writes through the API channel's signed webhook."""
        body = {"id": f"m-{uuid.uuid4().hex}", "sender": sender, "text": text, **fields}
        r = await self.client.post("/webhooks/api/shop", **signed_post_args(body, TEST_SECRET))
        assert r.status == 200, await r.text()

    async def conversation_of(self, sender: str, *, assignee: str | None = "ana.agent",
                              status: str = "assigned") -> dict[str, Any]:
        """The conversation of ``sender`` once routing has placed it."""

        async def routed() -> dict[str, Any] | None:
            listed = await self.call("GET", "/api/v1/conversations?limit=200")
            for c in listed["conversations"]:
                if c["thread_id"] == sender and c["assignee"] == assignee \
                        and c["status"] == status:
                    return c  # type: ignore[no-any-return]
            return None

        return await eventually(routed)  # type: ignore[no-any-return]

    async def buyer(self, sender: str, text: str, *, language: str = "es",
                    assignee: str | None = "ana.agent", **fields: Any) -> dict[str, Any]:
        await self.write(sender, text, language=language, **fields)
        return await self.conversation_of(sender, assignee=assignee)

    async def conversation(self, cid: str) -> dict[str, Any]:
        return (await self.call("GET", f"/api/v1/conversations/{cid}"))[  # type: ignore[no-any-return]
            "conversation"]

    async def age(self, cid: str, seconds: float) -> None:
        """Move the buyer's last message ``seconds`` into the past (the reply window)."""
        store = Store(self.redis, partitions=2)
        keys = store.keys_for(cid)
        assert keys is not None
        await self.redis.hset(keys.conversation(cid), "last_inbound_at",
                              repr(time.time() - seconds))

    async def sent(self, check: Any) -> dict[str, Any]:
        """The reply the operator's system received that ``check`` accepts."""

        async def found() -> dict[str, Any] | None:
            return next((m for m in self.operator.received if check(m)), None)

        return await eventually(found)  # type: ignore[no-any-return]


@pytest.fixture
def _no_leftover_tasks() -> None:
    """Overrides the per-test leftover-task check: here the module's hub and the session's
    browser run on the session loop between tests by design (they are owned by their
    fixtures, which stop them and await their tasks at the end)."""
    return None


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium and the playwright client, or a skip (a failure under CI=true)."""
    if importlib.util.find_spec("playwright") is None:
        need_service("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        need_service(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hub(request: pytest.FixtureRequest, browser: Any, redis_server: RedisServer,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserHub]:
    """One hub for the module (a clean Redis first), with Ana and Sam able to sign in; a
    module's ``HUB_EXTRA`` is appended to its config (TOML)."""
    async with AsyncExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("IH_TEST_SECRET", TEST_SECRET)
        patch.setenv("IH_TEST_ADMIN", ADMIN_TOKEN)
        patch.setenv("IH_TEST_AGENT", AGENT_TOKEN)
        redis = Redis(unix_socket_path=redis_server.socket, socket_timeout=10)
        stack.push_async_callback(redis.aclose)
        await redis.flushall()
        operator = await stack.enter_async_context(OperatorEndpoint())
        loaded = load_config(write_config(
            tmp_path_factory.mktemp("browser-hub"), redis_server.url, outbound_url=operator.url,
            extra=ROUTING + getattr(request.module, "HUB_EXTRA", ""), channel_extra=TEMPLATES,
            overrides={"channel": {"reply_window_seconds": DAY}}))
        client = TestClient(TestServer(build_app(loaded)))
        await client.start_server()
        stack.push_async_callback(client.close)
        running = BrowserHub(client, operator, redis)
        for account, name, role in (("ana.agent", "Ana Souza", "agent"),
                                    ("sam", "Sam Supervisor", "supervisor")):
            await running.call("POST", "/api/v1/accounts", body={
                "id": account, "name": name, "role": role, "password": PASSWORD})
        for agent in ("ana.agent", "carla"):
            await running.call("POST", f"/api/v1/agents/{agent}/status",
                               body={"status": "online"})
        for name, language, text in CANNED:
            await running.call("POST", "/api/v1/canned-replies",
                               body={"name": name, "language": language, "text": text})
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser profile per test (cookies, storage), English, in São Paulo time."""
    ctx = await browser.new_context(locale="en-GB", timezone_id="America/Sao_Paulo",
                                    viewport={"width": 1400, "height": 860})
    ctx.set_default_timeout(10_000)
    errors: list[str] = []
    ctx.on("weberror", lambda error: errors.append(str(error.error)))
    ctx.on("console", lambda message: print("console:", message.type, message.text))
    try:
        yield ctx
    finally:
        await ctx.close()
    assert errors == [], "the page raised errors"


async def sign_in(page: Any, hub: BrowserHub, username: str = "ana.agent",
                  password: str = PASSWORD) -> None:
    await page.goto(hub.url)
    await page.wait_for_selector("body[data-ready='true']")
    await page.fill("#signin-username", username)
    await page.fill("#signin-password", password)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])")
    await page.wait_for_selector("#live-status:has-text('Live updates on'), "
                                 "#live-status:has-text('实时更新已开启')")


def axe_source() -> str:
    """axe-core as the installed axe-playwright-python package carries it (never committed)."""
    return (importlib.resources.files("axe_playwright_python") / "axe.min.js").read_text(
        encoding="utf-8")


async def run_axe(page: Any) -> dict[str, Any]:
    """axe-core's WCAG 2.1 A/AA rules on the page as it is now. Injected through the
    DevTools protocol (page.evaluate), which the page's CSP does not govern."""
    await page.evaluate(axe_source())
    result = await page.evaluate(
        "async () => JSON.stringify(await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}, resultTypes: ['violations']}))")
    return json.loads(result)  # type: ignore[no-any-return]


async def open_conversation(page: Any, conversation_id: str) -> None:
    """Click the conversation in the list until it is the one shown: the list re-sorts live
    as buyers write, so an item can move between finding it and the click landing."""
    selected = f"#messages[data-conversation='{conversation_id}']"
    for _ in range(5):
        await page.locator(f"#conversation-list [data-id='{conversation_id}']").click()
        try:
            await page.wait_for_selector(selected, timeout=2000)
            return
        except PlaywrightTimeout:
            continue
    await page.wait_for_selector(selected)
