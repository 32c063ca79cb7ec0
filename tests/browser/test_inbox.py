"""The web inbox in chromium against a running hub: sign-in, a buyer's message arriving live,
replying (delivered through the API channel's operator endpoint), notes, tags, snooze,
reopen, resolve, canned replies in Spanish and Portuguese, the window-closed template flow,
Chinese, keyboard-only work, hostile buyer text and names, scope, and axe-core's WCAG checks.

Every buyer message enters through the API channel's signed webhook, every check of what
the hub did goes through the API: the page is tested from outside, like an agent uses it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import (
    DAY,
    PASSWORD,
    BrowserHub,
    open_conversation,
    run_axe,
    sign_in,
)
from tests.helpers import eventually, signed_post_args

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _open(page: Any, conversation: dict[str, Any]) -> None:
    await open_conversation(page, conversation["id"])


async def test_sign_in_wrong_password_then_sign_out(hub: BrowserHub, context: Any) -> None:
    page = await context.new_page()
    await page.goto(hub.url)
    await page.wait_for_selector("body[data-ready='true']")
    assert await page.is_visible("#signin-form")
    await page.fill("#signin-username", "ana.agent")
    await page.fill("#signin-password", "not the password at all")
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#signin-error:has-text('Wrong username or password.')")
    assert await page.is_hidden("#app")

    await page.fill("#signin-password", PASSWORD)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])")
    assert "ana.agent" in await page.text_content("#whoami")
    assert "America/Sao_Paulo" in await page.text_content("#whoami")
    # A reload keeps the session (the cookie) and gets the CSRF token back from /me.
    await page.reload()
    await page.wait_for_selector("#app:not([hidden])")
    await page.click("#signout")
    await page.wait_for_selector("#signin:not([hidden])")
    cookies = await context.cookies()
    assert [c for c in cookies if c["name"] == "inboxhub_session"] == []
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    assert await page.is_visible("#signin-form")


async def test_a_buyer_message_arrives_live_and_the_reply_is_delivered(
        hub: BrowserHub, context: Any) -> None:
    page = await context.new_page()
    await sign_in(page, hub)
    # Nothing reloads from here on: the list and the conversation follow the event stream.
    conversation = await hub.buyer("live-buyer", "Hola, ¿llegó mi paquete?",
                                   name="Lucía Live", market="MX", order_id="MX-2041")
    item = page.locator(f"#conversation-list [data-id='{conversation['id']}']")
    await item.wait_for()
    assert "Lucía Live" in await item.text_content()
    badges = await item.locator(".badge").all_text_contents()
    assert {"api", "ES", "MX", "Unread"} <= set(badges)
    await _open(page, conversation)
    assert await page.text_content("#side-market") == "MX"
    assert await page.text_content("#side-order") == "MX-2041"
    assert "Reply window open until" in await page.text_content("#window-state")
    await page.wait_for_selector("#reply-counter:has-text('/ 10000 characters')")

    # A live update re-renders the list; the keyboard focus stays where it was.
    await item.focus()
    other = await hub.buyer("live-other", "Hola, otra consulta")
    await page.locator(f"#conversation-list [data-id='{other['id']}']").wait_for()
    assert await page.evaluate("document.activeElement.dataset.id") == conversation["id"]

    await hub.write("live-buyer", "¿Me avisan, por favor?")
    await page.locator("#messages .message.inbound", has_text="¿Me avisan").wait_for()
    texts = await page.locator("#messages .message-text").all_text_contents()
    assert texts == ["Hola, ¿llegó mi paquete?", "¿Me avisan, por favor?"]

    await page.fill("#reply-text", "")
    await page.type("#reply-text", "Sí, ya salió")
    await page.keyboard.press("Shift+Enter")
    await page.type("#reply-text", "Llega mañana")
    await page.wait_for_selector("#reply-counter:has-text('25 / 10000 characters')")
    assert await page.input_value("#reply-text") == "Sí, ya salió\nLlega mañana"
    await page.keyboard.press("Enter")
    sent = await hub.sent(lambda m: m.get("text") == "Sí, ya salió\nLlega mañana")
    assert sent["thread"] == "live-buyer"
    assert await page.input_value("#reply-text") == ""
    outbound = page.locator("#messages .message.outbound", has_text="Llega mañana")
    await outbound.locator(".delivery", has_text="Sent").wait_for()
    # The operator's system reports delivery: the state changes live.
    message_id = await outbound.get_attribute("data-id")
    stored = await hub.call("GET", f"/api/v1/conversations/{conversation['id']}/messages")
    [mine] = [m for m in stored["messages"] if m["id"] == message_id]
    await hub.client.post("/webhooks/api/shop/status", **signed_post_args(
        {"id": mine["provider_message_id"], "status": "delivered"}))
    await outbound.locator(".delivery", has_text="Delivered").wait_for()


async def test_a_failed_reply_is_visible(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("failing-buyer", "¿Hay descuento?")
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)
    hub.operator.fail_with.extend([(400, {})])  # a permanent refusal: no retries
    await page.fill("#reply-text", "Esto fallará")
    await page.click("#reply-send")
    failed = page.locator("#messages .message.outbound.failed", has_text="Esto fallará")
    await failed.wait_for()
    assert "Failed to send" in await failed.locator(".delivery").text_content()
    # Ana holds the conversation: she retries her own reply (the agent route), once.
    routes: list[str] = []
    page.on("request", lambda r: routes.append(r.url) if r.method == "POST" else None)
    await failed.locator("button.retry").click()
    await hub.sent(lambda m: m.get("text") == "Esto fallará")
    await page.locator("#messages .message.outbound:not(.failed)",
                       has_text="Esto fallará").wait_for()
    retried = [u for u in routes if u.endswith("/retry")]
    assert len(retried) == 1 and f"/conversations/{conversation['id']}/replies/" in retried[0]


async def test_note_tag_snooze_reopen_resolve(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("workflow-buyer", "Quiero cambiar la talla")
    cid = conversation["id"]
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)

    await page.fill("#note-text", "Cliente VIP: cambiar sin coste")
    await page.click("#note-form button")
    note = page.locator("#messages .message.note", has_text="Cliente VIP")
    await note.wait_for()
    assert "Private note by ana.agent" in await note.text_content()
    notes = await hub.call("GET", f"/api/v1/conversations/{cid}/notes")
    assert [n["text"] for n in notes["notes"]] == ["Cliente VIP: cambiar sin coste"]
    assert hub.operator.received == [] or all(
        m.get("text") != "Cliente VIP: cambiar sin coste" for m in hub.operator.received)

    await page.fill("#tag-input", "Talla")
    await page.click("#tag-form button")
    await page.locator("#tag-list .tag", has_text="talla").wait_for()
    assert (await hub.conversation(cid))["tags"] == ["talla"]
    await page.click("#tag-list .tag-remove")
    await page.wait_for_selector("#tag-list .tag", state="detached")
    assert (await hub.conversation(cid))["tags"] == []

    await page.select_option("#snooze-for", "14400")
    await page.click("#action-snooze")
    await page.wait_for_selector("#side-status:has-text('Snoozed')")
    record = await hub.conversation(cid)
    assert record["work_status"] == "snoozed" and record["snoozed_until"] is not None
    await page.click("#action-reopen")
    await page.wait_for_selector("#side-status:has-text('Open')")
    assert (await hub.conversation(cid))["work_status"] == "open"

    await page.click("#action-resolve")
    # Resolved, it leaves the agent's scope ("pools": her open work and her queues).
    await page.wait_for_selector("#conversation-title:has-text('No conversation selected')")
    await page.wait_for_selector(f"#conversation-list [data-id='{cid}']", state="detached")

    async def resolved() -> bool:
        return (await hub.conversation(cid))["status"] == "resolved"

    await eventually(resolved)


async def test_correct_the_language(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("language-buyer", "Olá, tudo bem? Meu pedido não chegou",
                                   language="es")
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)
    await page.fill("#language-input", "pt")
    await page.click("#language-form button")
    await page.wait_for_selector("#side-language:has-text('pt')")

    async def corrected() -> bool:
        return (await hub.conversation(conversation["id"]))["language"] == "pt"

    await eventually(corrected)


async def test_canned_replies_in_spanish_and_portuguese(hub: BrowserHub, context: Any) -> None:
    spanish = await hub.buyer("canned-es", "Hola, ¿tienen la talla M?", name="Marta")
    portuguese = await hub.buyer("canned-pt", "Oi, vocês têm o tamanho M?", name="Paulo",
                                 language="pt")
    page = await context.new_page()
    await sign_in(page, hub)
    for conversation, expected in (
            (spanish, "Hola Marta, soy Ana Souza. Ya reviso su pedido."),
            (portuguese, "Olá Paulo, aqui é Ana Souza. Já vou verificar o seu pedido.")):
        await _open(page, conversation)
        await page.fill("#reply-text", "")
        await page.click("#canned-button")
        await page.wait_for_selector("#canned-dialog[open]")
        items = page.locator("#canned-list .canned-item")
        assert await items.count() == 1
        assert await items.first.locator(".canned-text").text_content() == expected
        await items.first.click()
        await page.wait_for_selector("#canned-dialog", state="hidden")
        assert await page.input_value("#reply-text") == expected
        await page.keyboard.press("Enter")
        await hub.sent(lambda m, text=expected: m.get("text") == text)


async def test_window_closed_template_flow(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("window-buyer", "¿Cuándo llega?")
    await hub.age(conversation["id"], 2 * DAY)
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)
    await page.wait_for_selector("#template-picker:not([hidden])")
    assert await page.is_hidden("#free-reply")
    assert "only an approved template" in await page.text_content("#window-state")
    assert await page.text_content("#template-select option") == "order_update (es)"
    await page.fill("#template-parameter-0", "Ana")
    await page.click("#template-send")
    await page.wait_for_selector("#reply-error:has-text('Fill in every template parameter.')")
    await page.fill("#template-parameter-1", "ZX-1")
    assert await page.text_content("#template-preview") == \
        "Preview: Hola Ana, su pedido ZX-1 salió hoy."
    await page.click("#template-send")
    sent = await hub.sent(lambda m: m.get("template") is not None
                          and m["thread"] == "window-buyer")
    assert sent["template"] == {"name": "order_update", "language": "es",
                                "parameters": ["Ana", "ZX-1"]}
    await page.locator("#messages .message.outbound",
                       has_text="Hola Ana, su pedido ZX-1 salió hoy.").wait_for()


async def test_switch_to_chinese_and_it_stays(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("zh-buyer", "Hola, ¿hacen envíos a Chile?")
    page = await context.new_page()
    await sign_in(page, hub)
    await page.select_option("#ui-language", "zh")
    await page.wait_for_selector("#list-heading:has-text('会话')")
    assert await page.get_attribute("html", "lang") == "zh-CN"
    assert await page.text_content("#signout") == "退出登录"
    await _open(page, conversation)
    assert await page.text_content("#reply-send") == "发送"
    assert await page.text_content("#conversation-title") == "与 zh-buyer 的会话"
    assert "回复窗口开放至" in await page.text_content("#window-state")
    # Dates in Chinese, in the agent's time zone.
    time_text = await page.locator("#messages time").first.text_content()
    assert "年" in time_text
    await page.reload()
    await page.wait_for_selector("#app:not([hidden])")
    assert await page.text_content("#list-heading") == "会话"
    await page.select_option("#ui-language", "en")
    await page.wait_for_selector("#list-heading:has-text('Conversations')")


async def test_keyboard_only(hub: BrowserHub, context: Any) -> None:
    first = await hub.buyer("keys-1", "Primera consulta", name="Teclado Uno")
    second = await hub.buyer("keys-2", "Segunda consulta", name="Teclado Dos")
    page = await context.new_page()
    await sign_in(page, hub)
    await page.select_option("#filter-view", "mine")
    await page.locator("#conversation-list [data-id]").first.wait_for()
    ids = [await b.get_attribute("data-id")
           for b in await page.locator("#conversation-list [data-id]").all()]
    assert ids.index(second["id"]) < ids.index(first["id"])  # most recent first

    await page.locator("#conversation-list [data-id]").first.focus()
    await page.keyboard.press("Escape")
    await page.evaluate("document.activeElement.blur()")
    await page.keyboard.press("j")
    await page.wait_for_selector(f"#messages[data-conversation='{ids[0]}']")
    await page.keyboard.press("j")
    await page.wait_for_selector(f"#messages[data-conversation='{ids[1]}']")
    assert await page.evaluate("document.activeElement.dataset.id") == ids[1]
    await page.keyboard.press("k")
    await page.wait_for_selector(f"#messages[data-conversation='{ids[0]}']")

    await page.keyboard.press("?")
    await page.wait_for_selector("#shortcuts-dialog[open]")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#shortcuts-dialog", state="hidden")

    await page.keyboard.press("/")
    assert await page.evaluate("document.activeElement.id") == "search"
    await page.keyboard.press("Escape")

    await page.keyboard.press("c")
    await page.wait_for_selector("#canned-dialog[open]")
    await page.keyboard.press("Enter")  # the first canned reply has the focus
    await page.wait_for_selector("#canned-dialog", state="hidden")
    assert await page.evaluate("document.activeElement.id") == "reply-text"
    await page.keyboard.press("Enter")
    await hub.sent(lambda m: m.get("thread") == "keys-2"
                   and m.get("text", "").startswith("Hola Teclado Dos"))

    # Tab leaves the reply box; s snoozes, then e resolves the other one.
    await page.keyboard.press("Tab")
    await page.keyboard.press("s")
    await page.wait_for_selector("#side-status:has-text('Snoozed')")
    await page.keyboard.press("j")
    await page.wait_for_selector(f"#messages[data-conversation='{ids[1]}']")
    await page.keyboard.press("e")

    async def resolved() -> bool:
        return (await hub.conversation(ids[1]))["status"] == "resolved"

    await eventually(resolved)
    assert (await hub.conversation(ids[0]))["work_status"] == "snoozed"

    # Every control is reachable with Tab, in the panes' order, and shows its focus.
    await open_conversation(page, ids[0])
    reached = set()
    await page.evaluate("document.activeElement.blur()")
    for _ in range(80):
        await page.keyboard.press("Tab")
        reached.add(await page.evaluate("document.activeElement.id || "
                                        "document.activeElement.dataset.id || ''"))
    assert {"search", "filter-view", "signout", ids[0], "action-resolve", "note-text",
            "tag-input", "language-input"} <= reached
    outline = await page.evaluate(
        "(() => { const b = document.getElementById('search'); b.focus(); "
        "return getComputedStyle(b).outlineStyle; })()")
    assert outline == "solid"


XSS_NAME = "<img src=x onerror=\"window.__xss='name'\">"
XSS_TEXT = ("Hola, mi pedido no llegó todavía <script>window.__xss='script'</script>"
            "<img src=x onerror=\"window.__xss='img'\">"
            "<a href=\"javascript:window.__xss='link'\">click</a>")


async def test_hostile_buyer_text_and_names_stay_inert(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("xss-buyer", XSS_TEXT, name=XSS_NAME)
    page = await context.new_page()
    await sign_in(page, hub)
    await hub.write("xss-buyer", "Hola otra vez, sigo esperando "
                    "<svg onload=\"window.__xss='svg'\"></svg>", language="es")
    item = page.locator(f"#conversation-list [data-id='{conversation['id']}']")
    await item.wait_for()
    assert XSS_NAME in await item.text_content()
    await _open(page, conversation)
    await page.locator("#messages .message-text", has_text="<svg").wait_for()
    texts = await page.locator("#messages .message-text").all_text_contents()
    assert texts[0] == XSS_TEXT
    assert await page.text_content("#conversation-title") == f"Conversation with {XSS_NAME}"
    # The buyer-across-channels panel shows the name as text too.
    await page.locator("#contact-conversations button", has_text=XSS_NAME).wait_for()
    # A note is free text too (another agent's, say): shown as text.
    await page.fill("#note-text", "<b onmouseover=\"window.__xss='note'\">bold</b>")
    await page.click("#note-form button")
    await page.locator("#messages .note", has_text="<b onmouseover").wait_for()
    assert await page.evaluate("window.__xss") is None
    # (the only images are the page's own report charts, img.chart with a fixed src)
    assert await page.evaluate("document.querySelectorAll('img:not(.chart), svg, "
                               "script:not([src]), b, a[href^=javascript]').length") == 0


async def test_an_agent_never_sees_another_agents_conversation(
        hub: BrowserHub, context: Any) -> None:
    theirs = await hub.buyer("carla-buyer", "Hello, where is my parcel? Order ZZ-77",
                             name="Outsider Olga", language="en", assignee="carla")
    mine = await hub.buyer("scope-mine", "Hola, pedido AA-1", name="Insider Iris")
    page = await context.new_page()
    await sign_in(page, hub)
    await page.select_option("#filter-view", "all")
    await page.locator(f"#conversation-list [data-id='{mine['id']}']").wait_for()
    assert await page.locator(f"[data-id='{theirs['id']}']").count() == 0
    await hub.write("carla-buyer", "Any news?", language="en")  # a live event she must not get
    await page.fill("#search", "Olga")
    await page.press("#search", "Enter")
    await page.wait_for_selector("#list-empty:not([hidden])")
    await page.fill("#search", "Iris")
    await page.press("#search", "Enter")
    await page.locator(f"#conversation-list [data-id='{mine['id']}']").wait_for()
    assert await page.locator("#conversation-list [data-id]").count() == 1
    assert "Outsider Olga" not in await page.text_content("body")
    # Asking the API for it from the page answers 404 like an unknown id.
    status = await page.evaluate(
        f"fetch('/api/v1/conversations/{theirs['id']}').then(r => r.status)")
    assert status == 404


async def test_supervisor_view(hub: BrowserHub, context: Any) -> None:
    await hub.buyer("queue-buyer", "Hello, nobody online for English?", language="en",
                    assignee="carla")
    page = await context.new_page()
    await sign_in(page, hub, "sam")
    await page.click("#nav-supervisor")
    await page.wait_for_selector("#supervisor:not([hidden])")
    await page.locator("#queue-rows tr", has_text="en#1").wait_for()
    agents = page.locator("#agent-rows tr", has_text="ana.agent")
    await agents.wait_for()
    assert "Online" in await agents.text_content()
    assert "chat" in await agents.text_content()
    carla = await page.locator("#agent-rows tr", has_text="carla").text_content()
    assert "Carla Reyes" in carla


async def test_password_change(hub: BrowserHub, context: Any) -> None:
    await hub.call("POST", "/api/v1/accounts", body={
        "id": "carla", "name": "Carla Reyes", "role": "agent", "password": PASSWORD})
    page = await context.new_page()
    await sign_in(page, hub, "carla")
    await page.click("#password-button")
    await page.fill("#password-current", "wrong wrong wrong")
    await page.fill("#password-new", "a new long passphrase")
    await page.fill("#password-confirm", "a new long passphrase")
    await page.click("#password-form button[type=submit]")
    await page.wait_for_selector("#password-error:has-text('The current password is wrong.')")
    await page.fill("#password-current", PASSWORD)
    await page.click("#password-form button[type=submit]")
    await page.wait_for_selector("#signin-error:has-text('Password changed.')")
    await sign_in(page, hub, "carla", "a new long passphrase")


async def test_axe_finds_no_serious_violations(hub: BrowserHub, context: Any) -> None:
    """axe-core (WCAG 2.1 A and AA) on the sign-in page, the inbox in both languages, the
    shortcut list and the supervisor view: nothing serious or critical, contrast AA."""
    conversation = await hub.buyer("axe-buyer", "Hola, ¿puedo pagar en cuotas?", name="Axel")
    page = await context.new_page()
    await page.goto(hub.url)
    await page.wait_for_selector("#signin:not([hidden])")
    pages = {"sign-in": await run_axe(page)}
    await sign_in(page, hub)
    await _open(page, conversation)
    await page.fill("#note-text", "Pagos en 3 cuotas")
    await page.click("#note-form button")
    await page.locator("#messages .note").wait_for()
    pages["inbox"] = await run_axe(page)
    await page.select_option("#ui-language", "zh")
    await page.wait_for_selector("#list-heading:has-text('会话')")
    pages["inbox-zh"] = await run_axe(page)
    await page.click("#shortcuts-button")
    await page.wait_for_selector("#shortcuts-dialog[open]")
    pages["shortcuts-zh"] = await run_axe(page)
    await page.keyboard.press("Escape")
    await page.click("#signout")
    await sign_in(page, hub, "sam")
    await page.click("#nav-supervisor")
    await page.locator("#agent-rows tr").first.wait_for()
    await page.locator("#agent-admin-rows tr").first.wait_for()
    await page.locator("#leaderboard-rows tr").first.wait_for()
    pages["supervisor-zh"] = await run_axe(page)
    for name, result in pages.items():
        assert result["testEngine"]["name"] == "axe-core", name
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert bad == [], name
        assert "color-contrast" not in {v["id"] for v in result["violations"]}, name


async def test_security_headers_on_the_page(hub: BrowserHub, context: Any) -> None:
    page = await context.new_page()
    response = await page.goto(hub.url)
    headers = response.headers
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    # An inline script injected anyway is refused by the browser under that policy.
    await page.wait_for_selector("body[data-ready='true']")
    blocked = await page.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation', e => resolve(e.violatedDirective));
        const s = document.createElement('script');
        s.textContent = 'window.__inline = 1';
        document.body.append(s);
        setTimeout(() => resolve(window.__inline ? 'ran' : 'none'), 500);
    })""")
    assert blocked.startswith("script-src")


async def test_live_updates_resume_with_last_event_id(hub: BrowserHub, context: Any) -> None:
    """The hub ends the stream (a restart, a proxy timeout): the page reconnects with the
    last event id it saw and gets what happened in between, without a reload."""
    from hub.events_api import event_hub

    page = await context.new_page()
    streams: list[Any] = []
    page.on("request", lambda r: streams.append(r) if "/api/v1/events" in r.url else None)
    await sign_in(page, hub)
    conversation = await hub.buyer("resume-buyer", "Hola, primera pregunta")
    await page.locator(f"#conversation-list [data-id='{conversation['id']}']").wait_for()
    await _open(page, conversation)
    assert len(streams) == 1
    event_hub(hub.client.server.app).close_all()
    await hub.write("resume-buyer", "Segunda pregunta, mientras tanto", language="es")
    await page.locator("#messages .message.inbound", has_text="Segunda pregunta").wait_for()
    assert len(streams) >= 2
    resumed = await streams[1].all_headers()
    assert resumed.get("last-event-id", "").count("-") == 1


async def test_bulk_resolve(hub: BrowserHub, context: Any) -> None:
    first = await hub.buyer("bulk-1", "Hola, consulta uno")
    second = await hub.buyer("bulk-2", "Hola, consulta dos")
    page = await context.new_page()
    await sign_in(page, hub)
    for conversation in (first, second):
        row = page.locator("#conversation-list li", has=page.locator(
            f"[data-id='{conversation['id']}']"))
        await row.locator("input.pick").check()
    await page.wait_for_selector("#bulk-count:has-text('2 selected')")
    await page.click("#bulk-resolve")

    async def resolved() -> bool:
        return all([(await hub.conversation(c["id"]))["status"] == "resolved"
                    for c in (first, second)])

    await eventually(resolved)
    await page.wait_for_selector("#bulk-bar", state="hidden")


async def test_a_supervisor_retries_a_failed_reply(hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("retry-buyer", "¿Me responden?")
    hub.operator.fail_with.append((400, {}))
    status, _ = await _reply_as_ana(hub, conversation["id"], "Primer intento")
    assert status == 202
    page = await context.new_page()
    await sign_in(page, hub, "sam")
    await _open(page, conversation)
    failed = page.locator("#messages .message.failed", has_text="Primer intento")
    await failed.wait_for()
    await failed.locator("button.retry").click()
    await hub.sent(lambda m: m.get("text") == "Primer intento")
    await page.locator("#messages .message.outbound:not(.failed)",
                       has_text="Primer intento").wait_for()


async def _reply_as_ana(hub: BrowserHub, cid: str, text: str) -> tuple[int, Any]:
    from tests.conftest import AGENT_TOKEN
    r = await hub.client.post(f"/api/v1/conversations/{cid}/replies", json={"text": text},
                              headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    return r.status, await r.json()


async def test_collision_banner_when_another_agent_views(
        hub: BrowserHub, context: Any, browser: Any) -> None:
    conversation = await hub.buyer("collision-buyer", "Hola, ¿hay alguien?")
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)
    other = await browser.new_context()
    try:
        supervisor = await other.new_page()
        await sign_in(supervisor, hub, "sam")
        await open_conversation(supervisor, conversation["id"])
        await page.wait_for_selector("#collision:has-text('sam is viewing this conversation')")
    finally:
        await other.close()


NOTIFICATION_STUB = """
window.__notifications = [];
Object.defineProperty(document, 'hidden', {configurable: true,
                                           get: () => window.__hidden === true});
window.Notification = class {
  static permission = 'granted';
  static requestPermission() { return Promise.resolve('granted'); }
  constructor(title, options) { window.__notifications.push({title, ...options}); }
  addEventListener() {}
};
"""


async def test_desktop_notification_for_a_new_assignment_while_hidden(
        hub: BrowserHub, context: Any) -> None:
    page = await context.new_page()
    # The browser's Notification and page visibility, replaced before the page loads (a
    # headless browser has neither a desktop nor a background tab).
    await page.add_init_script(NOTIFICATION_STUB)
    await sign_in(page, hub)
    assert await page.text_content("#notify-button") == "Notifications on"
    visible = await hub.buyer("notify-visible", "Hola, pregunta con la pestaña visible")
    await page.locator(f"#conversation-list [data-id='{visible['id']}']").wait_for()
    assert await page.evaluate("window.__notifications.length") == 0
    await page.evaluate("window.__hidden = true")
    hidden = await hub.buyer("notify-hidden", "Hola, pregunta con la pestaña oculta")

    async def notified() -> Any:
        return await page.evaluate("window.__notifications")

    [shown] = await eventually(notified)
    assert shown == {"title": "inboxhub: new conversation",
                     "body": "A conversation was assigned to you.", "tag": hidden["id"]}


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n%%EOF\n"


async def test_attachments_are_downloads_never_inline(hub: BrowserHub, context: Any) -> None:
    import base64
    conversation = await hub.buyer("attach-buyer", "Hola, adjunto el comprobante", attachments=[
        {"name": "comprobante.pdf", "data": base64.b64encode(PDF).decode(),
         "content_type": "application/pdf"}])
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)
    link = page.locator("#messages .attachment a")
    await link.wait_for()
    assert await link.get_attribute("download") == "comprobante.pdf"
    assert "comprobante.pdf" in await link.text_content()
    href = await link.get_attribute("href")
    headers = await page.evaluate(
        f"fetch('{href}').then(r => [r.status, r.headers.get('content-disposition'), "
        "r.headers.get('x-content-type-options')])")
    assert headers[0] == 200 and headers[1].startswith("attachment")
    assert headers[2] == "nosniff"
    assert await page.locator("#messages iframe, #messages embed, #messages object, "
                              "#messages img").count() == 0


async def test_filters_and_a_session_that_ends(hub: BrowserHub, context: Any) -> None:
    brazil = await hub.buyer("filter-br", "Olá, vocês entregam em Recife?", language="pt",
                             market="BR")
    mexico = await hub.buyer("filter-mx", "Hola, ¿entregan en Monterrey?", market="MX")
    page = await context.new_page()
    await sign_in(page, hub)
    await page.fill("#filter-market", "br")
    await page.press("#filter-market", "Tab")
    # The unfiltered list shows both at first; the filtered one only Brazil.
    await page.wait_for_selector(f"[data-id='{mexico['id']}']", state="detached")
    await page.locator(f"#conversation-list [data-id='{brazil['id']}']").wait_for()
    markets = await page.locator("#conversation-list .badge-market").all_text_contents()
    assert set(markets) == {"BR"}
    await page.fill("#filter-market", "")
    await page.fill("#filter-language", "es")
    await page.press("#filter-language", "Tab")
    await page.wait_for_selector(f"[data-id='{brazil['id']}']", state="detached")
    await page.locator(f"#conversation-list [data-id='{mexico['id']}']").wait_for()

    # Signed out everywhere from another device: the next action shows the sign-in form.
    await hub.call("POST", "/api/v1/accounts/ana.agent/disable")
    try:
        await page.select_option("#filter-view", "all")
        await page.wait_for_selector("#signin-error:has-text('Your session has ended.')")
        assert await page.is_hidden("#app")
    finally:
        await hub.call("POST", "/api/v1/accounts/ana.agent/enable")


async def test_a_reply_with_attachments_follows_the_channels_rules(
        hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("upload-buyer", "¿Me manda la factura?")
    page = await context.new_page()
    await sign_in(page, hub)
    await _open(page, conversation)
    rules = await page.text_content("#attach-rules")
    assert "Up to 10 files" in rules and "10 MB" in rules
    # A file the channel refuses by its bytes (an executable named .pdf): named, not kept.
    await page.set_input_files("#reply-file", files=[
        {"name": "factura.pdf", "mimeType": "application/pdf", "buffer": b"MZ\x90\x00" * 64}])
    await page.wait_for_selector("#reply-error:has-text('factura.pdf was refused')")
    assert await page.locator("#reply-files li").count() == 0
    # A real PDF: uploaded at once, then sent with the text.
    await page.set_input_files("#reply-file", files=[
        {"name": "factura.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    await page.locator("#reply-files li[data-state='ready']", has_text="factura.pdf").wait_for()
    await page.fill("#reply-text", "Aquí la factura")
    await page.press("#reply-text", "Enter")
    sent = await hub.sent(lambda m: m.get("text") == "Aquí la factura")
    assert [a["name"] for a in sent["attachments"]] == ["factura.pdf"]
    await page.locator("#messages .message.outbound", has_text="Aquí la factura").locator(
        ".attachment a", has_text="factura.pdf").wait_for()
    assert await page.locator("#reply-files li").count() == 0
