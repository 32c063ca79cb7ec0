"""Regenerates the README's screenshots of the inbox (docs/inbox-en.png, docs/inbox-zh.png)
with sample conversations, so they show the page as it is now. A hub of its own (this
module's): only the sample conversations are in the list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import BrowserHub, open_conversation, sign_in
from tests.conftest import AGENT_TOKEN

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
