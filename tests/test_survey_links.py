"""Signed survey links for conversations without a reply path: the token (made, checked,
refused when forged, tampered, malformed or expired), the KPIs of a link survey, and the
whole loop through a running hub: a resolved no-reply conversation gets a link instead of a
message, the page asks in the conversation's language, one answer is recorded against the
resolving agent and shows in the reports, a second submit changes nothing, and hostile input
in the token and the form records nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any

import pytest

from channels.secrets import Secret
from hub.csat_answers import DEFAULT_WORDING
from hub.kpis import fold
from hub.survey_links import InvalidLink, LinkSigner
from hub.survey_page import REQUESTS_PER_WINDOW, SECURITY_HEADERS, STYLE
from routing.business_hours import BusinessHours, Calendar
from storage.store import Store
from storage.surveys import client_key
from tests.conftest import AGENT_TOKEN
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, Hub, routing_config
from tests.test_kpis import conv, ev, stats

SECRET = "a-long-random-survey-link-secret-0123456789"
BASE = "https://hub.example.com/support"
NOW = 1_800_000_000.0
ALWAYS = Calendar(BusinessHours.always())
# The agent token that replies for each agent before resolving.
TOKEN_OF = {"ana.agent": AGENT_TOKEN, "bruno": BRUNO_TOKEN}


def signer(secret: str = SECRET) -> LinkSigner:
    return LinkSigner(Secret(secret, "env:TEST"), BASE + "/")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _problem(token: str, now: float = NOW, secret: str = SECRET) -> str:
    with pytest.raises(InvalidLink) as caught:
        signer(secret).verify(token, now=now)
    return caught.value.problem


# -- the token -------------------------------------------------------------------------------


def test_a_token_names_one_survey_until_it_expires() -> None:
    s = signer()
    token = s.token("1.0193ab", "1800000000000-0", NOW + 3600)
    claims = s.verify(token, now=NOW)
    assert (claims.conversation_id, claims.survey_round, claims.expires_at) == (
        "1.0193ab", "1800000000000-0", int(NOW + 3600))
    assert s.url("1.0193ab", "1800000000000-0", NOW + 3600) == f"{BASE}/survey/{token}"
    # the same inputs sign to the same token: nothing needs storing per link
    assert s.token("1.0193ab", "1800000000000-0", NOW + 3600) == token
    assert s.token("1.0193ab", "1800000000001-0", NOW + 3600) != token  # another round
    assert _problem(token, now=NOW + 3601) == "expired"
    assert _problem(token, secret="another-secret-entirely-0123456789") == "forged"


def test_a_tampered_or_forged_token_is_refused_before_its_payload_is_read() -> None:
    token = signer().token("1.0193ab", "1800000000000-0", NOW + 3600)
    payload, mac = token.split(".")
    # another conversation, another round, a later expiry, with the genuine mac
    for claims in (["1.0193ac", "1800000000000-0", int(NOW + 3600)],
                   ["1.0193ab", "1800000000009-0", int(NOW + 3600)],
                   ["1.0193ab", "1800000000000-0", int(NOW + 10 ** 8)]):
        forged = _b64(json.dumps(claims, separators=(",", ":")).encode())
        assert _problem(f"{forged}.{mac}") == "forged"
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert _problem(f"{payload}.{flipped}") == "forged"
    # a mac over garbage is still only "forged": the payload is never decoded unsigned
    assert _problem(f"{_b64(b'{not json')}.{mac}") == "forged"


@pytest.mark.parametrize("token", [
    "", ".", "abc", "abc.", ".abc", "a.b.c", "a" * 5000, "a" * 300 + "." + "b" * 43 + "c",
    "<script>alert(1)</script>", "../../etc/passwd", "a\x00.b", "ñ.ñ", "YQ==." + "A" * 43,
    "YQ." + "A" * 42 + "=", "YQ." + "A" * 44, "YQ.+/" + "A" * 41,
])
def test_a_malformed_token_is_refused(token: str) -> None:
    assert _problem(token) == "malformed"


def test_one_spelling_per_token() -> None:
    """Base64's unused trailing bits are not a second way to write the same link."""
    token = signer().token("1.0193ab", "1800000000000-0", NOW + 3600)
    payload, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    twin = mac[:-1] + alphabet[last ^ 1]  # 32 bytes in 43 characters: 2 bits unused
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(mac + "=")
    assert _problem(f"{payload}.{twin}") == "malformed"


def test_the_pages_only_style_is_allowed_by_its_hash() -> None:
    """No 'unsafe-inline': the CSP names the hash of the one inline style (checked in
    Chromium: an altered style is refused)."""
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}'" in csp and "unsafe" not in csp
    assert "form-action 'self'" in csp and "base-uri 'none'" in csp


# -- what the KPIs make of a link survey -----------------------------------------------------


def test_a_link_survey_counts_as_sent_and_its_answer_leaves_a_reopening_in_place() -> None:
    events = [
        ev("new_message", NOW, new_conversation=True),
        ev("assignment", NOW + 1, action="assigned", agent="ana"),
        ev("reply", NOW + 60, agent="ana"),
        ev("status", NOW + 100, action="resolved"),
        ev("status", NOW + 101, action="survey_link", agent="ana"),
        ev("new_message", NOW + 500),
        ev("status", NOW + 500, action="reopened"),
        ev("status", NOW + 501, action="rated", agent="ana", reason="2", via="link"),
        ev("reply", NOW + 600, agent="ana"),
    ]
    s = stats(fold(events, {}, {"0.a": conv()}, ALWAYS))
    assert s[("csat_sent", "all")].n == 1
    assert s[("replies", "all")].n == 2  # the link is no reply
    assert s[("csat", "all")].n == 1 and s[("csat", "all")].wall == 2
    assert ("csat_satisfied", "all") not in s
    # the buyer's message reopened the conversation; the page's answer did not undo that
    assert s[("reopened", "all")].n == 1


# -- through the hub ---------------------------------------------------------------------------

LINKS = f"""
[csat]
enabled = true
answer_hours = 1
link_secret = "env:IH_TEST_LINK"
public_url = "{BASE}"
"""


@pytest.fixture
def link_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IH_TEST_LINK", SECRET)


def links_config(make_config: Any, endpoint: OperatorEndpoint, csat: str = LINKS,
                 extra: str = "") -> Any:
    return make_config(extra=routing_config("pools") + csat + extra,
                       outbound_url=endpoint.url)


async def _metric(client: Any, needle: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _no_reply_conversation(hub: Hub, store: Store, language: str = "es",
                                 agent: str = "ana.agent") -> str:
    """A conversation whose sender takes no reply, resolved by ``agent`` after a reply."""
    cid = await hub.buyer(language, expect="assigned", assignee=agent)
    status, body = await hub.call("POST", f"/api/v1/conversations/{cid}/replies",
                                  TOKEN_OF[agent], json={"text": "Ya lo reviso"})
    assert status == 202, body
    assert await store.update_conversation(cid, {"replies_disabled": "a no-reply address"})
    await hub.resolve(cid)
    return cid


async def _link(hub: Hub, cid: str, token: str = SUPERVISOR_TOKEN) -> dict[str, Any]:
    async def issued() -> Any:
        status, body = await hub.call("GET", f"/api/v1/conversations/{cid}/survey-link", token)
        return body if status == 200 else None

    return dict(await eventually(issued))


def _path(link: dict[str, Any]) -> str:
    assert link["url"].startswith(BASE + "/survey/")
    return "/survey/" + link["url"].rsplit("/survey/", 1)[1]


async def _summary(client: Any) -> dict[str, Any]:
    r = await client.get("/api/v1/reports/summary", headers=auth(SUPERVISOR_TOKEN))
    assert r.status == 200
    return dict(await r.json())


async def _page(client: Any, path: str, *, method: str = "GET", **kw: Any) -> tuple[int, str]:
    r = await client.request(method, path, **kw)
    text = await r.text()
    if r.status != 429:
        assert r.headers["Content-Type"].startswith("text/html"), (r.status, text)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script" not in csp and "unsafe" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert "<script" not in text.lower()
    return r.status, text


def _form(score: Any) -> dict[str, Any]:
    return {"data": score if isinstance(score, bytes) else f"score={score}".encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


async def test_a_no_reply_conversation_gets_a_link_answered_once_in_the_reports(
        make_config: Any, store: Store, link_env: None) -> None:
    async with OperatorEndpoint() as endpoint, \
            running_hub(links_config(make_config, endpoint)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await _no_reply_conversation(hub, store)
        link = await _link(hub, cid)
        assert link["state"] == "awaiting" and link["scale"] == "five"
        assert link["score"] is None
        assert link["expires_at"] == pytest.approx(time.time() + 3600, abs=30)
        # agents see it as they see the conversation (api.agent_scope): a resolved one is
        # not in their pools
        for agent in (AGENT_TOKEN, BRUNO_TOKEN):
            status, _ = await hub.call("GET", f"/api/v1/conversations/{cid}/survey-link",
                                       agent)
            assert status == 404
        assert await _metric(client, 'inboxhub_csat_surveys_total{outcome="sent",'
                                     'reason="link"}') == 1
        # no message went to the buyer: the channel takes no reply
        assert not [m for m in endpoint.received
                    if DEFAULT_WORDING["five"]["es"] in m.get("text", "")]
        path = _path(link)

        # the page, in the conversation's language, then in the others
        status, page = await _page(client, path)
        assert status == 200 and '<html lang="es">' in page
        assert DEFAULT_WORDING["five"]["es"] in page
        assert page.count('<button type="submit" name="score"') == 5
        assert STYLE in page
        for language, word in (("pt", "pt"), ("zh", "zh"), ("en", "en")):
            assert await store.update_conversation(cid, {"language": language})
            status, page = await _page(client, path)
            assert status == 200 and f'<html lang="{language}">' in page
            assert DEFAULT_WORDING["five"][word] in page
        assert await store.update_conversation(cid, {"language": "es"})

        # a survey answer in the chat is not the link's answer: the buyer's "5" is a message
        await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "later", "sender": f"buyer{hub.n}", "text": "5", "language": "es"}))
        await eventually(lambda: _has_status(hub, cid, "assigned"))
        assert (await _summary(client))["csat"]["answered"] == 0
        # assigned to her again, the agent sees the same link (to paste it)
        assert (await _link(hub, cid, AGENT_TOKEN))["url"] == link["url"]

        # the answer on the page: recorded for the agent who resolved it
        status, page = await _page(client, path, method="POST", **_form(4))
        assert status == 200 and "¡Gracias!" in page

        async def rated() -> Any:
            body = await _summary(client)
            return body if body["csat"]["answered"] == 1 else None

        report = await eventually(rated)
        assert report["csat"] == {"sent": 1, "answered": 1, "mean_score": 4.0,
                                  "satisfied_share": 1.0, "response_rate": 1.0}
        for by, key in (("agent", "ana.agent"), ("language", "es"), ("queue", "es")):
            r = await client.get(f"/api/v1/reports/breakdown?by={by}",
                                 headers=auth(SUPERVISOR_TOKEN))
            rows = {row["key"]: row for row in (await r.json())["rows"]}
            assert rows[key]["csat"]["mean_score"] == 4.0, (by, rows)
        assert await _metric(client, 'inboxhub_csat_surveys_total{outcome="answered",'
                                     'reason="link"}') == 1

        # a second submit: "already answered", the first score stays
        status, page = await _page(client, path, method="POST", **_form(1))
        assert status == 409 and "ya fue respondida" in page
        status, page = await _page(client, path)
        assert status == 200 and "ya fue respondida" in page and "<form" not in page
        k = store.keys_for(cid)
        assert k is not None
        assert await store.redis.hget(k.conversation(cid), "csat_score") == b"4"
        link = await _link(hub, cid)
        assert (link["state"], link["score"]) == ("answered", 4)
        await _settled(client)
        assert (await _summary(client))["csat"]["answered"] == 1
        assert (await _summary(client))["csat"]["mean_score"] == 4.0


async def _has_status(hub: Hub, cid: str, status: str) -> bool:
    return (await hub.conv(cid))["status"] == status


async def _settled(client: Any) -> None:
    """Give the KPI aggregator time to fold anything a wrong path might have written."""
    await asyncio.sleep(1.5)


async def test_forged_expired_tampered_and_hostile_input_records_nothing(
        make_config: Any, store: Store, link_env: None) -> None:
    async with OperatorEndpoint() as endpoint, \
            running_hub(links_config(make_config, endpoint)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await _no_reply_conversation(hub, store)
        other = await _no_reply_conversation(hub, store)
        link = await _link(hub, cid)
        path = _path(link)
        token = path.removeprefix("/survey/")
        payload, mac = token.split(".")
        k = store.keys_for(cid)
        assert k is not None
        survey_round = (await store.redis.hget(k.conversation(cid), "csat_round")).decode()

        async def unlimited() -> None:
            await store.redis.delete(client_key("127.0.0.1"))

        # forged signature, tampered conversation id (the other one's survey), expired
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        tampered = _b64(json.dumps([other, claims[1], claims[2]],
                                   separators=(",", ":")).encode())
        flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
        for bad in (f"{payload}.{flipped}", f"{tampered}.{mac}"):
            for method, kw in (("GET", {}), ("POST", _form(5))):
                status, page = await _page(client, f"/survey/{bad}", method=method, **kw)
                assert status == 404 and "not valid" in page, (bad, status)
        expired = signer().token(cid, survey_round, time.time() - 1)
        status, page = await _page(client, f"/survey/{expired}", method="POST", **_form(5))
        assert status == 410 and "expired" in page
        # a link for a round that is not this conversation's survey
        stale = signer().token(cid, "1-0", time.time() + 3600)
        status, page = await _page(client, f"/survey/{stale}", method="POST", **_form(5))
        assert status == 410 and "Esta encuesta está cerrada." in page

        # hostile tokens: a clear 4xx page, nothing of the input reflected
        await unlimited()
        for hostile in ("<script>alert(1)</script>", "%3Cimg%20src=x%20onerror=alert(1)%3E",
                        "..%2F..%2Fetc%2Fpasswd", "a" * 4000, "%00", "%C3%B1.%C3%B1",
                        f"{token}%22%3E%3Cscript%3E", f"{token}/extra"):
            status, page = await _page(client, f"/survey/{hostile}",
                                       headers={"Accept-Language": "pt-BR,pt;q=0.9"})
            assert status == 404 and "não é válido" in page, (hostile, status)
            assert "alert" not in page and "passwd" not in page and "onerror" not in page

        # hostile and wrong form input: the form again (400), 413, 415; nothing recorded
        await unlimited()
        for body in (b"score=7", b"score=0", b"score=", b"score=abc", b"score=5&score=1",
                     b"", b"scor=5", b"score=%3Cscript%3E", b"score=4.0", b"score=\xff",
                     b"score=%EF%BC%95", b"score=+5"):
            status, page = await _page(client, path, method="POST", **_form(body))
            assert status == 400 and "Elige una de las respuestas" in page, (body, status)
            assert "<script" not in page.lower()
        status, _ = await _page(client, path, method="POST", **_form(b"score=5&x=" + b"a" * 2000))
        assert status == 413
        status, _ = await _page(client, path, method="POST", json={"score": "5"})
        assert status == 415
        status, _ = await _page(client, path, method="POST", data=b"score=5",
                                headers={"Content-Type": "text/plain"})
        assert status == 415
        assert await store.redis.hget(k.conversation(cid), "csat_state") == b"sent"

        # past the survey's own expiry the genuine link is closed too
        await store.redis.hset(k.conversation(cid), "csat_until", repr(time.time() - 1))
        status, page = await _page(client, path)
        assert status == 410 and "cerrada" in page
        status, _ = await _page(client, path, method="POST", **_form(5))
        assert status == 410
        assert await store.redis.hget(k.conversation(cid), "csat_state") == b"sent"
        await _settled(client)
        assert (await _summary(client))["csat"]["answered"] == 0

        # one client hammering the page is turned away for a while
        await unlimited()
        statuses = [(await client.get(f"/survey/{flipped}")).status
                    for _ in range(REQUESTS_PER_WINDOW + 2)]
        assert statuses[:REQUESTS_PER_WINDOW] == [404] * REQUESTS_PER_WINDOW
        r = await client.get(path)
        assert r.status == 429 and r.headers["Retry-After"] == "60"


THUMBS = LINKS.replace("answer_hours = 1", 'answer_hours = 1\nscale = "thumbs"')


async def test_a_thumbs_link_takes_thumbs_only(make_config: Any, store: Store,
                                               link_env: None) -> None:
    async with OperatorEndpoint() as endpoint, \
            running_hub(links_config(make_config, endpoint, THUMBS)) as client:
        hub = Hub(client)
        await hub.online("bruno")
        cid = await _no_reply_conversation(hub, store, "pt", agent="bruno")
        path = _path(await _link(hub, cid))
        status, page = await _page(client, path)
        assert status == 200 and DEFAULT_WORDING["thumbs"]["pt"] in page
        assert 'value="5"' in page and "👍" in page and 'value="1"' in page and "👎" in page
        assert page.count('name="score"') == 2
        status, page = await _page(client, path, method="POST", **_form(3))
        assert status == 400
        status, page = await _page(client, path, method="POST", **_form(1))
        assert status == 200 and "Obrigado!" in page

        async def rated() -> Any:
            r = await client.get("/api/v1/reports/breakdown?by=agent",
                                 headers=auth(SUPERVISOR_TOKEN))
            rows = {row["key"]: row for row in (await r.json())["rows"]}
            return rows.get("bruno") if rows.get("bruno", {}).get("csat", {}).get(
                "answered") else None

        row = await eventually(rated)
        assert row["csat"]["mean_score"] == 1.0 and row["csat"]["satisfied_share"] == 0.0


async def test_no_link_without_its_config_and_never_on_amazon(
        make_config: Any, store: Store, link_env: None) -> None:
    without = "\n[csat]\nenabled = true\n"
    async with OperatorEndpoint() as endpoint, \
            running_hub(links_config(make_config, endpoint, without)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await _no_reply_conversation(hub, store)
        await eventually(lambda: _metric(
            client, 'inboxhub_csat_surveys_total{outcome="skipped",reason="no_reply_path"}'))
        status, body = await hub.call("GET", f"/api/v1/conversations/{cid}/survey-link",
                                      SUPERVISOR_TOKEN)
        assert status == 404 and "not configured" in body["error"]["message"]
        token = signer().token(cid, "1-0", time.time() + 60)
        status, page = await _page(client, f"/survey/{token}")
        assert status == 404 and "not valid" in page
        k = store.keys_for(cid)
        assert k is not None
        assert await store.redis.hget(k.conversation(cid), "csat_state") is None

    await store.redis.flushall()
    amazon = '\n[routing.channel_labels]\nshop = "amazon"\n'
    async with OperatorEndpoint() as endpoint, \
            running_hub(links_config(make_config, endpoint, extra=amazon)) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        cid = await _no_reply_conversation(hub, store)
        await eventually(lambda: _metric(
            client, 'inboxhub_csat_surveys_total{outcome="skipped",'
                    'reason="amazon_forbids_surveys"}'))
        status, _ = await hub.call("GET", f"/api/v1/conversations/{cid}/survey-link",
                                   SUPERVISOR_TOKEN)
        assert status == 404
        assert await _metric(client, 'inboxhub_csat_surveys_total{outcome="sent"') == 0


def test_link_config_is_checked(tmp_path: Any, redis_server: Any, hub_env: None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.config import ConfigError, load_config
    from tests.conftest import write_config

    monkeypatch.setenv("IH_SHORT", "short")
    for extra, word in [
        ('[csat]\nlink_secret = "plain-text-secret-in-the-file"\n', "csat.link_secret"),
        ('[csat]\nlink_secret = "env:IH_NOT_SET_ANYWHERE"\n', "IH_NOT_SET_ANYWHERE"),
        ('[csat]\nlink_secret = "env:IH_SHORT"\n', "csat.link_secret"),
        ('[csat]\npublic_url = "ftp://hub.example.com"\n', "csat.public_url"),
        ('[csat]\npublic_url = "https://hub.example.com/?x=1"\n', "csat.public_url"),
    ]:
        path = write_config(tmp_path, redis_server.url, extra=extra)
        with pytest.raises(ConfigError, match=word):
            load_config(path)



async def test_a_link_survey_and_its_answer_replayed_after_a_crash_count_once(
        make_config: Any, store: Store, link_env: None) -> None:
    """The sender handling the same resolution twice, and the page recording an answer whose
    event a crash lost: each counts once in the reports; a page submitted again long after
    its answer writes nothing. The hub's own sender is off (csat.enabled = false: links
    already issued stay answerable); the test drives one."""
    from hub import keys as K
    from hub.config import CsatSettings
    from hub.csat import SurveySender
    from storage.leases import RedisLeaseManager
    from storage.surveys import link_marker

    async with OperatorEndpoint() as endpoint, \
            running_hub(links_config(make_config, endpoint, LINKS.replace(
                "enabled = true", "enabled = false"))) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        app = client.server.app
        events = app[K.STORE].events
        assert events is not None
        sender = SurveySender(app[K.STORE], events, app[K.CHANNELS],
                              CsatSettings(enabled=True, answer_hours=1),
                              RedisLeaseManager(store.redis, owner="test"), links=signer())
        cids = [await _no_reply_conversation(hub, store) for _ in range(2)]
        _last, log = await events.after_raw("0-0", 1000)
        resolved = {e.conversation_id: e for e in log
                    if e.kind == "status" and e.action == "resolved"}
        for cid in cids:
            await sender.survey(resolved[cid])
            await sender.survey(resolved[cid])  # handled again: no second survey, no event

        async def sent() -> Any:
            body = await _summary(client)
            return body if body["csat"]["sent"] == 2 else None

        await eventually(sent)
        # the first conversation's answer was recorded, but its event was lost in a crash;
        # the second one's was recorded two hours ago, its event lost too
        now = time.time()
        for cid, answered_at in ((cids[0], now), (cids[1], now - 7200)):
            k = store.keys_for(cid)
            assert k is not None
            await store.redis.hset(k.conversation(cid), mapping={
                "csat_state": "answered", "csat_score": "5",
                "csat_answered_at": repr(answered_at),
                "csat_message": link_marker(resolved[cid].id)})
        for cid in cids:
            path = _path(await _link(hub, cid))
            for _ in range(2):
                status, _page_text = await _page(client, path, method="POST", **_form(1))
                assert status == 409
        await eventually(lambda: _answered(client, 1))
        await _settled(client)
        report = await _summary(client)
        assert report["csat"]["answered"] == 1 and report["csat"]["mean_score"] == 5.0
        assert report["csat"]["sent"] == 2


async def _answered(client: Any, n: int) -> bool:
    return bool((await _summary(client))["csat"]["answered"] == n)
