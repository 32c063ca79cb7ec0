"""The supervisor page's reports and agent management, and the inbox's tools for a selection
and for a buyer across conversations, in chromium against a hub of its own: satisfaction
surveys on (so the CSAT figures are real), and Dana, a third Spanish agent, offline until a
test needs someone to hand conversations to.

Facts are made through the API (a buyer writes, an agent answers and resolves, the buyer
rates) and every effect of the page is checked through the API again.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import (
    PASSWORD,
    SUPERVISOR_TOKEN,
    BrowserHub,
    open_conversation,
    run_axe,
    sign_in,
)
from tests.conftest import AGENT_TOKEN
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

HUB_EXTRA = """
[csat]
enabled = true

[[routing.agents]]
id = "dana"
name = "Dana Ortiz"
languages = { es = 4 }
capacity = { chat = 10 }
"""
CHARTS = ("chart-response-language", "chart-response-market", "chart-volume-language",
          "chart-volume-market", "chart-csat")


async def _as_ana(hub: BrowserHub, method: str, path: str, body: Any = None) -> Any:
    return await hub.call(method, path, AGENT_TOKEN, body)


async def _charts_loaded(page: Any) -> None:
    for chart in CHARTS:
        await page.wait_for_selector(f"#{chart}[data-loaded='true']")
        assert await page.evaluate(f"document.getElementById('{chart}').naturalWidth") == 720


async def test_reports_leaderboard_csat_and_charts_as_images(
        hub: BrowserHub, context: Any) -> None:
    conversation = await hub.buyer("report-buyer", "Hola, necesito la factura",
                                   market="MX")
    cid = conversation["id"]
    await _as_ana(hub, "POST", f"/api/v1/conversations/{cid}/replies",
                  {"text": "Se la envío hoy"})
    await _as_ana(hub, "POST", f"/api/v1/conversations/{cid}/resolve")
    # The survey goes out in the buyer's language; their "5" is the answer.
    await hub.sent(lambda m: m.get("recipient") == "report-buyer"
                   and "del 1" in (m.get("text") or ""))
    await hub.write("report-buyer", "5", language="es")

    async def counted() -> dict[str, Any] | None:
        summary = await hub.call("GET", "/api/v1/reports/summary", SUPERVISOR_TOKEN)
        return summary if summary["csat"]["answered"] == 1 else None

    await eventually(counted, timeout=20)

    page = await context.new_page()
    await sign_in(page, hub, "sam")
    await page.click("#nav-supervisor")
    row = page.locator("#leaderboard-rows tr[data-agent='ana.agent']")
    await row.wait_for()
    cells = await row.locator("td, th").all_text_contents()
    # rank, agent, resolved, replies, first response (a moment), CSAT
    assert cells[:4] == ["1", "ana.agent", "1", "1"], cells
    assert cells[4].endswith(" s") and cells[5] == "5.0 from 1 answers", cells
    assert "Mean score 5.0 from 1 answers to 1 surveys" in await page.text_content(
        "#csat-summary")
    # The charts are images of GET /reports/chart for the range: never markup in the page.
    await _charts_loaded(page)
    assert await page.locator("#supervisor svg").count() == 0
    src = await page.get_attribute("#chart-response-market", "src")
    assert src.startswith("/api/v1/reports/chart?chart=response_time&by=market&from=")
    week = dict(p.split("=") for p in src.split("?")[1].split("&"))
    assert int(week["to"]) - int(week["from"]) == 7 * 86400 and week["interval"] == "day"
    svg = await page.evaluate(f"fetch('{src}').then(r => r.text())")
    assert svg.startswith("<svg") and ">MX<" in svg
    assert await page.get_attribute("#chart-csat", "alt") == (
        "CSAT trend by language (mean score, 1–5)")

    # Another range: every chart and table is asked again for it.
    await page.select_option("#reports-range", "1")
    await page.wait_for_function(
        "document.getElementById('chart-volume-language').src.includes('interval=hour')")
    src = await page.get_attribute("#chart-volume-language", "src")
    day = dict(p.split("=") for p in src.split("?")[1].split("&"))
    assert int(day["to"]) - int(day["from"]) == 86400
    await _charts_loaded(page)
    await row.wait_for()
    _no_serious_violations(await run_axe(page))

    # In Chinese: the section's own words, the image descriptions too.
    await page.select_option("#ui-language", "zh")
    await page.wait_for_selector("#reports-heading:has-text('报表')")
    assert await page.get_attribute("#chart-csat", "alt") == "按语言的满意度趋势（平均分，1–5）"
    assert "平均分 5.0" in await page.text_content("#csat-summary")
    await page.wait_for_function(
        "document.getElementById('chart-volume-market').src.includes('lang=zh')")
    await _charts_loaded(page)
    src = await page.get_attribute("#chart-volume-market", "src")
    assert "按市场的会话量" in await page.evaluate(f"fetch('{src}').then(r => r.text())")


async def test_agent_management_edit_add_and_disable(hub: BrowserHub, context: Any) -> None:
    # A supervisor edits profiles; adding and disabling accounts is for admins.
    page = await context.new_page()
    await sign_in(page, hub, "sam")
    await page.click("#nav-supervisor")
    carla = page.locator("#agent-admin-rows tr[data-agent='carla']")
    await carla.wait_for()
    assert await page.is_hidden("#agent-add-form")
    assert await carla.locator(".agent-languages").input_value() == "en:5"
    await carla.locator(".agent-markets").fill("us, gb")
    await carla.locator(".agent-skills").fill("refund:4, complaint")
    await carla.locator(".agent-save").click()
    await page.wait_for_selector("#agent-admin-status:has-text('Agent carla saved.')")
    [profile] = [a["profile"] for a in (await hub.call(
        "GET", "/api/v1/agents", SUPERVISOR_TOKEN))["agents"] if a["profile"]["id"] == "carla"]
    assert profile["markets"] == ["US", "GB"]
    assert profile["skills"] == {"refund": 4, "complaint": 3}
    assert profile["languages"] == {"en": 5} and profile["capacity"] == {"chat": 50}
    # A level outside 1..5 is refused in the page; nothing is sent.
    await carla.locator(".agent-languages").fill("en:9")
    await carla.locator(".agent-save").click()
    await page.wait_for_selector("#agent-admin-error:has-text('en:9')")
    [profile] = [a["profile"] for a in (await hub.call(
        "GET", "/api/v1/agents", SUPERVISOR_TOKEN))["agents"] if a["profile"]["id"] == "carla"]
    assert profile["languages"] == {"en": 5}
    await page.click("#signout")
    await page.wait_for_selector("#signin:not([hidden])")
    await page.close()

    await hub.call("POST", "/api/v1/accounts", body={
        "id": "root", "name": "Root Admin", "role": "admin", "password": PASSWORD})
    page = await context.new_page()
    await sign_in(page, hub, "root")
    await page.click("#nav-supervisor")
    await page.wait_for_selector("#agent-add-form:not([hidden])")
    await page.fill("#agent-add-id", "eva")
    await page.fill("#agent-add-name", "Eva Lima")
    await page.fill("#agent-add-password", PASSWORD)
    await page.fill("#agent-add-languages", "pt:5, es:3")
    await page.fill("#agent-add-markets", "BR")
    await page.click("#agent-add-form button[type=submit]")
    eva = page.locator("#agent-admin-rows tr[data-agent='eva']")
    await eva.wait_for()
    assert await eva.locator(".agent-account").text_content() == "Active"
    accounts = {a["id"]: a for a in (await hub.call("GET", "/api/v1/accounts"))["accounts"]}
    assert accounts["eva"]["role"] == "agent" and accounts["eva"]["enabled"]
    agents = {a["profile"]["id"]: a["profile"] for a in (await hub.call(
        "GET", "/api/v1/agents"))["agents"]}
    assert agents["eva"]["languages"] == {"pt": 5, "es": 3} and agents["eva"]["markets"] == ["BR"]
    login = await hub.client.post("/api/v1/auth/login",
                                  json={"username": "eva", "password": PASSWORD})
    assert login.status == 200
    # Disabled: the account can no longer sign in, and the agent is offline for routing.
    await eva.locator(".agent-toggle", has_text="Disable").click()
    await eva.locator(".agent-account", has_text="Disabled").wait_for()
    login = await hub.client.post("/api/v1/auth/login",
                                  json={"username": "eva", "password": PASSWORD})
    assert login.status == 401
    agents_state = {a["profile"]["id"]: a["state"] for a in (await hub.call(
        "GET", "/api/v1/agents"))["agents"]}
    assert agents_state["eva"]["desired_status"] == "offline"
    await eva.locator(".agent-toggle", has_text="Enable").click()
    await eva.locator(".agent-account", has_text="Active").wait_for()
    _no_serious_violations(await run_axe(page))


def _no_serious_violations(result: dict[str, Any]) -> None:
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
           for v in result["violations"] if v["impact"] in ("serious", "critical")
           or v["id"] == "color-contrast"]
    assert bad == []


async def test_bulk_tag_and_assign(hub: BrowserHub, context: Any) -> None:
    first = await hub.buyer("bulk-tag-1", "Hola, quiero devolver un producto")
    second = await hub.buyer("bulk-tag-2", "Hola, el producto llegó roto")
    page = await context.new_page()
    await sign_in(page, hub)
    for conversation in (first, second):
        await page.locator("#conversation-list li", has=page.locator(
            f"[data-id='{conversation['id']}']")).locator("input.pick").check()
    await page.fill("#bulk-tag", "Devolución")
    await page.click("#bulk-tag-add")
    await page.wait_for_selector("#bulk-bar", state="hidden")
    for conversation in (first, second):
        assert (await hub.conversation(conversation["id"]))["tags"] == ["devolución"]

    for conversation in (first, second):
        await page.locator("#conversation-list li", has=page.locator(
            f"[data-id='{conversation['id']}']")).locator("input.pick").check()
    # Carla speaks no Spanish: both refused with the reason, still picked to try again.
    await page.fill("#bulk-agent", "carla")
    await page.click("#bulk-assign")
    await page.wait_for_selector("#bulk-error:has-text('2 could not be changed')")
    assert "2 selected" in await page.text_content("#bulk-count")
    assert (await hub.conversation(first["id"]))["assignee"] == "ana.agent"
    await hub.call("POST", "/api/v1/agents/dana/status", body={"status": "online"})
    try:
        await page.fill("#bulk-agent", "dana")
        await page.click("#bulk-assign")
        await page.wait_for_selector("#bulk-bar", state="hidden")
        for conversation in (first, second):
            assert (await hub.conversation(conversation["id"]))["assignee"] == "dana"
    finally:
        await hub.call("POST", "/api/v1/agents/dana/status", body={"status": "offline"})


async def test_the_buyer_across_conversations(hub: BrowserHub, context: Any) -> None:
    # The same buyer wrote from two accounts; a supervisor merged them into one person.
    first = await hub.buyer("twin-a", "Hola, escribo desde mi otra cuenta")
    second = await hub.buyer("twin-b", "Hola, es sobre el mismo pedido")
    people = []
    for conversation in (first, second):
        contact = await _as_ana(hub, "GET", f"/api/v1/conversations/{conversation['id']}/contact")
        people.append(contact["person"]["id"])
    await hub.call("POST", f"/api/v1/people/{people[0]}/merge", SUPERVISOR_TOKEN,
                   {"person": people[1]})

    page = await context.new_page()
    await sign_in(page, hub)
    await open_conversation(page, first["id"])
    await page.wait_for_selector("#contact-summary:has-text('2 contact(s) on api')")
    items = page.locator("#contact-conversations button")
    assert await items.count() == 2
    current = page.locator(f"#contact-conversations button[data-id='{first['id']}']")
    assert await current.is_disabled() and "(this one)" in await current.text_content()
    await page.click(f"#contact-conversations button[data-id='{second['id']}']")
    await page.wait_for_selector(f"#messages[data-conversation='{second['id']}']")
    await page.locator(f"#contact-conversations button[data-id='{second['id']}']:disabled"
                       ).wait_for()
    _no_serious_violations(await run_axe(page))  # the side panel and the reply box's rules
