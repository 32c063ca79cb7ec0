"""A local fake of the Shopee Open Platform v2, for tests.

DOCUMENTED (docs copy [S1][S2], CHANNELS.md §6.4): the common query params and ``sign`` of
shop-level and public calls, the 5-minute timestamp window, the ``{request_id, error, message,
warning, response}`` envelope, the token refresh body and answer, refresh-token rotation, the
push ``Authorization`` HMAC over ``callback_url|body``.
INFERRED (SDK names only [S3]): the chat endpoints' response shapes (``messages``,
``conversations``, ``page_result.next_cursor.next_message_time_nano``), the push ``data``
shape (``conversation_id``, ``message_id``), the error code names.
INFERRED (third-party SDK code, no official reference): ``upload_image`` takes multipart
``file`` (jpg/png/gif, at most 2 MB) and answers ``response {url, thumbnail}``; an image is
sent as ``message_type "image"`` with ``content {image_url}``; a buyer's image message is
``message_type "image"`` with ``content {url}`` (CHANNELS.md §6.4 lists ``content{url}``),
served by Shopee's CDN without a signature (here ``/file/{id}/{name}`` on the same server).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import secrets
import time
import urllib.parse
from typing import Any, Self

import msgspec
from aiohttp import web

from channels.services.tokens import OAuthTokens, Refresher
from channels.shopee.signing import public_sign, push_signature, shop_sign

PUBLIC_PATHS = {"/api/v2/auth/access_token/get"}
UPLOAD_PATH = "/api/v2/sellerchat/upload_image"
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # INFERRED (third-party SDK code)
UPLOAD_TYPES = {"image/jpeg", "image/png", "image/gif"}  # INFERRED likewise


def envelope(response: Any = None, *, error: str = "", message: str = "") -> dict[str, Any]:
    return {"request_id": "r-1", "error": error, "message": message, "warning": "",
            "response": response}


class ShopeeFake:
    def __init__(self, *, partner_id: int, partner_key: str, shop_id: int,
                 access_token: str = "at-0", refresh_token: str = "rt-0") -> None:
        self.partner_id, self.key, self.shop_id = partner_id, partner_key.encode(), shop_id
        self.access_tokens = {access_token}
        self.refresh_token = refresh_token
        self.used_refresh_tokens: set[str] = set()
        self.refreshes = 0
        self.latency = 0.0
        self.rate_limited = 0  # the next N calls answer 429 error_rate_limit
        self.conversations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.sent: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.bad_signs = 0
        # The CDN: file id -> (status, bytes, content type, extra headers); no signature.
        self.files: dict[str, tuple[int, bytes, str, dict[str, str]]] = {}
        self.file_requests: list[str] = []
        # Hosted URL -> (file name, content type, bytes) of each upload_image, in order.
        self.uploads: dict[str, tuple[str, str, bytes]] = {}
        # The token side, as the conformance kit's OAuthControl reads it.
        self.refresh_calls = 0  # requests to the token endpoint
        self.refused_calls = 0  # API calls refused for their access token
        self.refuse_refresh = False
        self.refuse_access = False
        self.refresh_delay = 0.0
        self.accepted: list[str] = []
        # (path, n) -> (status, error code): the n-th authorized call to path fails so.
        self.fail_on: dict[tuple[str, int], tuple[int, str]] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- state --------------------------------------------------------------------------------

    def buyer_writes(self, conversation: str, buyer: int, text: str, *, name: str = "Ana",
                     ts: int | None = None, order_sn: str | None = None) -> str:
        ts = ts or int(time.time())
        mid = f"{next(self._ids):06d}"
        content: dict[str, Any] = {"text": text}
        if order_sn:
            content = {"order_sn": order_sn}
        self.messages.setdefault(conversation, []).append({
            "message_id": mid, "message_type": "order" if order_sn else "text",
            "from_id": buyer, "to_id": self.shop_id, "conversation_id": conversation,
            "created_timestamp": ts, "content": content})
        self.conversations[conversation] = {"conversation_id": conversation, "to_id": buyer,
                                            "to_name": name,
                                            "last_message_timestamp": ts * 10**9}
        return mid

    def buyer_sends_image(self, conversation: str, buyer: int, url: str, *,
                          ts: int | None = None) -> str:
        """A buyer's image message naming ``url`` (``serve_file`` gives one of ours)."""
        ts = ts or int(time.time())
        mid = f"{next(self._ids):06d}"
        self.messages.setdefault(conversation, []).append({
            "message_id": mid, "message_type": "image", "from_id": buyer,
            "to_id": self.shop_id, "conversation_id": conversation, "created_timestamp": ts,
            "content": {"url": url, "thumb_url": url + "_tn"}})
        self.conversations[conversation] = {"conversation_id": conversation, "to_id": buyer,
                                            "to_name": "Ana",
                                            "last_message_timestamp": ts * 10**9}
        return mid

    def serve_file(self, data: bytes, name: str = "", *, content_type: str = "image/jpeg",
                   status: int = 200, headers: dict[str, str] | None = None) -> str:
        """The CDN URL of ``data`` (``name`` as its last path segment, percent-encoded)."""
        file_id = f"br-{next(self._ids)}-{secrets.token_hex(4)}"
        self.files[file_id] = (status, data, content_type, dict(headers or {}))
        tail = "/" + urllib.parse.quote(name, safe="") if name else ""
        return f"{self.url}/file/{file_id}{tail}"

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def _new_pair(self) -> tuple[str, str]:
        return f"at-{self.refreshes}", f"rt-{self.refreshes}"

    # -- server -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=4 * MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: Shopee's documented scheme puts the access token in the query
        # string, and what Shopee's own servers log is not ours to print in the test run.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _err(self, status: int, code: str, **headers: str) -> web.Response:
        return web.json_response(envelope(error=code, message="echo of data"), status=status,
                                 headers=headers)

    def _file(self, request: web.Request) -> web.Response:
        """The CDN: a GET of a file id, no signature, no token (none must be sent)."""
        self.file_requests.append(request.raw_path)
        assert "access_token" not in request.query and "sign" not in request.query, \
            "the shop's token or signature was sent to the CDN"
        file_id = request.raw_path.split("?", 1)[0].split("/")[2]
        if request.method != "GET" or file_id not in self.files:
            return web.Response(status=404)
        status, data, content_type, headers = self.files[file_id]
        return web.Response(status=status, body=data, content_type=content_type,
                            headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if request.raw_path.startswith("/file/"):
            return self._file(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return self._err(429, "error_rate_limit", **{"Retry-After": "1"})
        q = request.query
        try:
            partner_id, ts = int(q["partner_id"]), int(q["timestamp"])
        except (KeyError, ValueError):
            return self._err(400, "error_param")
        if partner_id != self.partner_id or abs(time.time() - ts) > 300:
            return self._err(403, "error_sign")
        if request.path in PUBLIC_PATHS:
            want = public_sign(self.key, partner_id=partner_id, path=request.path, timestamp=ts)
            if q.get("sign") != want:
                self.bad_signs += 1
                return self._err(403, "error_sign")
            return await self._refresh(request)
        token, shop = q.get("access_token", ""), q.get("shop_id", "")
        if not shop.isdigit():
            return self._err(400, "error_param")
        want = shop_sign(self.key, partner_id=partner_id, path=request.path, timestamp=ts,
                         access_token=token, shop_id=int(shop))
        if q.get("sign") != want:
            self.bad_signs += 1
            return self._err(403, "error_sign")
        if int(shop) != self.shop_id:
            return self._err(403, "error_shop")
        if token not in self.access_tokens or self.refuse_access:
            self.refused_calls += 1
            return self._err(403, "invalid_access_token")
        self.accepted.append(token)
        self.calls[request.path] += 1
        planned = self.fail_on.pop((request.path, self.calls[request.path]), None)
        if planned is not None:
            return self._err(*planned)
        if request.path == UPLOAD_PATH:
            return await self._upload(request)
        if request.path == "/api/v2/sellerchat/get_message":
            conv = self.messages.get(q.get("conversation_id", ""), [])
            return web.json_response(envelope({"messages": conv}))
        if request.path == "/api/v2/sellerchat/get_conversation_list":
            return self._conversations(q)
        if request.path == "/api/v2/sellerchat/send_message":
            body = await request.json()
            content = body.get("content") if isinstance(body.get("content"), dict) else {}
            if body.get("message_type") == "image" and \
                    content.get("image_url") not in self.uploads:
                return self._err(400, "error_param")  # an image Shopee never hosted
            if body.get("message_type") == "text" and not isinstance(content.get("text"), str):
                return self._err(400, "error_param")
            self.sent.append(body)
            mid = f"s-{next(self._ids)}"
            return web.json_response(envelope({"message_id": mid}))
        return self._err(404, "error_not_found")

    def _conversations(self, q: Any) -> web.Response:
        size = int(q.get("page_size", "25"))
        before = int(q["next_timestamp_nano"]) if q.get("next_timestamp_nano") else None
        ordered = sorted(self.conversations.values(),
                         key=lambda c: c["last_message_timestamp"], reverse=True)
        if before is not None:
            ordered = [c for c in ordered if c["last_message_timestamp"] < before]
        page, rest = ordered[:size], ordered[size:]
        nxt = {"next_message_time_nano": str(page[-1]["last_message_timestamp"])} if page \
            else {}
        return web.json_response(envelope({"conversations": page, "page_result": {
            "page_size": len(page), "more": bool(rest), "next_cursor": nxt}}))

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return self._err(400, "error_param")
        data = file.file.read()
        if len(data) > MAX_UPLOAD_BYTES or file.content_type not in UPLOAD_TYPES:
            return self._err(400, "error_image")  # INFERRED code name
        url = self.serve_file(data, content_type=file.content_type)
        self.uploads[url] = (file.filename, file.content_type, data)
        return web.json_response(envelope({"url": url, "thumbnail": url + "_tn"}))

    async def _refresh(self, request: web.Request) -> web.Response:
        self.refresh_calls += 1
        body = await request.json()
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        given = body.get("refresh_token")
        if self.refuse_refresh or given != self.refresh_token \
                or given in self.used_refresh_tokens:
            return web.json_response({"error": "error_auth", "message": "invalid refresh",
                                      "request_id": "r"}, status=403)
        self.used_refresh_tokens.add(given)
        self.refreshes += 1
        access, self.refresh_token = self._new_pair()
        self.access_tokens = {access}
        return web.json_response({"access_token": access, "refresh_token": self.refresh_token,
                                  "expire_in": 14400, "error": "", "message": "",
                                  "request_id": "r"})

    def push_body(self, conversation: str, message_id: str, *,
                  shop_id: int | None = None, code: int = 10) -> bytes:
        # INFERRED data shape (CHANNELS.md documents only code 10).
        return msgspec.json.encode({"shop_id": shop_id or self.shop_id, "code": code,
                                    "timestamp": int(time.time()),
                                    "data": {"conversation_id": conversation,
                                             "message_id": message_id}})

    def push_headers(self, callback_url: str, body: bytes) -> dict[str, str]:
        return {"Authorization": push_signature(self.key, callback_url, body),
                "Content-Type": "application/json"}


class KitShopee(ShopeeFake):
    """The fake as the conformance kit's ``FetchProvider`` and ``PollingProvider``: each
    ``InboundCase`` payload is one buyer message, published into the conversation it names
    (a payload's ``kit_file`` (name, bytes, content type) is served by the CDN and named by
    the message's ``content.url``).

    Shopee signs the URL with the body (``callback_url|body``), so the kit calls
    ``signed_headers_for(body, url)`` with the exact webhook URL it posts to.

    It is also the token battery's ``OAuthControl``: Shopee's refresh is its own signed call
    (``POST /api/v2/auth/access_token/get``), not an OAuth 2.0 token endpoint, so the kit's
    ``KitOAuthServer`` cannot stand in. Tokens are minted at random (the battery looks for
    every one of them in logs and errors), a refresh rotates the refresh token, and the
    refresher is the adapter's own (``refresher_of``, set by the harness)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.issued_tokens: list[str] = []  # what grant() and refreshes minted
        self.newest: str | None = None
        self.refresher_of: Any = None  # the adapter whose refresher the battery runs
        self._open = asyncio.Event()
        self._open.set()
        self.fetches = 0
        self.fetch_failures: list[tuple[int, str, dict[str, str]]] = []
        self.send_failures: list[tuple[int, str, dict[str, str]]] = []
        # The fetch battery drives the push path: the reconciliation poll sees an empty
        # conversation list unless a test turns it on, so it does not store the kit's cases
        # beside the fetches.
        self.listing_enabled = True

    # -- channels.testing.fetches.FetchProvider ----------------------------------------------

    # -- channels.testing.tokens.OAuthControl ------------------------------------------------

    def _new_pair(self) -> tuple[str, str]:
        access = f"shopee-at-{secrets.token_hex(16)}"
        refresh = f"shopee-rt-{secrets.token_hex(16)}"
        self.issued_tokens += [access, refresh]
        self.newest = access
        return access, refresh

    def grant(self, expires_in: float | None = None) -> OAuthTokens:
        """A new authorization of the shop (4 h access tokens, documented)."""
        access, refresh = self._new_pair()
        self.access_tokens.add(access)
        self.refresh_token = refresh
        lifetime = 4 * 3600.0 if expires_in is None else expires_in
        return OAuthTokens(access_token=access, refresh_token=refresh,
                           expires_at=time.time() + lifetime)

    def revoke_access(self) -> None:
        self.access_tokens.clear()

    def issued(self) -> list[str]:
        return list(self.issued_tokens)

    def newest_access_token(self) -> str | None:
        return self.newest

    def accepted_tokens(self) -> list[str]:
        return list(self.accepted)

    def refresher(self, http: Any) -> Refresher:
        assert self.refresher_of is not None, "the harness names the adapter to refresh with"
        refresher: Refresher = self.refresher_of.refresher
        return refresher

    def publish(self, case: Any) -> None:
        message = dict(case.payload)
        kit_file = message.pop("kit_file", None)
        if kit_file is not None:
            name, data, content_type = kit_file
            message["content"] = {"url": self.serve_file(data, name,
                                                         content_type=content_type)}
        conversation = str(message["conversation_id"])
        thread = self.messages.setdefault(conversation, [])
        thread[:] = [m for m in thread if m["message_id"] != message["message_id"]]
        thread.append(message)
        self.conversations[conversation] = {
            "conversation_id": conversation, "to_id": message["from_id"],
            "to_name": case.sender_name or "", "last_message_timestamp":
                max(m["created_timestamp"] for m in thread) * 10**9}

    def notification(self, case: Any, number: int) -> bytes:
        # Another number is another push about the same conversation: it names another
        # message id (a new action), the same number the same bytes.
        payload = case.payload
        message_id = payload["message_id"] if number == 1 else f"{payload['message_id']}.{number}"
        return msgspec.json.encode({"shop_id": self.shop_id, "code": 10, "timestamp": number,
                                    "data": {"conversation_id": str(payload["conversation_id"]),
                                             "message_id": message_id}})

    def forged_notification(self, case: Any, number: int) -> bytes | None:
        payload = case.payload
        return msgspec.json.encode({"shop_id": self.shop_id, "code": 10, "timestamp": number,
                                    "data": {"conversation_id": str(payload["conversation_id"]),
                                             "message_id": f"forged-{number}",
                                             "from_id": 666,
                                             "content": {"text": "Pague aqui: forged"}}})

    def signed_headers(self, body: bytes) -> dict[str, str]:
        raise AssertionError("Shopee signs the URL too: the kit calls signed_headers_for")

    def signed_headers_for(self, body: bytes, url: str) -> dict[str, str]:
        return self.push_headers(url, body)

    def hold_fetches(self) -> None:
        self._open.clear()

    def release_fetches(self) -> None:
        self._open.set()

    def fail_next_fetch(self, kind: str) -> None:
        self.fetch_failures.append(_failure(kind))

    @property
    def fetch_requests(self) -> int:
        return self.fetches

    def sent_records(self) -> list[Any]:
        """Every message sent; an image shows as ``[image] <its url>``."""
        from channels.testing import SentRecord
        return [SentRecord(recipient=str(s["to_id"]), text=s["content"]["text"]
                           if s["message_type"] == "text"
                           else f"[image] {s['content']['image_url']}")
                for s in self.sent]

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        """Per image message sent, the file uploaded for it."""
        return [[self.uploads[s["content"]["image_url"]]] for s in self.sent
                if s["message_type"] == "image"]

    def fail_next_send(self, kind: str) -> None:
        self.send_failures.append(_failure(kind))

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/api/v2/sellerchat/get_message":
            self.fetches += 1
            await self._open.wait()
            if self.fetch_failures:
                return self._failed(self.fetch_failures.pop(0))
        elif request.path == "/api/v2/sellerchat/send_message" and self.send_failures:
            return self._failed(self.send_failures.pop(0))
        return await super()._handle(request)

    def _conversations(self, q: Any) -> web.Response:
        if not self.listing_enabled:
            return web.json_response(envelope({"conversations": [], "page_result": {
                "page_size": 0, "more": False, "next_cursor": {}}}))
        return super()._conversations(q)

    def _failed(self, failure: tuple[int, str, dict[str, str]]) -> web.Response:
        status, code, headers = failure
        return self._err(status, code, **headers)


def _failure(kind: str) -> tuple[int, str, dict[str, str]]:
    # INFERRED error codes (Shopee documents the envelope, not these names).
    return {"retryable": (503, "error_server", {}),
            "rate_limited": (429, "error_rate_limit", {"Retry-After": "7"}),
            "permanent": (400, "error_param", {}),
            "auth": (403, "error_permission", {})}[kind]
