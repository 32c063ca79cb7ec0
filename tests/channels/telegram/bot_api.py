"""A local Bot API server for the Telegram channel's tests, following the documented API:
``/bot<token>/<method>`` (JSON, form or query parameters), ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code", "description", "parameters": {"retry_after"}}``, and files at
``/file/bot<token>/<file_path>``.

``getUpdates`` keeps Telegram's semantics: an update is confirmed (and gone) once a call's
``offset`` is above its ``update_id``; ``timeout`` long-polls; it is refused with 409 while a
webhook is set, and a second concurrent ``getUpdates`` ends the first with 409, as Telegram
does when two processes poll one bot.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.testing import FailureKind, InboundCase, SentRecord

_ERRORS: dict[int, str] = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    409: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
         "to delete the webhook first",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
FAILURE_STATUS: dict[FailureKind, tuple[int, int | None]] = {
    "retryable": (502, None),
    "rate_limited": (429, 7),
    "permanent": (400, None),
    "auth": (401, None),
}


def error(code: int, *, retry_after: int | None = None,
          description: str | None = None) -> web.Response:
    """Telegram's error answer (the HTTP status is the error code)."""
    body: dict[str, Any] = {
        "ok": False, "error_code": code,
        "description": description or _ERRORS.get(code, "Error").format(
            retry_after=retry_after)}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=code)


class FakeBotApi:
    """The Bot API for one bot token. ``publish`` queues an update (a fresh ``update_id``
    unless ``keep_id``); ``files`` maps file_id -> (file_path, bytes)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.confirmed = 0  # every update_id below this is gone
        self.webhook: dict[str, Any] | None = None
        self.sends: list[dict[str, Any]] = []
        self.documents: list[tuple[str, str, bytes]] = []
        self.calls: list[str] = []
        self.failures: dict[str, list[web.Response]] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        self.file_failures: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ids = itertools.count(841266257)
        self._message_ids = itertools.count(9000)
        self._news = asyncio.Event()
        self._pollers: list[asyncio.Future[None]] = []
        self.server: TestServer | None = None

    # -- test controls ---------------------------------------------------------------------

    @property
    def origin(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def base_url(self) -> str:
        """The adapter's ``api_base_url``, in PTB's form."""
        return self.origin + "/bot{token}"

    def publish_update(self, update: dict[str, Any], *, keep_id: bool = False) -> int:
        if not keep_id:
            update = {**update, "update_id": next(self._ids)}
        self.updates.append(update)
        self._news.set()
        return int(update["update_id"])

    def publish(self, case: InboundCase) -> None:
        self.publish_update(case.payload)

    def fail_next(self, method: str, response: web.Response) -> None:
        self.failures.setdefault(method, []).append(response)

    def fail_next_send(self, kind: FailureKind) -> None:
        status, retry_after = FAILURE_STATUS[kind]
        self.fail_next("sendMessage", error(status, retry_after=retry_after))

    def sent(self) -> list[SentRecord]:
        return [SentRecord(recipient=str(s["chat_id"]), text=s["text"],
                           thread_id=str(s["chat_id"])) for s in self.sends]

    def pending(self) -> list[dict[str, Any]]:
        return [u for u in self.updates if u["update_id"] >= self.confirmed]

    # -- the API ---------------------------------------------------------------------------

    async def method(self, request: web.Request) -> web.StreamResponse:
        if not hmac.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            return error(401)
        name = request.match_info["method"]
        self.calls.append(name)
        params = await _params(request)
        queued = self.failures.get(name)
        if queued:
            return queued.pop(0)
        handler = getattr(self, f"api_{name}", None)
        if handler is None:
            return error(404, description="Not Found: method not found")
        answer: web.StreamResponse = await handler(params)
        return answer

    async def api_getMe(self, params: dict[str, Any]) -> web.Response:
        bot_id = int(self.token.partition(":")[0])
        return _ok({"id": bot_id, "is_bot": True, "first_name": "Shop", "username": "shop_bot"})

    async def api_setWebhook(self, params: dict[str, Any]) -> web.Response:
        if not params.get("url"):
            return error(400, description="Bad Request: bad webhook: URL must be provided")
        self.webhook = params
        return _ok(True)

    async def api_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self.confirmed = max([self.confirmed, *(u["update_id"] + 1 for u in self.updates)])
        return _ok(True)

    async def api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook is not None:
            return error(409)
        offset = int(params.get("offset", 0) or 0)
        if offset > 0:
            self.confirmed = max(self.confirmed, offset)
        for other in self._pollers:  # Telegram ends an earlier poll when a new one starts
            if not other.done():
                other.set_result(None)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pollers = [mine]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            deadline = time.monotonic() + float(params.get("timeout", 0) or 0)
            while not self.pending() and time.monotonic() < deadline and not mine.done():
                self._news.clear()
                waiter = asyncio.ensure_future(self._news.wait())
                try:
                    await asyncio.wait({waiter, mine}, timeout=deadline - time.monotonic(),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    await asyncio.gather(waiter, return_exceptions=True)
            if mine.done() and not self.pending():
                return error(409, description="Conflict: terminated by other getUpdates "
                             "request; make sure that only one bot instance is running")
        finally:
            self.in_flight -= 1
        limit = int(params.get("limit", 100) or 100)
        return _ok(self.pending()[:limit])

    async def api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return error(400, description="Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return error(400, description="Bad Request: message is too long")
        self.sends.append(params)
        chat_id = params["chat_id"]
        message = {"message_id": next(self._message_ids), "date": int(time.time()),
                   "chat": {"id": _chat_id(chat_id), "type": "private"},
                   "from": {"id": int(self.token.partition(":")[0]), "is_bot": True,
                            "first_name": "Shop"},
                   "text": text}
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            message["reply_to_message"] = {"message_id": reply["message_id"],
                                           "date": int(time.time()),
                                           "chat": message["chat"]}
        return _ok(message)

    async def api_sendDocument(self, params: dict[str, Any]) -> web.Response:
        document = params.get("document")
        if not isinstance(document, web.FileField):
            return error(400, description="Bad Request: there is no document in the request")
        data = document.file.read()
        if not data:
            return error(400, description="Bad Request: file must be non-empty")
        self.documents.append((document.filename, document.content_type, data))
        reply = params.get("reply_parameters")
        self.sends.append({"chat_id": params["chat_id"], "text": params.get("caption", ""),
                           "document": document.filename,
                           "reply_parameters": json.loads(reply) if reply else None})
        return _ok({"message_id": next(self._message_ids), "date": int(time.time()),
                    "chat": {"id": _chat_id(params["chat_id"]), "type": "private"},
                    "document": {"file_id": f"d{len(self.documents)}",
                                 "file_unique_id": f"ud{len(self.documents)}",
                                 "file_name": document.filename}})

    async def api_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = params.get("file_id")
        if file_id not in self.files:
            return error(400, description="Bad Request: invalid file_id")
        path, data = self.files[file_id]
        return _ok({"file_id": file_id, "file_unique_id": f"u{file_id}",
                    "file_size": len(data), "file_path": path})

    async def file(self, request: web.Request) -> web.StreamResponse:
        if not hmac.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            return web.Response(status=401)
        if self.file_failures:
            return web.Response(status=self.file_failures.pop(0))
        path = request.match_info["path"]
        for stored_path, data in self.files.values():
            if stored_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    async def __aenter__(self) -> FakeBotApi:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self.method)
        app.router.add_get("/file/bot{token}/{path:.+}", self.file)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for poller in self._pollers:
            if not poller.done():
                poller.set_result(None)
        assert self.server is not None
        await self.server.close()


async def _params(request: web.Request) -> dict[str, Any]:
    """Bot API parameters from the query string, a JSON body or a form."""
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        else:
            params.update(await request.post())
    return params


def _chat_id(value: Any) -> int | str:
    """Chat ids are integers; the kit's made-up recipients are kept as the text they are."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})
