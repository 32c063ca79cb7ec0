"""A local fake of eBay's Message API, its OAuth refresh grant and Platform Notifications.

Field by field, what is DOCUMENTED (CHANNELS.md §6.2, sources [B1]-[B9]) and what is INFERRED:

* ``GET /commerce/message/v1/conversation`` — DOCUMENTED [B1]: ``conversation_type`` required
  (``FROM_MEMBERS``/``FROM_EBAY``), filters by status, reference, username and time range,
  ``limit`` (default 25, maximum 50) and zero-based ``offset``; the answer
  ``{conversations[ConversationDetail{conversationId, conversationStatus, conversationTitle,
  conversationType, createdDate, latestMessage, referenceId, referenceType, unreadCount}],
  href, limit, next, offset, prev, total}``. INFERRED: the filter parameter names
  ``other_party_username``, ``reference_id``, ``reference_type`` (from the spec's wording),
  and the order (newest latest message first).
* ``GET /commerce/message/v1/conversation/{id}?conversation_type=`` — DOCUMENTED [B1]:
  ``{conversationStatus, conversationTitle, conversationType, href, limit, messages
  [MessageDetail{createdDate, messageBody, messageId, messageMedia, readStatus,
  recipientUsername, senderUsername, subject}], next, offset, prev, total}``, limit/offset
  paging. INFERRED: messages oldest first; 404 for a conversation that is not the caller's.
* ``POST /commerce/message/v1/send_message`` — DOCUMENTED [B1]: ``{conversationId |
  otherPartyUsername, messageText (required), messageMedia[<=5], reference,
  emailCopyToSender}``, the answer ``SendMessageResponse{createdDate, messageBody, messageId,
  messageMedia, readStatus, recipientUserName, senderUserName, subject}``. INFERRED: HTML in
  ``messageText`` refused with a 400 (the Trading API's rule [B8]), 2000 characters maximum.
* Errors ``{"errors": [{errorId, domain, category, message}]}`` — the eBay REST error shape
  (DOCUMENTED for eBay REST APIs generally; the error ids used here are INFERRED).
* ``POST /identity/v1/oauth2/token`` (refresh grant) — eBay's OAuth docs: Basic
  ``AppID:CertID``, form ``grant_type=refresh_token&refresh_token&scope``, answer
  ``{access_token, expires_in, token_type: "User Access Token"}`` without a new refresh token.
  ``rotate=True`` (INFERRED behaviour, for the token battery) also rotates the refresh token
  the way Mercado Libre does, to prove the channel safe if eBay ever did.
* 75 calls per 60 s per seller — DOCUMENTED for the member-message calls [B2]; here every
  Message API call counts (``calls_per_minute``), over it a 429 with ``Retry-After``
  (INFERRED answer shape).
* The SOAP notification — DOCUMENTED: ``MyMessagesM2MMessage`` [B5], ``NotificationSignature``
  = base64(md5(Timestamp + DevID + AppID + CertID)) [B6], the GetMyMessages message fields
  [B4]; the envelope layout (``Header/RequesterCredentials/NotificationSignature``,
  ``Body/GetMyMessagesResponse/{Timestamp, NotificationEventName, RecipientUserID,
  Messages/Message{Sender, RecipientUserID, Subject, MessageID, Text, ItemID, ...}}``) from a
  public integration's recorded notification. INFERRED: that its MessageID equals the REST
  messageId (nothing relies on it but deduplication).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import re
import secrets
import time
from collections import deque
from typing import Any, Self
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.ebay.adapter import EbayRefresher
from channels.ebay.soap import notification_signature
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens, Refresher

SELLER = "shop_seller_uk"
BUYER = "buyer_anna"
DEV_ID = "dev-3f1b2c"
APP_ID = "InboxHub-App-PRD-1a2b3c4d5"
CERT_ID = "PRD-cert-0123456789abcdef"
SCOPE = "https://api.ebay.com/oauth/api_scope/commerce.message"
API = "/commerce/message/v1"
_TAG = re.compile(r"<\s*/?[A-Za-z]")


def iso(at: float) -> str:
    """eBay's ISO 8601 form: ``2026-01-01T10:00:00.000Z``."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def error(status: int, error_id: int, message: str = "error") -> web.Response:
    return web.json_response({"errors": [{"errorId": error_id, "domain": "API_MESSAGE",
                                          "category": "REQUEST", "message": message}]},
                             status=status)


FAILURES: dict[str, tuple[int, int, dict[str, str]]] = {
    "retryable": (503, 355001, {}),
    "rate_limited": (429, 355429, {"Retry-After": "7"}),
    "permanent": (400, 355004, {}),
    # A 401 is answered with a refresh; what no refresh mends is a 403 (insufficient scope).
    "auth": (403, 1100, {}),
}


class EbayFake:
    """The fake; one seller's account (``seller``) holds the tokens, conversations may belong
    to other sellers (``owner``) to prove the channel refuses them."""

    def __init__(self, *, seller: str = SELLER, rotate: bool = False,
                 access_seconds: float = 7200.0, calls_per_minute: int | None = None) -> None:
        self.seller = seller
        self.rotate = rotate
        self.access_seconds = access_seconds
        self.calls_per_minute = calls_per_minute
        self.conversations: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.failures: list[tuple[int, int, dict[str, str]]] = []
        self.send_failures: list[tuple[int, int, dict[str, str]]] = []
        # A broken (or hostile) API that serves conversations of any seller: the channel's
        # own check must refuse them.
        self.leak_foreign = False
        self.listing_enabled = True  # unfiltered lists (the poll) see the conversations
        self._calls: deque[float] = deque()
        self._ids = itertools.count(1)
        # -- channels.testing.tokens.OAuthControl ---------------------------------------
        self.refresh_calls = 0
        self.refused_calls = 0
        self.refused_refreshes = 0
        self.refuse_refresh = False
        self.refuse_access = False
        self.refresh_delay = 0.0
        self._live_access: set[str] = set()
        self._live_refresh: set[str] = set()
        self._issued: list[str] = []
        self._accepted: list[str] = []
        self._newest: str | None = None
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def token_url(self) -> str:
        return self.url + "/identity/v1/oauth2/token"

    # -- tokens (OAuthControl) ---------------------------------------------------------------

    def _mint(self, kind: str) -> str:
        token = f"{kind}-{next(self._ids)}-{secrets.token_urlsafe(16)}"
        self._issued.append(token)
        return token

    def grant(self, expires_in: float | None = None) -> OAuthTokens:
        lifetime = self.access_seconds if expires_in is None else expires_in
        access, refresh = self._mint("v^1.1#i^1#access"), self._mint("v^1.1#i^1#refresh")
        self._live_access.add(access)
        self._live_refresh.add(refresh)
        self._newest = access
        return OAuthTokens(access_token=access, refresh_token=refresh,
                           expires_at=time.time() + lifetime, scope=SCOPE)

    def revoke_access(self) -> None:
        self._live_access.clear()

    def issued(self) -> list[str]:
        return list(self._issued)

    def newest_access_token(self) -> str | None:
        return self._newest

    def accepted_tokens(self) -> list[str]:
        return list(self._accepted)

    def refresher(self, http: aiohttp.ClientSession) -> Refresher:
        return EbayRefresher(http, self.token_url, app_id=APP_ID,
                             cert_id=Secret(CERT_ID, "test"), timeout=10.0)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and token in self._live_access and not self.refuse_access:
            self._accepted.append(token)
            return True
        self.refused_calls += 1
        return False

    async def token(self, request: web.Request) -> web.Response:
        self.refresh_calls += 1
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        basic = "Basic " + base64.b64encode(f"{APP_ID}:{CERT_ID}".encode()).decode()
        if request.headers.get("Authorization") != basic:
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        used = form.get("refresh_token")
        if self.refuse_refresh or not isinstance(used, str) or used not in self._live_refresh:
            self.refused_refreshes += 1
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "the refresh token is invalid"},
                                     status=400)
        if form.get("scope") not in (None, SCOPE):
            return web.json_response({"error": "invalid_scope"}, status=400)
        access = self._mint("v^1.1#i^1#access")
        self._live_access.add(access)
        self._newest = access
        answer: dict[str, Any] = {"access_token": access, "expires_in": self.access_seconds,
                                  "token_type": "User Access Token"}
        if self.rotate:
            self._live_refresh.discard(used)
            answer["refresh_token"] = self._mint("v^1.1#i^1#refresh")
            self._live_refresh.add(answer["refresh_token"])
        return web.json_response(answer)

    # -- data --------------------------------------------------------------------------------

    def conversation(self, cid: str, buyer: str = BUYER, item: str | None = "110164967546", *,
                     owner: str | None = None, created: float | None = None
                     ) -> dict[str, Any]:
        found = self.conversations.get(cid)
        if found is None:
            found = self.conversations[cid] = {
                "conversationId": cid, "conversationType": "FROM_MEMBERS",
                "conversationStatus": "ACTIVE", "conversationTitle": f"About item {item}",
                "createdDate": iso(created if created is not None else time.time()),
                "referenceId": item, "referenceType": "LISTING" if item else None,
                "owner": owner or self.seller, "buyer": buyer, "messages": []}
        return found

    def buyer_writes(self, cid: str, text: str, *, buyer: str = BUYER,
                     item: str | None = "110164967546", at: float | None = None,
                     message_id: str | None = None, owner: str | None = None
                     ) -> dict[str, Any]:
        conversation = self.conversation(cid, buyer, item, owner=owner, created=at)
        message = {"messageId": message_id or f"m{next(self._ids):010d}",
                   "createdDate": iso(at if at is not None else time.time()),
                   "messageBody": text, "messageMedia": [], "readStatus": False,
                   "recipientUsername": conversation["owner"], "senderUsername": buyer,
                   "subject": conversation["conversationTitle"]}
        self.add(cid, message)
        return message

    def add(self, cid: str, message: dict[str, Any]) -> None:
        messages = self.conversations[cid]["messages"]
        messages[:] = [m for m in messages if m["messageId"] != message["messageId"]]
        messages.append(message)
        messages.sort(key=lambda m: m["createdDate"])

    def soap_notification(self, buyer: str = BUYER, item: str | None = "110164967546",
                     message_id: str = "5882110", *, recipient: str | None = None,
                     timestamp: str | None = None, event: str = "MyMessagesM2MMessage",
                     text: str = "Hello, where is my parcel?",
                     signature: str | None = None, cert_id: str = CERT_ID) -> bytes:
        """The SOAP body eBay POSTs, signed as eBay signs it unless ``signature`` is given."""
        stamp = timestamp or iso(time.time())
        signed = signature if signature is not None else notification_signature(
            stamp, DEV_ID, APP_ID, cert_id)
        to = escape(recipient if recipient is not None else self.seller)
        item_xml = f"<ItemID>{escape(item)}</ItemID>" if item else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<soapenv:Header><ebl:RequesterCredentials soapenv:mustUnderstand="0" '
            'xmlns:ns="urn:ebay:apis:eBLBaseComponents" '
            'xmlns:ebl="urn:ebay:apis:eBLBaseComponents">'
            f'<ebl:NotificationSignature xmlns:ebl="urn:ebay:apis:eBLBaseComponents">'
            f'{escape(signed)}</ebl:NotificationSignature></ebl:RequesterCredentials>'
            '</soapenv:Header><soapenv:Body>'
            '<GetMyMessagesResponse xmlns="urn:ebay:apis:eBLBaseComponents">'
            f'<Timestamp>{stamp}</Timestamp><Ack>Success</Ack>'
            '<CorrelationID>636329690</CorrelationID><Version>1423</Version>'
            f'<NotificationEventName>{escape(event)}</NotificationEventName>'
            f'<RecipientUserID>{to}</RecipientUserID><EIASToken>nY+sHZ2PrBmdj6wVnY+s'
            '</EIASToken><Messages><Message>'
            f'<Sender>{escape(buyer)}</Sender><SendingUserID>133055376</SendingUserID>'
            f'<RecipientUserID>{to}</RecipientUserID><SendToName>{to}</SendToName>'
            f'<Subject>{escape(buyer)} sent a message about item {escape(item or "")}'
            f'</Subject><MessageID>{escape(message_id)}</MessageID>'
            f'<ExternalMessageID>1137081010</ExternalMessageID><Text>{escape(text)}</Text>'
            '<Flagged>false</Flagged><Read>false</Read>'
            f'<ReceiveDate>{stamp}</ReceiveDate>{item_xml}'
            '<MessageType>ContactTransactionPartner</MessageType><Replied>false</Replied>'
            '</Message></Messages></GetMyMessagesResponse>'
            '</soapenv:Body></soapenv:Envelope>').encode()

    # -- plumbing ----------------------------------------------------------------------------

    def _limited(self) -> web.Response | None:
        if self.calls_per_minute is None:
            return None
        now = time.monotonic()
        while self._calls and self._calls[0] <= now - 60:
            self._calls.popleft()
        if len(self._calls) >= self.calls_per_minute:
            wait = max(1, int(self._calls[0] + 60 - now) + 1)
            response = error(429, 355429, "Too many requests")
            response.headers["Retry-After"] = str(wait)
            return response
        self._calls.append(now)
        return None

    async def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.method, request.path, dict(request.query)))
        if (limited := self._limited()) is not None:
            return limited
        if not self._authorized(request):
            return error(401, 1001, "Invalid access token")
        if self.failures:
            status, error_id, headers = self.failures.pop(0)
            response = error(status, error_id)
            response.headers.update(headers)
            return response
        return None

    def _visible(self, conversation: dict[str, Any]) -> bool:
        return self.leak_foreign or conversation["owner"] == self.seller

    @staticmethod
    def _public(conversation: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in conversation.items() if k not in ("owner", "buyer",
                                                                      "messages")}
        messages = conversation["messages"]
        shown["latestMessage"] = messages[-1] if messages else None
        shown["unreadCount"] = sum(1 for m in messages if not m["readStatus"])
        return shown

    async def list_conversations(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        return self._listing(request)

    def _listing(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("conversation_type") not in ("FROM_MEMBERS", "FROM_EBAY"):
            return error(400, 355003, "conversation_type is required")
        limit = int(query.get("limit", "25"))
        offset = int(query.get("offset", "0"))
        if not 1 <= limit <= 50 or offset < 0:
            return error(400, 355005, "limit or offset out of range")
        other, reference = query.get("other_party_username"), query.get("reference_id")
        filtered = other is not None or reference is not None
        found = [c for c in self.conversations.values() if self._visible(c)
                 and c["conversationType"] == query["conversation_type"]
                 and (other is None or c["buyer"] == other)
                 and (reference is None or c["referenceId"] == reference)
                 and (filtered or self.listing_enabled) and c["messages"]]
        found.sort(key=lambda c: c["messages"][-1]["createdDate"], reverse=True)
        page = found[offset:offset + limit]
        base = f"{API}/conversation?conversation_type={query['conversation_type']}"
        answer: dict[str, Any] = {
            "conversations": [self._public(c) for c in page], "total": len(found),
            "limit": limit, "offset": offset,
            "href": f"{base}&limit={limit}&offset={offset}"}
        if offset + limit < len(found):
            answer["next"] = f"{base}&limit={limit}&offset={offset + limit}"
        if offset > 0:
            answer["prev"] = f"{base}&limit={limit}&offset={max(0, offset - limit)}"
        return web.json_response(answer)

    async def get_conversation(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        return self._conversation_page(request)

    def _conversation_page(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("conversation_type") not in ("FROM_MEMBERS", "FROM_EBAY"):
            return error(400, 355003, "conversation_type is required")
        found = self.conversations.get(request.match_info["id"])
        if found is None or not self._visible(found):
            return error(404, 355010, "conversation not found")
        limit = int(query.get("limit", "25"))
        offset = int(query.get("offset", "0"))
        messages = found["messages"]
        answer: dict[str, Any] = {
            "conversationStatus": found["conversationStatus"],
            "conversationTitle": found["conversationTitle"],
            "conversationType": found["conversationType"],
            "messages": messages[offset:offset + limit], "total": len(messages),
            "limit": limit, "offset": offset, "href": request.path_qs}
        if offset + limit < len(messages):
            answer["next"] = f"{request.path}?conversation_type={query['conversation_type']}" \
                             f"&limit={limit}&offset={offset + limit}"
        return web.json_response(answer)

    async def send_message(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        if self.send_failures:
            status, error_id, headers = self.send_failures.pop(0)
            response = error(status, error_id)
            response.headers.update(headers)
            return response
        body = await request.json()
        text = body.get("messageText")
        if not isinstance(text, str) or not text or len(text) > 2000 or _TAG.search(text):
            return error(400, 355020, "messageText is missing, too long or has HTML")
        found = self.conversations.get(str(body.get("conversationId")))
        if found is None or not self._visible(found):
            return error(400, 355011, "conversation not found")
        message = {"messageId": f"s{next(self._ids):010d}", "createdDate": iso(time.time()),
                   "messageBody": text, "messageMedia": [], "readStatus": False,
                   "recipientUsername": found["buyer"], "senderUsername": found["owner"],
                   "subject": found["conversationTitle"]}
        self.add(found["conversationId"], message)
        self.sent.append({**body, "to": found["buyer"]})
        return web.json_response({
            "createdDate": message["createdDate"], "messageBody": text,
            "messageId": message["messageId"], "readStatus": False,
            "recipientUserName": found["buyer"], "senderUserName": found["owner"],
            "subject": found["conversationTitle"]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/identity/v1/oauth2/token", self.token)
        app.router.add_get(f"{API}/conversation", self.list_conversations)
        app.router.add_get(f"{API}/conversation/{{id}}", self.get_conversation)
        app.router.add_post(f"{API}/send_message", self.send_message)
        return app

    async def __aenter__(self) -> Self:
        self.server = TestServer(self.app(), host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


class KitEbay(EbayFake):
    """The fake as the conformance kit's ``FetchProvider`` and ``PollingProvider``: a case's
    payload is ``{"conversationId", "buyer", "itemId", "message": MessageDetail}``; a fetch
    request is the filtered conversation lookup a notification leads to."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._open = asyncio.Event()
        self._open.set()
        self.fetches = 0
        self.fetch_failures: list[tuple[int, int, dict[str, str]]] = []
        self._stamps: dict[tuple[str, int], str] = {}
        # The kit drives the notify path: the reconciliation poll lists nothing unless a test
        # (the polling battery) turns it on.
        self.listing_enabled = False

    def publish(self, case: Any) -> None:
        payload = case.payload
        self.conversation(payload["conversationId"], payload["buyer"], payload["itemId"])
        self.add(payload["conversationId"], dict(payload["message"]))

    def notification(self, case: Any, number: int, **claims: Any) -> bytes:
        payload = case.payload
        # The same number is the same notification sent again: byte for byte, its Timestamp
        # included.
        stamp = self._stamps.setdefault((case.provider_message_id, number),
                                        iso(time.time() + number / 1000))
        return self.soap_notification(payload["buyer"], payload["itemId"],
                                    payload["message"]["messageId"], timestamp=stamp,
                                    **claims)

    def forged_notification(self, case: Any, number: int) -> bytes | None:
        return self.notification(case, number, text="Pay me here instead: forged")

    def signed_headers(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}

    def hold_fetches(self) -> None:
        self._open.clear()

    def release_fetches(self) -> None:
        self._open.set()

    def fail_next_fetch(self, kind: str) -> None:
        self.fetch_failures.append(FAILURES[kind])

    def fail_next_send(self, kind: str) -> None:
        self.send_failures.append(FAILURES[kind])

    @property
    def fetch_requests(self) -> int:
        return self.fetches

    def sent_records(self) -> list[Any]:
        from channels.testing import SentRecord
        return [SentRecord(recipient=s["to"], text=s["messageText"],
                           thread_id=s["conversationId"]) for s in self.sent]

    async def list_conversations(self, request: web.Request) -> web.Response:
        if "other_party_username" not in request.query:
            return await super().list_conversations(request)
        self.fetches += 1
        await self._open.wait()
        if self.fetch_failures:
            status, error_id, headers = self.fetch_failures.pop(0)
            response = error(status, error_id)
            response.headers.update(headers)
            return response
        return await super().list_conversations(request)
