"""The email channel inside the running hub, on real Dovecot, aiosmtpd and Redis: a shared
mailbox that gets Amazon's relay, a B2B platform's no-reply notifications and ordinary mail.
Labels from the sender reach routing (Amazon's 24-hour wall-clock SLA only for Amazon's
conversations), and a no-reply sender's conversation refuses replies with the link to answer
on the platform."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub import keys as K
from hub.config import ConfigError
from tests.channels.email.test_conformance import mail
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

ROUTING = """
[routing]
channel_labels = { mail = "shared_box" }

[[routing.queues]]
name = "marketplaces"
[[routing.queues]]
name = "mailbox"

[[routing.rules]]
name = "amazon"
queue = "marketplaces"
when = { channel = ["amazon"] }
[[routing.rules]]
name = "the shared mailbox"
queue = "mailbox"
when = { channel = ["shared_box"] }

[routing.sla.shared_box]
first_response_minutes = 240
[routing.sla.email]
first_response_minutes = 60
[routing.sla.amazon]
first_response_minutes = 1440
always = true
[routing.sla.alibaba]
first_response_minutes = 720
always = true
"""


def email_channel(dovecot: Any, smtp: Any) -> str:
    return f"""
[[channels]]
name = "mail"
type = "email"
[channels.settings]
address = "ventas@tienda.test"
imap_host = "{dovecot.host}"
imap_port = {dovecot.port}
imap_security = "none"
imap_username = "{dovecot.user}"
imap_password = "env:IH_TEST_IMAP_PASSWORD"
smtp_host = "{smtp.host}"
smtp_port = {smtp.port}
smtp_security = "none"
smtp_username = "{smtp.username}"
smtp_password = "env:IH_TEST_SMTP_PASSWORD"
lease_seconds = 2

[[channels.settings.sender_rules]]
domain = "alibaba.test"
label = "alibaba"
market = "CN"
no_reply = true
answer_url = "https://message.alibaba.test/inbox"
"""


@pytest.fixture
def email_env(monkeypatch: pytest.MonkeyPatch, dovecot: Any, smtp_server: Any) -> None:
    monkeypatch.setenv("IH_TEST_IMAP_PASSWORD", dovecot.password)
    monkeypatch.setenv("IH_TEST_SMTP_PASSWORD", smtp_server.password)


async def _conversation_of(client: Any, sender: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        for conv in (await r.json())["conversations"]:
            if conv["contact_handle"] == sender and conv.get("queue"):
                return conv  # type: ignore[no-any-return]
        return None

    return await eventually(found, timeout=20)  # type: ignore[no-any-return]


async def test_sender_labels_route_slas_and_disable_replies(
    make_config: Any, email_env: None, dovecot: Any, smtp_server: Any
) -> None:
    loaded = make_config(extra=ROUTING + email_channel(dovecot, smtp_server))
    amazon = "wrmqqxtlynjf6kg@marketplace.amazon.com.mx"
    b2b = "inquiry-noreply@notice.alibaba.test"
    shopper = "ana@buyer.test"
    async with running_hub(loaded) as client:
        state = client.server.app[K.ROUTING].state
        before = time.time()
        for sender, subject in ((amazon, "Pedido 701-1234567-7654321"),
                                (b2b, "New inquiry: 500 units"), (shopper, "Hola")):
            await dovecot.adeliver(mail(sender, subject, "¿Tienen stock?",
                                        f"<{subject[:5].strip()}-{time.time_ns()}@x.test>"))
        convs = {s: await _conversation_of(client, s) for s in (amazon, b2b, shopper)}
        after = time.time()

        assert convs[amazon]["label"] == "amazon" and convs[amazon]["market"] == "MX"
        assert convs[b2b]["label"] == "alibaba" and convs[b2b]["market"] == "CN"
        assert convs[shopper].get("label") is None
        # the instance's own label still applies: its rule takes ordinary mail, Amazon's
        # label (more specific) takes Amazon's
        assert convs[amazon]["queue"] == "marketplaces"
        assert convs[shopper]["queue"] == "mailbox" and convs[b2b]["queue"] == "mailbox"
        deadlines = {s: float((await state.conversation_state(c["id"]))["sla:first"])
                     for s, c in convs.items()}
        # Amazon's duty is 24 h of wall-clock time from arrival, whatever the mailbox's own
        assert before + 86400 <= deadlines[amazon] <= after + 86400
        assert before + 43200 <= deadlines[b2b] <= after + 43200

        # the no-reply notification: replying refused with where to answer instead
        assert convs[b2b]["replies_disabled"]
        assert convs[b2b]["answer_url"] == "https://message.alibaba.test/inbox"
        r = await client.post(f"/api/v1/conversations/{convs[b2b]['id']}/replies",
                              json={"text": "Hola"}, headers=auth(ADMIN_TOKEN))
        assert r.status == 422
        body = await r.json()
        assert "https://message.alibaba.test/inbox" in body["error"]["message"]
        draft = await (await client.post(
            f"/api/v1/conversations/{convs[b2b]['id']}/draft", json={"text": "Hola"},
            headers=auth(ADMIN_TOKEN))).json()
        assert draft["refused"] and draft["answer_url"] == "https://message.alibaba.test/inbox"
        draft = await (await client.post(
            f"/api/v1/conversations/{convs[amazon]['id']}/draft",
            json={"text": "Siga el envío en https://track.test/1"},
            headers=auth(ADMIN_TOKEN))).json()
        assert draft["check"]["fits"] is False and "links" in draft["check"]["problem"]
        # Amazon's relay rules are judged before the reply is queued
        r = await client.post(f"/api/v1/conversations/{convs[amazon]['id']}/replies",
                              json={"text": "Siga el envío en https://track.test/1"},
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 422 and "links" in (await r.json())["error"]["message"]
        r = await client.post(f"/api/v1/conversations/{convs[shopper]['id']}/replies",
                              json={"text": "Sí, hay stock."}, headers=auth(ADMIN_TOKEN))
        assert r.status == 202, await r.text()
        await eventually(lambda: _received(smtp_server), timeout=20)
        [sent] = smtp_server.handler.received
        assert sent.rcpt_tos == [shopper]


async def _received(smtp: Any) -> bool:
    return bool(smtp.handler.received)


def test_a_label_only_a_sender_rule_gives_is_known_to_routing_checks(
    make_config: Any, email_env: None, dovecot: Any, smtp_server: Any
) -> None:
    make_config(extra=ROUTING + email_channel(dovecot, smtp_server))  # valid as written
    with pytest.raises(ConfigError, match=r"routing\.sla\.alibab"):
        make_config(extra=ROUTING.replace("sla.alibaba", "sla.alibab")
                    + email_channel(dovecot, smtp_server))
    with pytest.raises(ConfigError, match="answer_url"):
        make_config(extra=ROUTING + email_channel(dovecot, smtp_server).replace(
            "https://message", "http://message"))
    with pytest.raises(ConfigError, match="label"):
        make_config(extra=ROUTING + email_channel(dovecot, smtp_server).replace(
            'label = "alibaba"', 'label = "Ali Baba"'))
