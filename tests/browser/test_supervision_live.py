"""SLA clocks in the page as they run: a hub of its own whose API channel has a first-response
clock of about a second (and a ten-hour resolution clock), so a buyer nobody answers breaches
it while the supervisor watches (no reload), and the list's countdown badge turns overdue."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import BrowserHub, open_conversation, run_axe, sign_in
from tests.conftest import AGENT_TOKEN

pytestmark = pytest.mark.asyncio(loop_scope="session")

HUB_EXTRA = """
[routing.sla.shop]
first_response_minutes = 0.02
resolution_minutes = 600
always = true
"""


async def test_sla_breaches_appear_live(hub: BrowserHub, context: Any) -> None:
    page = await context.new_page()
    await sign_in(page, hub, "sam")
    await page.click("#nav-supervisor")
    await page.locator("#agent-rows tr", has_text="ana.agent").wait_for()
    assert await page.is_visible("#breaches-empty")
    conversation = await hub.buyer("late-buyer", "Hola, ¿alguien me atiende?")
    breach = page.locator("#breach-list li", has_text=conversation["id"])
    await breach.wait_for()
    assert "first" in await breach.text_content()
    assert await page.is_hidden("#breaches-empty")
    # The agent's load shows the conversation she now holds.
    await page.locator("#agent-rows tr", has_text="ana.agent").filter(
        has_text="chat 1/50").wait_for()


async def test_the_list_counts_the_sla_down_and_shows_a_breach_in_words(
        hub: BrowserHub, context: Any) -> None:
    page = await context.new_page()
    await sign_in(page, hub)
    conversation = await hub.buyer("countdown-buyer", "Hola, ¿dónde está mi pedido?")
    await open_conversation(page, conversation["id"])
    sla = page.locator(f"#conversation-list li:has([data-id='{conversation['id']}']) .badge-sla")
    # The first-response clock (about a second) runs out while Ana looks: no reload.
    await page.locator(f"#conversation-list li:has([data-id='{conversation['id']}']) "
                       ".badge-sla[data-state='breached']").wait_for()
    text = await sla.text_content()
    assert (await page.text_content("#side-sla")).startswith("Overdue by")
    assert text.startswith("SLA overdue") and await sla.evaluate(
        "n => n.classList.contains('breached')")
    axe = await run_axe(page)  # the breached badge's contrast (and the rest) passes AA
    assert [v["id"] for v in axe["violations"] if v["impact"] in ("serious", "critical")] == []
    # It keeps counting (repainted every second, the list is not reloaded).
    await page.wait_for_function(
        "([sel, before]) => { const n = document.querySelector(sel); "
        "return n && n.textContent !== before; }",
        arg=[f"#conversation-list li:has([data-id='{conversation['id']}']) .badge-sla", text])
    # Her answer stops first response: the badge counts down to resolution, ten hours away.
    r = await hub.client.post(f"/api/v1/conversations/{conversation['id']}/replies",
                              json={"text": "Ya lo reviso"},
                              headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert r.status == 202
    await page.locator(f"#conversation-list li:has([data-id='{conversation['id']}']) "
                       ".badge-sla[data-state='running']", has_text="10 h left").wait_for()
    # The side panel follows the running clock too, not the stopped first-response one.
    await page.wait_for_selector("#side-sla:has-text('Due in 10 h')")
    colours = await sla.evaluate("n => getComputedStyle(n).backgroundColor")
    assert colours != "rgb(164, 22, 26)"  # the breached red is gone with the word
