"""The supervisor view follows SLA breaches as they happen: a hub of its own whose API channel
has a first-response clock of about a second, so a buyer nobody answers breaches it while the
supervisor watches (no reload)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import BrowserHub, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="session")

HUB_EXTRA = """
[routing.sla.shop]
first_response_minutes = 0.02
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
