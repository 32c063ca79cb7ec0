"""Regenerates the README's screenshots of the inbox (docs/inbox-en.png, docs/inbox-zh.png)
and of the supervisor view's reports (docs/supervisor-en.png) with sample conversations, so
they show the page as it is now. A hub of its own (this module's): only the sample
conversations are in the list and the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import SUPERVISOR_TOKEN, BrowserHub, open_conversation, sign_in
from tests.conftest import AGENT_TOKEN
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = Path(__file__).resolve().parents[2] / "docs"
# SLA clocks, so the list shows its countdown badges as a team with SLAs sees them.
HUB_EXTRA = """
[routing.sla.shop]
first_response_minutes = 120
resolution_minutes = 1440
always = true
"""
SAMPLES = (
    ("maria.garcia", "María García", "es", "MX",
     "Hola, compré unas zapatillas hace diez días y el seguimiento no se mueve. "
     "¿Me pueden ayudar?"),
    ("joao.silva", "João Silva", "pt", "BR",
     "Olá! O meu pedido chegou com a cor errada. Posso trocar?"),
    ("lucia.fernandez", "Lucía Fernández", "es", "AR",
     "¿Hacen envíos a Córdoba? Quiero comprar dos unidades."),
    ("ana.lima", "Ana Lima", "pt", "BR", "Vocês emitem nota fiscal?"),
)


async def _sample(hub: BrowserHub) -> dict[str, Any]:
    conversations = {}
    for sender, name, language, market, text in SAMPLES:
        conversations[sender] = await hub.buyer(sender, text, name=name, language=language,
                                                market=market)
    main = conversations["maria.garcia"]["id"]
    await hub.call("POST", f"/api/v1/conversations/{main}/replies", AGENT_TOKEN,
                   body={"text": "¡Hola María! Ya lo reviso con la transportista."})
    await hub.call("POST", f"/api/v1/conversations/{main}/notes", AGENT_TOKEN,
                   body={"text": "Transportista confirma retraso por aduana; avisar el lunes."})
    await hub.call("POST", f"/api/v1/conversations/{main}/tags",
                   body={"add": ["envío", "retraso"]})
    await hub.write("maria.garcia", "Gracias. ¿Saben cuándo llegará?", language="es",
                    market="MX")
    return conversations


async def test_regenerate_the_readme_screenshots(hub: BrowserHub, browser: Any) -> None:
    conversations = await _sample(hub)
    DOCS.mkdir(exist_ok=True)
    for language, locale, zone in (("en", "en-GB", "America/Sao_Paulo"),
                                   ("zh", "zh-CN", "Asia/Shanghai")):
        context = await browser.new_context(locale=locale, timezone_id=zone,
                                            viewport={"width": 1440, "height": 820})
        try:
            page = await context.new_page()
            await sign_in(page, hub)
            await page.select_option("#ui-language", language)
            await page.wait_for_function("document.documentElement.lang.startsWith("
                                         f"'{language}')")
            main = conversations["maria.garcia"]["id"]
            await open_conversation(page, main)
            await page.locator("#messages .message-text",
                               has_text="¿Saben cuándo llegará?").wait_for()
            await page.locator("#messages .note").wait_for()
            await page.locator("#messages .delivery").wait_for()
            await page.locator("#conversation-list .badge-sla").first.wait_for()
            await page.locator("#contact-conversations button").first.wait_for()
            await page.fill("#reply-text", "Llegará el martes; le envío el seguimiento.")
            await page.wait_for_selector("#reply-counter:has-text('43 / 10000')")
            await page.locator("#reply-text").blur()
            path = DOCS / f"inbox-{language}.png"
            await page.screenshot(path=str(path))
            assert path.stat().st_size > 20_000
        finally:
            await context.close()


async def test_regenerate_the_supervisor_screenshot(hub: BrowserHub, browser: Any) -> None:
    # Two more buyers, answered and resolved, for the reports (the inbox's list keeps its
    # open samples).
    for sender, name, language, market, text, answer in (
            ("pedro.gomez", "Pedro Gómez", "es", "AR", "¿Tienen talle 42?",
             "Sí, tenemos talle 42 en negro."),
            ("beatriz.costa", "Beatriz Costa", "pt", "BR", "Qual o prazo para Manaus?",
             "Para Manaus, de 6 a 9 dias úteis.")):
        conversation = await hub.buyer(sender, text, name=name, language=language,
                                       market=market)
        await hub.call("POST", f"/api/v1/conversations/{conversation['id']}/replies",
                       AGENT_TOKEN, body={"text": answer})
        await hub.call("POST", f"/api/v1/conversations/{conversation['id']}/resolve",
                       AGENT_TOKEN)

    async def counted() -> bool:
        board = await hub.call("GET", "/api/v1/reports/breakdown?by=agent", SUPERVISOR_TOKEN)
        return any(r["key"] == "ana.agent" and r["counts"]["resolved"] == 2
                   for r in board["rows"])

    await eventually(counted, timeout=20)
    context = await browser.new_context(locale="en-GB", timezone_id="America/Sao_Paulo",
                                        viewport={"width": 1440, "height": 1100})
    try:
        page = await context.new_page()
        await sign_in(page, hub, "sam")
        await page.click("#nav-supervisor")
        await page.locator("#leaderboard-rows tr[data-agent='ana.agent']").wait_for()
        for chart in ("response-language", "response-market", "volume-language",
                      "volume-market", "csat"):
            await page.wait_for_selector(f"#chart-{chart}[data-loaded='true']")
        # The supervisor view scrolls inside itself (the page is one screen high).
        await page.evaluate("document.getElementById('reports').scrollIntoView()")
        path = DOCS / "supervisor-en.png"
        await page.screenshot(path=str(path))
        assert path.stat().st_size > 20_000
    finally:
        await context.close()
