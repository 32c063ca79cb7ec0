"""The survey-link page: ``GET /survey/{token}`` shows the one question, ``POST`` records the
answer, for conversations whose channel cannot carry the survey (hub/survey_links.py).

Who may answer is decided by the token alone: it is the capability, signed, for one survey
round, until the survey's expiry. There is no session and no cookie, so there is nothing for a
cross-site request to ride on: a page elsewhere that posts a score needs the token, and whoever
has the token may answer anyway. The answer is recorded once (storage/surveys.py); the event
it writes is the one a chat answer writes (``status`` / ``rated``, attributed to the agent who
resolved the conversation, with ``via = "link"``), so the reports count both alike.

The page is plain HTML built here, every interpolated value escaped (the question comes from
the config, the rest from the catalog below; no customer text is shown at all). It runs no
script and loads nothing: the Content-Security-Policy allows only its own inline style (by
hash) and a form posted back to this origin, it may not be framed, and it sends no Referer (a
link elsewhere must not leak the token). Every answer, errors included, is such a page.
Requests are counted per client address: past ``REQUESTS_PER_WINDOW`` in a minute, 429.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import keys as K
from hub.csat import link_signer
from hub.csat_answers import Scale, question
from hub.openapi import HTML, operation
from hub.survey_links import InvalidLink
from storage.records import Conversation
from storage.surveys import SurveyAnswersStore, link_marker

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PATH: Final = "/survey/{token:.+}"
MAX_FORM_BYTES: Final = 1024
REQUESTS_PER_WINDOW: Final = 30
WINDOW_SECONDS: Final = 60
LANGUAGES: Final = ("en", "es", "pt", "zh")

Text = Literal["title", "thanks", "already", "expired", "invalid", "closed", "choose",
               "busy", "retry", "bad", "great", "form_only", "too_large"]
# The page's own words; the question itself is csat.wording or hub/csat_answers.py's default.
CATALOG: Final[dict[str, dict[Text, str]]] = {
    "en": {
        "title": "Satisfaction survey", "thanks": "Thank you! Your answer has been recorded.",
        "already": "This survey has already been answered. Thank you!",
        "expired": "This survey link has expired.",
        "invalid": "This survey link is not valid. Please check that it was copied whole.",
        "closed": "This survey is closed.", "choose": "Please choose one of the answers.",
        "busy": "Too many requests. Please try again in a minute.",
        "retry": "Something went wrong on our side. Please try again in a moment.",
        "bad": "bad", "great": "great", "form_only": "Please answer with the form.",
        "too_large": "The request is too large.",
    },
    "es": {
        "title": "Encuesta de satisfacción",
        "thanks": "¡Gracias! Hemos registrado tu respuesta.",
        "already": "Esta encuesta ya fue respondida. ¡Gracias!",
        "expired": "Este enlace de encuesta ha caducado.",
        "invalid": "Este enlace de encuesta no es válido. Comprueba que se copió completo.",
        "closed": "Esta encuesta está cerrada.", "choose": "Elige una de las respuestas.",
        "busy": "Demasiadas solicitudes. Inténtalo de nuevo en un minuto.",
        "retry": "Algo salió mal de nuestro lado. Inténtalo de nuevo en un momento.",
        "bad": "mal", "great": "excelente", "form_only": "Responde con el formulario.",
        "too_large": "La solicitud es demasiado grande.",
    },
    "pt": {
        "title": "Pesquisa de satisfação",
        "thanks": "Obrigado! Sua resposta foi registrada.",
        "already": "Esta pesquisa já foi respondida. Obrigado!",
        "expired": "Este link de pesquisa expirou.",
        "invalid": "Este link de pesquisa não é válido. Verifique se foi copiado inteiro.",
        "closed": "Esta pesquisa está encerrada.", "choose": "Escolha uma das respostas.",
        "busy": "Muitas solicitações. Tente novamente em um minuto.",
        "retry": "Algo deu errado do nosso lado. Tente novamente em instantes.",
        "bad": "ruim", "great": "ótimo", "form_only": "Responda pelo formulário.",
        "too_large": "A solicitação é grande demais.",
    },
    "zh": {
        "title": "满意度调查", "thanks": "谢谢！您的回答已记录。",
        "already": "此调查已经回答过了。谢谢！", "expired": "此调查链接已过期。",
        "invalid": "此调查链接无效。请确认链接已完整复制。", "closed": "此调查已关闭。",
        "choose": "请选择一个答案。", "busy": "请求过多，请一分钟后再试。",
        "retry": "我们这边出了点问题，请稍后再试。", "bad": "很差", "great": "很好",
        "form_only": "请通过表单回答。", "too_large": "请求过大。",
    },
}

STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:0;padding:2rem 1rem;background:#f6f7f9;"
    "color:#1d2330}main{max-width:32rem;margin:0 auto;background:#fff;border-radius:.5rem;"
    "padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}h1{font-size:1.25rem;"
    "line-height:1.4}.scale{display:flex;gap:.5rem;flex-wrap:wrap;margin:1rem 0}"
    "button{font-size:1.5rem;min-width:3.25rem;min-height:3.25rem;border:1px solid #9aa3b5;"
    "border-radius:.5rem;background:#fff;cursor:pointer}button:hover,button:focus{"
    "background:#e8eefc}.hint{color:#5a6275;font-size:.9rem}.note{font-weight:600}"
)
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The URL is a capability: no shared cache may keep the page, no search engine list it.
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}
_LANGUAGE: Final = re.compile(r"[a-z]{2}")
_SCORE: Final = re.compile(r"[1-5]")


class SurveyForm(msgspec.Struct, frozen=True):
    """The page's form: one of the buttons' values (1..5; a thumbs survey takes 5 for 👍 and
    1 for 👎 only)."""

    score: Annotated[str, msgspec.Meta(pattern="^[1-5]$")]


async def survey_ctx(app: web.Application) -> AsyncIterator[None]:
    """The link signer (when configured) and the answer store, for the page and the API."""
    config = app[K.CONFIG].config
    signer = link_signer(config)
    if signer is not None:
        app[K.SURVEY_LINKS] = signer
    app[K.SURVEY_ANSWERS] = SurveyAnswersStore(app[K.REDIS])
    yield


def _language(value: str | None) -> str:
    lang = (value or "").lower()
    return lang if _LANGUAGE.fullmatch(lang) else "en"


def _preferred(request: web.Request) -> str:
    """The page language before the token is known: the first of ours the browser lists."""
    header = request.headers.get("Accept-Language", "")[:200]
    for part in header.split(","):
        tag = part.split(";", 1)[0].strip().lower()[:2]
        if tag in CATALOG:
            return tag
    return "en"


def _words(lang: str) -> Mapping[Text, str]:
    return CATALOG.get(lang, CATALOG["en"])


def _page(status: int, lang: str, heading: str, body: str = "",
          headers: Mapping[str, str] | None = None) -> web.Response:
    """One page; ``heading`` is escaped here, ``body`` is markup built from escaped parts."""
    words = _words(lang)
    text = (
        f'<!doctype html><html lang="{html.escape(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{html.escape(words['title'])}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{html.escape(heading)}</h1>{body}</main></body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={**SECURITY_HEADERS, **(headers or {})})


def _message(status: int, lang: str, key: Text, **kw: Any) -> web.Response:
    return _page(status, lang, _words(lang)[key], **kw)


def _form(lang: str, scale: str, note: str | None = None) -> str:
    """The buttons: 1..5, or 👍 (5) / 👎 (1). The form posts back to this very URL."""
    words = _words(lang)
    if scale == "thumbs":
        buttons = [("5", "👍", words["great"]), ("1", "👎", words["bad"])]
    else:
        buttons = [(str(n), str(n), label) for n, label in
                   ((1, words["bad"]), (2, ""), (3, ""), (4, ""), (5, words["great"]))]
    markup = "".join(
        f'<button type="submit" name="score" value="{value}"'
        + (f' aria-label="{html.escape(f"{shown} ({label})")}"' if label else "")
        + f">{html.escape(shown)}</button>"
        for value, shown, label in buttons)
    hint = ("" if scale == "thumbs"
            else f'<p class="hint">1 = {html.escape(words["bad"])}, '
                 f'5 = {html.escape(words["great"])}</p>')
    warning = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'{warning}<form method="post"><div class="scale">{markup}</div></form>{hint}'


class _Survey(msgspec.Struct, frozen=True):
    """What the page needs of a survey whose token checked out."""

    conversation: Conversation
    key: str
    scale: str
    agent: str
    answered_this_round: bool
    open: bool


async def _survey(request: web.Request, conversation_id: str,
                  survey_round: str) -> _Survey | None:
    store = request.app[K.STORE]
    conversation = await store.get_conversation(conversation_id)
    k = store.keys_for(conversation_id)
    if conversation is None or k is None:
        return None  # erased since
    key = k.conversation(conversation_id)
    values = await store.redis.hmget(key, "csat_state", "csat_round", "csat_via",
                                     "csat_until", "csat_scale", "csat_agent", "csat_message")
    state, stored_round, via, until, scale, agent, answered_by = (
        v.decode() if isinstance(v, bytes) else v for v in values)
    this_round = stored_round == survey_round and via == "link"
    return _Survey(
        conversation=conversation, key=key, scale=scale or "five",
        agent=agent or "", answered_this_round=(
            state == "answered" and answered_by == link_marker(survey_round)),
        open=this_round and state == "sent" and float(until or 0) >= time.time())


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def _guarded(request: web.Request) -> tuple[str, _Survey | web.Response]:
    """Rate limit, token, survey: the survey, or the page that says why not."""
    lang = _preferred(request)
    if await request.app[K.SURVEY_ANSWERS].hit(_client(request), WINDOW_SECONDS) \
            > REQUESTS_PER_WINDOW:
        return "", _message(429, lang, "busy", headers={"Retry-After": str(WINDOW_SECONDS)})
    signer = request.app.get(K.SURVEY_LINKS)
    token = request.match_info.get("token", "")
    if signer is None:
        return "", _message(404, lang, "invalid")
    try:
        claims = signer.verify(token, now=time.time())
    except InvalidLink as exc:
        log.info("survey link refused: %s", exc.problem)  # never the token: it is a key
        return "", _message(410 if exc.problem == "expired" else 404, lang,
                            "expired" if exc.problem == "expired" else "invalid")
    survey = await _survey(request, claims.conversation_id, claims.survey_round)
    if survey is None:
        return "", _message(410, lang, "closed")
    return claims.survey_round, survey


def _conversation_language(survey: _Survey) -> str:
    return _language(survey.conversation.language)


@routes.get(PATH)
@operation("The survey-link page: the one question, as a form",
           {200: HTML, 404: HTML, 410: HTML, 429: HTML, 503: HTML}, role=None, tag="surveys",
           path_params={"token": "the signed token of the link (hub/survey_links.py)"},
           description="Public: the token is the capability. 200 with the form (or, once "
                       "answered, the thanks); 404 a token that is not valid (malformed, "
                       "forged, or links not configured); 410 expired or closed (a later "
                       "survey, the conversation erased); 429 too many requests from the "
                       "address. HTML only, no script, no external resource, no Referer.")
async def show(request: web.Request) -> web.Response:
    try:
        _round, found = await _guarded(request)
        if isinstance(found, web.Response):
            return found
        lang = _conversation_language(found)
        if found.answered_this_round:
            return _message(200, lang, "already")
        if not found.open:
            return _message(410, lang, "closed")
        wording = request.app[K.CONFIG].config.csat.wording
        scale: Scale = "thumbs" if found.scale == "thumbs" else "five"
        return _page(200, lang, question(scale, lang, wording), _form(lang, scale))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("survey page: redis unavailable (%s)", type(exc).__name__)
        return _message(503, _preferred(request), "retry", headers={"Retry-After": "1"})


async def _score(request: web.Request, scale: str) -> int | web.Response | None:
    """The submitted score; None for one that is not an answer on this scale."""
    if (request.content_length or 0) > MAX_FORM_BYTES:
        return web.Response(status=413)
    raw = await request.content.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        return web.Response(status=413)
    try:
        fields = urllib.parse.parse_qs(raw.decode("ascii"), max_num_fields=8,
                                       strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("score", [])
    if len(values) != 1 or not _SCORE.fullmatch(values[0]):
        return None
    score = int(values[0])
    if scale == "thumbs" and score not in (1, 5):
        return None
    return score


@routes.post(PATH)
@operation("Answer the survey of a survey link (once)",
           {200: HTML, 400: HTML, 404: HTML, 409: HTML, 410: HTML, 413: HTML, 415: HTML,
            429: HTML, 503: HTML},
           role=None, tag="surveys", form=SurveyForm,
           path_params={"token": "the signed token of the link (hub/survey_links.py)"},
           description="The form of GET /survey/{token}: score 1..5 (a thumbs survey takes 5 "
                       "for 👍 and 1 for 👎). 200 recorded, exactly as an answer in the chat "
                       "would be (the same rated event, for the agent who resolved the "
                       "conversation); 409 answered already (the first score stays); 400 a "
                       "score that is not one of the page's answers (the form again); 415 "
                       "not a form; 413 over 1 KiB; 404/410/429 as for GET.")
async def answer(request: web.Request) -> web.Response:
    try:
        survey_round, found = await _guarded(request)
        if isinstance(found, web.Response):
            return found
        return await _answer(request, survey_round, found)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("survey answer: redis unavailable (%s)", type(exc).__name__)
        return _message(503, _preferred(request), "retry", headers={"Retry-After": "1"})


async def _answer(request: web.Request, survey_round: str, found: _Survey) -> web.Response:
    lang = _conversation_language(found)
    if found.answered_this_round:
        await _record_event(request, found, survey_round, None)  # a crash's retry: once
        return _message(409, lang, "already")
    if not found.open:
        return _message(410, lang, "closed")
    scale: Scale = "thumbs" if found.scale == "thumbs" else "five"
    if request.content_type != "application/x-www-form-urlencoded":
        return _message(415, lang, "form_only")
    score = await _score(request, scale)
    if isinstance(score, web.Response):
        return _message(413, lang, "too_large")
    if score is None:
        wording = request.app[K.CONFIG].config.csat.wording
        return _page(400, lang, question(scale, lang, wording),
                     _form(lang, scale, _words(lang)["choose"]))
    outcome, stored = await request.app[K.SURVEY_ANSWERS].record(found.key, survey_round,
                                                                score)
    if outcome == "closed":
        return _message(410, lang, "closed")
    await _record_event(request, found, survey_round, stored)
    if outcome == "already":
        return _message(409, lang, "already")
    request.app[K.METRICS].csat_surveys.labels("answered", "link").inc()
    return _message(200, lang, "thanks")


# A submit of an answer already recorded writes its event again if the answer is this recent:
# the retry after a crash between the answer and its event. The event's key makes the second
# write nothing, but only for storage.events.MARKER_TTL_SECONDS (a day): a page submitted
# again days later must not count twice, and by then any crash retry is long over.
RETRY_EVENT_SECONDS: Final = 3600


async def _record_event(request: web.Request, found: _Survey, survey_round: str,
                        score: int | None) -> None:
    """The ``rated`` event, keyed by the round: written once however often it is asked for
    (a double submit, a retry after a crash between the answer and its event). ``score``
    None: the answer is on record already; its own score is read back."""
    store = request.app[K.STORE]
    if score is None:
        raw_score, raw_at = await store.redis.hmget(found.key, "csat_score",
                                                    "csat_answered_at")
        text = raw_score.decode() if isinstance(raw_score, bytes) else raw_score
        at = raw_at.decode() if isinstance(raw_at, bytes) else raw_at
        try:
            recent = time.time() - float(at or 0) < RETRY_EVENT_SECONDS
        except ValueError:
            recent = False
        if not recent or not text or not text.isdigit():
            return
        score = int(text)
    if store.events is not None:
        await store.events.append("status", found.conversation.id, action="rated",
                                  agent=found.agent or None, reason=str(score), via="link",
                                  once=f"csat:{link_marker(survey_round)}")
