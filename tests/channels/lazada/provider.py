"""A local fake of the Lazada IM Open API (CHANNELS.md §6.6), served under ``/rest``.

DOCUMENTED (§6.6) and followed here:

* the signing of every call: ``app_key``, ``timestamp`` (ms), ``sign_method=sha256``,
  ``access_token`` and ``sign = upper(hex(HMAC-SHA256(app_secret, api_path +
  concat(sorted(key + value)))))`` over every parameter (query and form) but ``sign``: the fake
  VERIFIES it and refuses a missing or wrong one;
* ``/im/session/list`` (``start_time``, ``last_session_id``, ``page_size`` <= 20),
  ``/im/session/get``, ``/im/session/open`` (``order_id``; only within 7 days after the
  order), ``/im/message/list`` (``session_id``, ``start_time``, ``last_message_id``,
  ``page_size`` <= 20), ``/im/message/send`` (``template_id`` 1 text, 3 image, 10007 order);
* ``process_msg`` on a message blocked by moderation; per-country hosts with ``/rest``.

INFERRED (not in our sources), field by field:

* the answer envelope ``{code: "0", data, request_id}`` and errors ``{code, type, message,
  request_id}`` with HTTP 200 (Lazada's platform habit); ``type`` ISV (caller) / ISP (server);
  error codes ``IncompleteSignature``, ``InvalidSignature``, ``InvalidAppKey``,
  ``InvalidTimestamp``, ``IllegalAccessToken``, ``ApiCallLimit`` (here with HTTP 429 and
  ``Retry-After``), ``InsufficientPermission``, ``InvalidParameter``, ``ServiceUnavailable``
  (HTTP 503), ``SessionNotFound``, ``OrderNotFound``, ``OrderChatClosed``,
  ``IllegalRefreshToken``;
* session fields ``session_id``, ``seller_id``, ``buyer_id``, ``title`` (buyer name),
  ``last_message_id``, ``last_message_time`` (ms); list fields ``session_list``, ``has_more``,
  ``next_start_time``, ``last_session_id``;
* message fields ``message_id``, ``session_id``, ``template_id``, ``from_account_type`` (1
  buyer, 2 seller), ``from_account_id``, ``to_account_id``, ``send_time`` (ms), ``content``
  (a JSON string: ``{"txt"}``, ``{"imgUrl"}``, ``{"orderId"}``), ``process_msg``; list fields
  ``message_list``, ``has_more``, ``next_start_time``, ``last_message_id``;
* paging direction: both lists run newest first; ``start_time`` is an upper bound, and with
  ``last_*_id`` the page starts after that entry (ties on the time broken by the id);
* send parameters ``session_id``, ``txt``, ``order_id``; answers ``{message_id}``,
  ``{session_id}``;
* ``/order/get`` (Lazada's order API, not the IM one) answering ``{order_id, created_at:
  "YYYY-MM-DD HH:MM:SS +0800"}``; ``/auth/token/refresh`` (signed, no access token) answering
  ``{access_token, refresh_token, expires_in, refresh_expires_in, code}``, rotating the
  refresh token;
* the push body ``{seller_id, message_type, timestamp, site, data: {session_id, message_id,
  ...}}``.

The fake also plays the token side of the kit's token battery (``OAuthControl``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections import deque
from typing import Any, Self

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.lazada.adapter import LazadaRefresher
from channels.lazada.signing import verify_sign
from channels.models import TemplateRef
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens, Refresher
from channels.testing import InboundCase, SentRecord
from channels.testing.core import FailureKind

APP_KEY = "112233"
APP_SECRET = "lazada-app-secret-0123456789abcdef"
SELLER = "100200300"
OTHER_SELLER = "999888777"
BUYER = "5550001"
BUYER_NAME = "Siti Aminah"
# Kit cases are written in order from here on (ms), an hour ago: inside the first poll's reach.
BASE_MS = int(time.time() * 1000) - 3_600_000


def lazada_error(code: str, kind: str = "ISV", status: int = 200,
                 headers: dict[str, str] | None = None,
                 message: str = "error") -> web.Response:
    return web.json_response({"code": code, "type": kind, "message": message,
                              "request_id": secrets.token_hex(8)}, status=status,
                             headers=headers)


def ok(data: Any) -> web.Response:
    return web.json_response({"code": "0", "data": data, "request_id": secrets.token_hex(8)})


_FAILURES: dict[str, tuple[str, str, int, dict[str, str]]] = {
    "retryable": ("ServiceUnavailable", "ISP", 503, {}),
    "rate_limited": ("ApiCallLimit", "ISV", 429, {"Retry-After": "7"}),
    "permanent": ("InvalidParameter", "ISV", 200, {}),
    # What no refresh mends: the app lacks the permission (INFERRED shape).
    "auth": ("InsufficientPermission", "ISV", 200, {}),
}


class LazadaFake:
    def __init__(self, *, seller: str = SELLER, rate_per_minute: int | None = None,
                 access_seconds: float = 7 * 86400.0) -> None:
        self.seller = seller
        self.rate_per_minute = rate_per_minute
        self.access_seconds = access_seconds
        self.sessions: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.opened: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bad_signatures = 0
        self.listing_enabled = True
        self.send_failures: list[tuple[str, str, int, dict[str, str]]] = []
        self.fetch_failures: list[tuple[str, str, int, dict[str, str]]] = []
        self.fetches = 0
        self._open = asyncio.Event()
        self._open.set()
        self._calls: deque[float] = deque()
        self._serial = itertools.count(1)
        # -- the token side (channels.testing.tokens.OAuthControl) --
        self.refresh_calls = 0
        self.refused_calls = 0
        self.refuse_refresh = False
        self.refuse_access = False
        self.refresh_delay = 0.0
        self._live_access: set[str] = set()
        self._live_refresh: set[str] = set()
        self._issued: list[str] = []
        self._newest: str | None = None
        self._accepted: list[str] = []
        self.server: TestServer | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def root(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def url(self) -> str:
        """What ``api_base_url`` is set to: the host plus ``/rest`` (documented)."""
        return self.root + "/rest"

    @property
    def token_url(self) -> str:
        return self.root + "/rest/auth/token/refresh"

    # -- tokens (OAuthControl) ---------------------------------------------------------------

    def _mint(self, kind: str) -> str:
        token = f"{kind}{next(self._serial)}{secrets.token_hex(12)}"
        self._issued.append(token)
        return token

    def grant(self, expires_in: float | None = None) -> OAuthTokens:
        access, refresh = self._mint("50000"), self._mint("50001")
        self._live_access.add(access)
        self._live_refresh.add(refresh)
        self._newest = access
        lifetime = self.access_seconds if expires_in is None else expires_in
        return OAuthTokens(access_token=access, refresh_token=refresh,
                           expires_at=time.time() + lifetime)

    def revoke_access(self) -> None:
        self._live_access.clear()

    def issued(self) -> list[str]:
        return list(self._issued)

    def newest_access_token(self) -> str | None:
        return self._newest

    def accepted_tokens(self) -> list[str]:
        return list(self._accepted)

    def refresher(self, http: aiohttp.ClientSession) -> Refresher:
        return LazadaRefresher(http, self.token_url, app_key=APP_KEY,
                               app_secret=Secret(APP_SECRET, "test"), timeout=10.0)

    # -- data --------------------------------------------------------------------------------

    def add_session(self, session_id: str, *, seller: str | None = None, buyer: str = BUYER,
                    title: str = BUYER_NAME) -> dict[str, Any]:
        session = self.sessions.setdefault(session_id, {
            "session_id": session_id, "seller_id": seller or self.seller, "buyer_id": buyer,
            "title": title, "last_message_id": "", "last_message_time": 0,
            "unread_count": 0, "site_id": "lazada_my"})
        self.messages.setdefault(session_id, [])
        return session

    def add_message(self, session_id: str, message: dict[str, Any]) -> None:
        """Add (or replace: the same id sent again) a message and bump its session."""
        session = self.add_session(session_id)
        listed = self.messages[session_id]
        listed[:] = [m for m in listed if m["message_id"] != message["message_id"]]
        listed.append(message)
        newest = max(listed, key=lambda m: (m["send_time"], m["message_id"]))
        session["last_message_time"] = newest["send_time"]
        session["last_message_id"] = newest["message_id"]

    def buyer_message(self, session_id: str, n: int, text: str = "Hi, where is my parcel?",
                      *, template_id: int = 1, content: dict[str, Any] | None = None,
                      sender: str = BUYER, send_time: int | None = None,
                      **extra: Any) -> dict[str, Any]:
        message = {"message_id": f"7{n:011d}", "session_id": session_id,
                   "template_id": template_id, "from_account_type": 1,
                   "from_account_id": sender, "to_account_id": self.seller,
                   "send_time": BASE_MS + n * 1000 if send_time is None else send_time,
                   "content": json.dumps(content if content is not None else {"txt": text}),
                   "status": 0, **extra}
        self.add_message(session_id, message)
        return message

    def seller_message(self, session_id: str, n: int, text: str = "Thank you!") -> None:
        self.add_message(session_id, {
            "message_id": f"8{n:011d}", "session_id": session_id, "template_id": 1,
            "from_account_type": 2, "from_account_id": self.seller, "to_account_id": BUYER,
            "send_time": BASE_MS + n * 1000, "content": json.dumps({"txt": text})})

    def add_order(self, order_id: str, *, age_seconds: float, buyer: str = BUYER,
                  seller: str | None = None) -> None:
        created = time.time() - age_seconds
        self.orders[order_id] = {"order_id": order_id, "seller": seller or self.seller,
                                 "buyer": buyer, "created": created,
                                 "created_at": time.strftime("%Y-%m-%d %H:%M:%S +0000",
                                                             time.gmtime(created))}

    def push_body(self, session_id: str, message_id: str | None = None, *,
                  seller: str | None = None, number: int = 1, **data: Any) -> bytes:
        body: dict[str, Any] = {"session_id": session_id, **data}
        if message_id is not None:
            body["message_id"] = message_id
        return json.dumps({"seller_id": seller or self.seller, "message_type": 2,
                           "timestamp": BASE_MS + number, "site": "lazada_my",
                           "data": body}).encode()

    # -- plumbing ----------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update({k: str(v) for k, v in form.items()})
        return params

    def _verify(self, api_path: str, params: dict[str, str], *,
                token: bool = True) -> web.Response | None:
        """Signature, app key, timestamp and (``token``) the access token."""
        if params.get("app_key") != APP_KEY:
            return lazada_error("InvalidAppKey")
        if "sign" not in params or params.get("sign_method") != "sha256":
            self.bad_signatures += 1
            return lazada_error("IncompleteSignature")
        if not verify_sign(APP_SECRET.encode(), api_path, params):
            self.bad_signatures += 1
            return lazada_error("InvalidSignature")
        try:
            skew = abs(int(params.get("timestamp", "")) - time.time() * 1000)
        except ValueError:
            skew = float("inf")
        if skew > 7200 * 1000:
            return lazada_error("InvalidTimestamp")
        if token:
            given = params.get("access_token", "")
            if self.refuse_access or given not in self._live_access:
                self.refused_calls += 1
                return lazada_error("IllegalAccessToken")
            self._accepted.append(given)
        return None

    def _limited(self) -> web.Response | None:
        if self.rate_per_minute is None:
            return None
        now = time.monotonic()
        while self._calls and self._calls[0] <= now - 60:
            self._calls.popleft()
        if len(self._calls) >= self.rate_per_minute:
            wait = max(1, int(self._calls[0] + 60 - now) + 1)
            return lazada_error("ApiCallLimit", status=429, headers={"Retry-After": str(wait)},
                                message=f"This ban will last {wait} more seconds")
        self._calls.append(now)
        return None

    def _api(self, api_path: str, handler: Any) -> Any:
        async def serve(request: web.Request) -> web.Response:
            params = await self._params(request)
            self.requests.append((api_path, params))
            refused = self._limited() or self._verify(api_path, params)
            if refused is not None:
                return refused
            result: web.Response = await handler(request, params)
            return result
        return serve

    @staticmethod
    def _failure(failures: list[tuple[str, str, int, dict[str, str]]]) -> web.Response | None:
        if not failures:
            return None
        code, kind, status, headers = failures.pop(0)
        return lazada_error(code, kind, status, headers)

    @staticmethod
    def _page_size(params: dict[str, str]) -> int | None:
        try:
            size = int(params.get("page_size", "20"))
        except ValueError:
            return None
        return size if 1 <= size <= 20 else None

    @staticmethod
    def _page(entries: list[dict[str, Any]], time_key: str, id_key: str,
              params: dict[str, str], last_key: str, size: int
              ) -> tuple[list[dict[str, Any]], bool]:
        ordered = sorted(entries, key=lambda e: (e[time_key], e[id_key]), reverse=True)
        start = int(params.get("start_time") or 2**62)
        last = params.get(last_key, "")
        if last:
            after = [e for e in ordered if (e[time_key], e[id_key]) < (start, last)]
        else:
            after = [e for e in ordered if e[time_key] <= start]
        return after[:size], len(after) > size

    # -- endpoints ---------------------------------------------------------------------------

    async def session_list(self, request: web.Request, params: dict[str, str]) -> web.Response:
        size = self._page_size(params)
        if size is None:
            return lazada_error("InvalidParameter", message="page_size must be 1-20")
        mine = [s for s in self.sessions.values()
                if s["seller_id"] == self.seller and s["last_message_time"] > 0]
        if not self.listing_enabled:
            mine = []
        page, more = self._page(mine, "last_message_time", "session_id", params,
                                "last_session_id", size)
        tail = page[-1] if page else None
        return ok({"session_list": page, "has_more": more,
                   "next_start_time": tail["last_message_time"] if tail else None,
                   "last_session_id": tail["session_id"] if tail else None})

    async def session_get(self, request: web.Request, params: dict[str, str]) -> web.Response:
        self.fetches += 1
        await self._open.wait()
        if (failed := self._failure(self.fetch_failures)) is not None:
            return failed
        session = self.sessions.get(params.get("session_id", ""))
        if session is None:
            return lazada_error("SessionNotFound")
        # INFERRED: the session is returned with its seller_id (an app authorized by several
        # sellers sees theirs); the adapter must check it.
        return ok(session)

    async def message_list(self, request: web.Request, params: dict[str, str]) -> web.Response:
        size = self._page_size(params)
        if size is None:
            return lazada_error("InvalidParameter", message="page_size must be 1-20")
        session = self.sessions.get(params.get("session_id", ""))
        if session is None or session["seller_id"] != self.seller:
            return lazada_error("SessionNotFound")
        page, more = self._page(self.messages[session["session_id"]], "send_time",
                                "message_id", params, "last_message_id", size)
        tail = page[-1] if page else None
        return ok({"message_list": page, "has_more": more,
                   "next_start_time": tail["send_time"] if tail else None,
                   "last_message_id": tail["message_id"] if tail else None})

    async def message_send(self, request: web.Request, params: dict[str, str]) -> web.Response:
        if (failed := self._failure(self.send_failures)) is not None:
            return failed
        session = self.sessions.get(params.get("session_id", ""))
        if session is None or session["seller_id"] != self.seller:
            return lazada_error("SessionNotFound")
        template = params.get("template_id")
        if template == "1":
            text = params.get("txt", "")
            if not text:
                return lazada_error("MissingParameter", message="txt")
            content: dict[str, Any] = {"txt": text}
        elif template == "10007":
            content = {"orderId": params.get("order_id", "")}
        else:
            return lazada_error("InvalidParameter", message="template_id")
        n = next(self._serial)
        message_id = f"9{n:011d}"
        self.add_message(session["session_id"], {
            "message_id": message_id, "session_id": session["session_id"],
            "template_id": int(template), "from_account_type": 2,
            "from_account_id": self.seller, "to_account_id": session["buyer_id"],
            "send_time": int(time.time() * 1000), "content": json.dumps(content)})
        self.sent.append({"session_id": session["session_id"], "template_id": int(template),
                          "recipient": session["buyer_id"], **content})
        return ok({"message_id": message_id})

    async def session_open(self, request: web.Request, params: dict[str, str]) -> web.Response:
        order = self.orders.get(params.get("order_id", ""))
        if order is None or order["seller"] != self.seller:
            return lazada_error("OrderNotFound")
        if time.time() - order["created"] > 7 * 86400:  # documented rule
            return lazada_error("OrderChatClosed")
        session_id = f"order-{order['order_id']}"
        self.add_session(session_id, buyer=order["buyer"])
        self.opened.append(order["order_id"])
        return ok({"session_id": session_id})

    async def order_get(self, request: web.Request, params: dict[str, str]) -> web.Response:
        order = self.orders.get(params.get("order_id", ""))
        if order is None or order["seller"] != self.seller:
            return lazada_error("OrderNotFound")
        return ok({"order_id": order["order_id"], "created_at": order["created_at"]})

    async def refresh(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        self.requests.append(("/auth/token/refresh", params))
        self.refresh_calls += 1
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        refused = self._verify("/auth/token/refresh", params, token=False)
        if refused is not None:
            return refused
        used = params.get("refresh_token", "")
        if self.refuse_refresh or used not in self._live_refresh:
            return lazada_error("IllegalRefreshToken")
        self._live_refresh.discard(used)  # rotation: the old refresh token is spent
        tokens = self.grant()
        return web.json_response({"access_token": tokens.access_token,
                                  "refresh_token": tokens.refresh_token,
                                  "expires_in": int(self.access_seconds),
                                  "refresh_expires_in": 30 * 86400, "country": "my",
                                  "code": "0", "request_id": secrets.token_hex(8)})

    async def __aenter__(self) -> Self:
        app = web.Application()
        # GET or POST (the SDK's default), parameters in the query or the form: both signed.
        for path, handler in (
                ("/im/session/list", self.session_list), ("/im/session/get", self.session_get),
                ("/im/session/open", self.session_open), ("/im/message/list", self.message_list),
                ("/im/message/send", self.message_send), ("/order/get", self.order_get)):
            app.router.add_get("/rest" + path, self._api(path, handler))
            app.router.add_post("/rest" + path, self._api(path, handler))
        app.router.add_post("/rest/auth/token/refresh", self.refresh)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    # -- the conformance kit's provider (FetchProvider, PollingProvider) ---------------------

    def publish(self, case: InboundCase) -> None:
        payload = case.payload
        self.add_session(payload["session_id"])
        self.add_message(payload["session_id"], dict(payload))

    def notification(self, case: InboundCase, number: int) -> bytes:
        return self.push_body(case.thread_id, case.provider_message_id, number=number)

    def forged_notification(self, case: InboundCase, number: int) -> bytes | None:
        return self.push_body(case.thread_id, case.provider_message_id, number=number,
                              content=json.dumps({"txt": "Pay here: forged"}),
                              from_account_id="666", template_id=1)

    def signed_headers(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json"}  # no push signature is verified

    def hold_fetches(self) -> None:
        self._open.clear()

    def release_fetches(self) -> None:
        self._open.set()

    def fail_next_fetch(self, kind: FailureKind) -> None:
        self.fetch_failures.append(_FAILURES[kind])

    def fail_next_send(self, kind: FailureKind) -> None:
        self.send_failures.append(_FAILURES[kind])

    @property
    def fetch_requests(self) -> int:
        return self.fetches

    def sent_records(self) -> list[SentRecord]:
        return [SentRecord(recipient=str(s["recipient"]), text=s.get("txt", ""),
                           thread_id=s["session_id"]) for s in self.sent]

    def sent_templates(self) -> list[TemplateRef | None]:
        return [TemplateRef("order_card", None, (s["orderId"],)) if s["template_id"] == 10007
                else None for s in self.sent]


def kit_case(n: int, text: str, *, session: str | None = None) -> InboundCase:
    """A buyer's text in a session of its own (a fetch stores the session's messages)."""
    sid = session or f"10{n:08d}"
    mid = f"7{n:011d}"
    return InboundCase(
        name=f"message {n}",
        payload={"message_id": mid, "session_id": sid, "template_id": 1,
                 "from_account_type": 1, "from_account_id": BUYER, "to_account_id": SELLER,
                 "send_time": BASE_MS + n * 1000, "content": json.dumps({"txt": text}),
                 "status": 0},
        provider_message_id=mid, thread_id=sid, sender_handle=BUYER, text=text,
        sender_name=BUYER_NAME)
