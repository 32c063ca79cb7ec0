"""Writing first and sending again: start a conversation where the channel can initiate, and
retry a reply whose send failed.

Starting follows the channel contract, not a list of channels: ``Capabilities.can_initiate``
says whether free text may open a conversation, ``templates`` (and ``approved_templates``)
whether an approved template may instead; the reply window check the replies route uses
(``ChannelAdapter.check_reply`` with no buyer message yet) gives the 422 and its reason. What
the contract cannot say is how to address a buyer who never wrote, so ``ADDRESSING`` names
the channel types whose thread is the buyer's handle (the API channel, SMS, WhatsApp) and
checks the handle each takes; any other type answers 422. The record is made as ingest makes
a new thread's (storage/outbound.py) and the first message goes through ``enqueue_reply``, the
normal exactly-once send path, so delivery states, retries and the dead-letter queue apply.

Retry re-queues a failed reply with the operators' dead-letter step (``retry_dead.lua``):
one atomic step that moves it from failed to queued, so of two concurrent retries one queues
it and the other answers 409.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Annotated, Final

import msgspec
import phonenumbers
from aiohttp import web

from channels.base import ChannelAdapter
from channels.errors import ReplyRejected
from channels.models import OutboundReply, TemplateRef
from channels.windows import check_template, render_template, template_language
from hub import keys as K
from hub.api import (
    IDEMPOTENCY_HEADER,
    TemplateRequest,
    conversation_or_404,
    decode_body,
    json_response,
)
from hub.auth import require_role
from hub.errors import ApiError
from hub.openapi import operation
from routing.codes import ISO_639_1
from routing.eligibility import pool_id
from routing.engine import RoutingEngine
from routing.rules import Facts, choose_queue
from storage import keys as storage_keys
from storage.outbound import Outbound
from storage.records import Conversation, MessageView
from storage.store import NotRetryable, UnknownConversation, UnknownMessage

routes = web.RouteTableDef()

MAX_HANDLE: Final = 256


class StartRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``channel``: a configured channel instance. ``recipient``: the buyer's handle on it
    (E.164 phone for SMS and WhatsApp, the operator's buyer id for the API channel).
    ``template`` where the channel needs one to write first; ``text`` where free text may
    (or to show beside a template). ``client_key`` = ``Idempotency-Key``."""

    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    recipient: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_HANDLE)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    language: Annotated[str, msgspec.Meta(pattern="^[a-z]{2}$")] | None = None
    market: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")] | None = None
    text: Annotated[str, msgspec.Meta(max_length=100_000)] = ""
    template: TemplateRequest | None = None
    client_key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None

    def __post_init__(self) -> None:
        if self.language is not None and self.language not in ISO_639_1:
            raise ValueError(f"unknown language {self.language!r}, expected an ISO 639-1 "
                             "code such as 'es' or 'pt'")
        if self.market is not None and self.market not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown market {self.market!r}, expected an ISO 3166-1 "
                             "alpha-2 code such as 'MX' or 'BR'")


class ConversationStarted(msgspec.Struct, frozen=True):
    """The new conversation (assigned to the caller when they are a routing agent) and its
    first message, queued for sending. ``duplicate``: the idempotency key was seen; this is
    what the first request made."""

    conversation: Conversation
    message: MessageView
    duplicate: bool


class ReplyRetried(msgspec.Struct, frozen=True):
    """The reply, queued again (status ``queued``, attempts counted from 0)."""

    message: MessageView


class BadHandle(ValueError):
    """The recipient is not a handle this channel type can write to."""


def _plain_handle(raw: str) -> str:
    handle = raw.strip()
    if not handle or any(ord(ch) < 32 or ord(ch) == 127 for ch in handle):
        raise BadHandle("expected a non-empty handle without control characters")
    return handle


def _e164(raw: str) -> str:
    """``+<country><number>`` of a valid phone number, or BadHandle."""
    try:
        number = phonenumbers.parse(raw.strip(), None)
    except phonenumbers.NumberParseException:
        raise BadHandle("expected a phone number in E.164 form, such as +525512345678"
                        ) from None
    if not phonenumbers.is_valid_number(number):
        raise BadHandle("not a valid phone number (E.164, such as +525512345678)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _twilio_handle(raw: str) -> str:
    """Twilio's senders: ``+E164`` for SMS, ``whatsapp:+E164`` for its WhatsApp numbers."""
    text = raw.strip()
    if text.startswith("whatsapp:"):
        return "whatsapp:" + _e164(text.removeprefix("whatsapp:"))
    return _e164(text)


def _whatsapp_handle(raw: str) -> str:
    """The Cloud API's wa_id: the E.164 number's digits, without the plus."""
    return _e164(raw if raw.strip().startswith("+") else "+" + raw.strip()).removeprefix("+")


# Channel types whose thread is the buyer's handle, with the check of a handle each takes: the
# handle an inbound message of that buyer would carry, so their answer continues the thread.
ADDRESSING: Final[dict[str, Callable[[str], str]]] = {
    "api": _plain_handle,
    "twilio": _twilio_handle,
    "whatsapp": _whatsapp_handle,
}


def _unprocessable(message: str, code: str = "cannot_start") -> ApiError:
    return ApiError(422, message, code)


def _template(adapter: ChannelAdapter, req: StartRequest) -> TemplateRef | None:
    if req.template is None:
        return None
    return TemplateRef(req.template.name,
                       req.template.language or template_language(
                           adapter.capabilities, req.template.name, req.language),
                       tuple(req.template.parameters))


def _start_key(request: web.Request, body_key: str | None) -> tuple[str, bool]:
    """The request's idempotency key (given: True), else one of its own."""
    header = request.headers.get("Idempotency-Key")
    if header is not None and (not 1 <= len(header) <= 128
                               or not all("!" <= ch <= "~" for ch in header)):
        raise ApiError(400, "Idempotency-Key: expected 1..128 printable ASCII characters",
                       "invalid_header")
    key = body_key or header
    return (key, True) if key else (f"start-{uuid.uuid4().hex}", False)


async def _assign(engine: RoutingEngine, conversation: Conversation, agent: str,
                  req: StartRequest) -> None:
    """Make it the caller's in routing, in the queue the rules choose for it (where it goes
    back to if they go offline). A caller routing does not know (an admin's token) leaves it
    unrouted: the buyer's answer routes it as any new conversation."""
    if await engine.agent(agent) is None:
        return
    cfg = engine.cfg
    match = choose_queue(cfg, Facts(
        channel=conversation.channel, channel_instance=conversation.channel_instance,
        channel_label=cfg.channel_labels.get(conversation.channel_instance),
        language=req.language, market=req.market))
    queue = cfg.queue(match.queue)
    explain = {"event": "started", "at": time.time(), "agent": agent, "queue": queue.name,
               "rule": match.rule}
    await engine.call(
        "start", conversation.id, agent, queue.name,
        ",".join(pool_id(queue.name, i) for i in range(len(queue.steps))),
        ",".join(repr(s.after_seconds) for s in queue.steps),
        ",".join("1" if s.skip_when_unstaffed else "0" for s in queue.steps),
        cfg.kind_of(conversation.channel), match.priority, conversation.contact_id,
        msgspec.json.encode(explain).decode())
    await engine.mirror_event(conversation.id)


@routes.post("/api/v1/conversations")
@operation(
    "Start a conversation where the channel can initiate",
    {202: ConversationStarted, 200: ConversationStarted, 409: None, 422: None},
    description="Writes first to a buyer on a channel instance: the conversation is made, "
                "assigned to the caller (when they are a routing agent) and its first "
                "message queued like any reply (GET the message for its delivery state). "
                "422: the channel cannot start a conversation (no initiate capability and "
                "no templates), needs a template to write first and got free text, the "
                "template is not approved, the text is over the channel's limit, or the "
                "recipient is not a handle this channel type can address (E.164 phone for "
                "twilio and whatsapp; email and marketplaces only answer buyers who wrote). "
                "409 conversation_exists: the buyer already has a conversation on this "
                "instance (its id is in the message; reply there). 202 queued; 200 when the "
                "idempotency key was seen (what the first request made is returned).",
    body=StartRequest, headers=(IDEMPOTENCY_HEADER,), tag="conversations",
)
async def start_conversation(request: web.Request) -> web.Response:
    principal = require_role(request, "agent")
    req = decode_body(await request.read(), StartRequest)
    if not req.text and req.template is None:
        raise ApiError(400, "invalid request: text or template is required", "invalid_body")
    start_key, keyed = _start_key(request, req.client_key)
    adapter = request.app[K.CHANNELS].get(req.channel)
    if adapter is None:
        raise _unprocessable(f"no channel instance {req.channel!r} is configured",
                             "unknown_channel")
    caps = adapter.capabilities
    if not caps.can_initiate and not caps.templates:
        raise _unprocessable(f"channel {req.channel} ({adapter.type_name}) cannot start a "
                             "conversation: it writes only to buyers who wrote, and takes "
                             "no templates")
    addressing = ADDRESSING.get(adapter.type_name)
    if addressing is None:
        raise _unprocessable(f"channel {req.channel} ({adapter.type_name}) cannot address a "
                             "buyer who has not written: answer them in their conversation")
    try:
        handle = addressing(req.recipient)
    except BadHandle as exc:
        raise _unprocessable(f"recipient: {exc}", "invalid_recipient") from None
    if len(handle) > MAX_HANDLE:
        raise _unprocessable("recipient: too long", "invalid_recipient")
    template = _template(adapter, req)
    text = req.text
    try:
        if template is not None:
            spec = check_template(caps, template, adapter.type_name)
            if not text.strip():
                text = render_template(spec, template)
        # No buyer message yet: the window check says whether free text may go first.
        adapter.check_reply(OutboundReply(
            reply_id="start", conversation_id="", channel_type=adapter.type_name,
            channel_instance=adapter.instance, thread_id=handle, recipient_handle=handle,
            text=text, author=principal.name, template=template), now=time.time())
    except ReplyRejected as exc:
        raise _unprocessable(str(exc), "reply_rejected") from None

    store = request.app[K.STORE]
    started = await Outbound(store).start(
        channel_type=adapter.type_name, channel_instance=adapter.instance, thread_id=handle,
        handle=handle, name=req.name, start_key=start_key, agent=principal.name)
    if not started.new and not (keyed and started.resumable):
        raise ApiError(409, f"the buyer already has a conversation on {req.channel}: "
                            f"{started.conversation_id} (reply there)", "conversation_exists")
    cid = started.conversation_id
    fields = {name: value for name, value in (("language", req.language),
                                              ("market", req.market)) if value}
    if fields and not await store.update_conversation(cid, fields):
        raise ApiError(409, "the conversation was deleted meanwhile", "conflict")
    conversation = await store.get_conversation(cid)
    if conversation is None:
        raise ApiError(409, "the conversation was deleted meanwhile", "conflict")
    await _assign(request.app[K.ROUTING], conversation, principal.name, req)
    reply = OutboundReply(
        reply_id=storage_keys.new_id(int(cid.split(".", 1)[0])), conversation_id=cid,
        channel_type=adapter.type_name, channel_instance=adapter.instance, thread_id=handle,
        recipient_handle=handle, text=text, author=principal.name, template=template)
    try:
        message_id, duplicate = await store.enqueue_reply(reply, client_key=start_key)
    except UnknownConversation:
        raise ApiError(409, "the conversation was deleted meanwhile", "conflict") from None
    view = await store.get_message(message_id)
    conversation = await store.get_conversation(cid)
    if view is None or conversation is None:
        raise ApiError(409, "the conversation for this idempotency key is gone", "conflict")
    return json_response(ConversationStarted(conversation, view, duplicate),
                         200 if duplicate else 202)


@routes.post("/api/v1/conversations/{id}/replies/{reply_id}/retry")
@operation(
    "Send a failed reply again",
    {202: ReplyRetried, 403: None, 404: None, 409: None},
    description="For a reply whose delivery state is failed (its attempts ran out, the "
                "channel refused it for good, or a receipt said failed): queued again once, "
                "attempts from 0, through the normal send path. Two retries at once queue "
                "it once; the other answers 409 not_retryable, as does a reply that is not "
                "failed (queued, sending, sent, delivered, read).",
    path_params={"id": "conversation id", "reply_id": "the reply's message id"},
    tag="conversations",
)
async def retry_reply(request: web.Request) -> web.Response:
    require_role(request, "agent")
    conversation = await conversation_or_404(request, access="act")
    store = request.app[K.STORE]
    reply_id = request.match_info["reply_id"]
    message = await store.get_message(reply_id)
    if message is None or message.conversation_id != conversation.id \
            or message.direction != "out":
        raise ApiError(404, "no such reply in this conversation")
    try:
        await store.retry_dead_letter(reply_id)
    except UnknownMessage:
        raise ApiError(404, "no such reply in this conversation") from None
    except NotRetryable:
        current = await store.get_message(reply_id)
        status = current.status if current is not None else message.status
        raise ApiError(409, f"only a failed reply can be retried; this one is {status}",
                       "not_retryable") from None
    view = await store.get_message(reply_id)
    if view is None:
        raise ApiError(404, "no such reply in this conversation")
    return json_response(ReplyRetried(view), 202)

