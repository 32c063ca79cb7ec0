"""A local fake of Mercado Libre's post-sale messaging API (CHANNELS.md §6.1).

Documented ([L1]-[L7]) and followed here: the notification body; ``GET /messages/packs/{p}/
sellers/{s}?tag=post_sale&limit&offset&mark_as_read`` with ``paging``, ``conversation_status``
and ``messages[...]`` (it marks messages read unless ``mark_as_read=false``: recorded in
``marked_read``); ``GET /messages/unread?role=seller&tag=post_sale``; the reply POST on the pack
URL; ``POST /messages/attachments`` (multipart ``file``); errors as
``{message, error, status, cause[]}``; 403 ``blocked_conversation_send_message_forbidden``;
the refresh-token grant at ``POST /oauth/token`` with client_id/client_secret in the form and a
new refresh token on each refresh (the old one refused: ``invalid_grant``).

The action guide (documented [L5], "Motivos para comunicarse"): ``GET /messages/action_guide/
packs/{p}?tag=post_sale`` answers ``options[{id, internal_description, enabled, type
("template" | "free_text"), templates[{id, vars}], actionable, char_limit, child_options,
cap_available}]``; ``POST /messages/action_guide/packs/{p}/option?tag=post_sale`` takes
``{"option_id", "template_id"}`` for a template reason or ``{"option_id", "text"}`` for a
free-text one. Inferred: the option POST's answer (``{"id"}`` like a reply), that it spends one
of ``cap_available`` (0 then refuses, ``cap_exceeded``), and 400 ``blocked_by_excepted_case``
for packs outside the action guide (seen in third-party integrations: there the plain reply
POST is allowed).

Inferred (not shown in the docs we have): the envelope of ``GET /messages/{id}`` (here the
message itself), the unread answer's ``results[{resource: "/packs/{p}/sellers/{s}", count}]``,
the shape of ``message_attachments`` (``filename``, ``original_filename``, ``type``, ``size``),
``GET /messages/attachments/{filename}`` returning the bytes, the reply's answer ``{"id"}``,
and 429 with ``Retry-After``.

Knobs for tests and the benchmark: ``latency_seconds`` (every API call waits this long),
``rate_per_minute`` (calls over it in any 60 s window answer 429 with Retry-After),
``publish(pack, message...)`` / ``buyer_message(...)`` to add messages, ``notification(id)`` for
the body Mercado Libre would POST.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_request import FileField

SELLER = "415458330"
BUYER = "77001122"
APP = "89745685555"
CLIENT_SECRET = "meli-client-secret-0123456789"


def error(status: int, code: str, message: str = "error") -> web.Response:
    return web.json_response({"message": message, "error": code, "status": status,
                              "cause": []}, status=status)


class MercadoLibreFake:
    def __init__(self, *, seller: str = SELLER, latency_seconds: float = 0.0,
                 rate_per_minute: int | None = None, access_seconds: float = 6 * 3600,
                 port: int | None = None) -> None:
        self.port = port
        self.seller = seller
        self.latency_seconds = latency_seconds
        self.rate_per_minute = rate_per_minute
        self.access_seconds = access_seconds
        self.messages: dict[str, dict[str, Any]] = {}
        self.packs: dict[str, list[str]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.users: dict[str, str] = {BUYER: "COMPRADOR_ANA"}
        self.attachments: dict[str, bytes] = {}
        self.uploads: dict[str, tuple[str, str]] = {}  # file id -> (name, content type)
        self.sent: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.marked_read: list[str] = []  # packs read without mark_as_read=false
        self.failures: list[tuple[int, str, dict[str, str]]] = []
        self._calls: deque[float] = deque()
        self._counter = itertools.count(1)
        self.access: set[str] = set()
        self.refresh_live: set[str] = set()
        self.refresh_refused = 0
        # pack -> its action-guide options; a pack absent here is an "excepted case".
        self.guides: dict[str, list[dict[str, Any]]] = {}
        self.reasons_sent: list[dict[str, Any]] = []
        self.reason_failures: list[tuple[int, str]] = []  # answers for the next option POSTs
        # Set by the conformance kit's token battery: the kit's OAuth server decides which
        # Authorization headers are live, instead of ``access``.
        self.authorize: Callable[[str | None], bool] | None = None
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    # -- data --------------------------------------------------------------------------------

    def grant(self) -> tuple[str, str]:
        n = next(self._counter)
        access, refresh = f"APP_USR-access-{n}", f"TG-refresh-{n}"
        self.access.add(access)
        self.refresh_live.add(refresh)
        return access, refresh

    def revoke_access(self) -> None:
        self.access.clear()

    def buyer_message(self, pack: str, n: int, text: str = "Olá, cadê meu pedido?", *,
                      site: str = "MLB", sender: str = BUYER, to: str | None = None,
                      created: str | None = None, **extra: Any) -> dict[str, Any]:
        mid = f"{n:032x}"
        message = {
            "id": mid, "site_id": site, "from": {"user_id": sender},
            "to": {"user_id": to or self.seller}, "text": text, "status": "available",
            "message_date": {"created": created or f"2026-01-01T10:{n // 60 % 60:02d}:"
                                                   f"{n % 60:02d}.000Z",
                             "received": None, "available": None, "notified": None,
                             "read": None},
            "message_moderation": {"status": "clean", "reason": None},
            "message_attachments": [],
            "message_resources": [{"id": pack, "name": "packs"}], **extra}
        self.publish(pack, message)
        return message

    def publish(self, pack: str, message: dict[str, Any]) -> None:
        self.messages[message["id"]] = message
        self.packs.setdefault(pack, [])
        if message["id"] not in self.packs[pack]:
            self.packs[pack].append(message["id"])

    def open_guide(self, pack: str, *, cap: int = 1) -> list[dict[str, Any]]:
        """The documented example's four options for ``pack``, ``cap`` messages each."""
        def template(option: str, vars_: Any = None) -> dict[str, Any]:
            return {"id": option, "internal_description": "This is an example...",
                    "enabled": True, "type": "template",
                    "templates": [{"id": f"TEMPLATE___{option}___1", "vars": vars_}],
                    "actionable": True, "child_options": None, "cap_available": cap}

        def free_text(option: str) -> dict[str, Any]:
            return {"id": option, "internal_description": "This is an example...",
                    "enabled": True, "type": "free_text", "templates": None,
                    "actionable": True, "char_limit": 350, "child_options": None,
                    "cap_available": cap}

        self.guides[pack] = [template("REQUEST_VARIANTS"), template("REQUEST_BILLING_INFO"),
                             free_text("SEND_INVOICE_LINK"), free_text("OTHER"),
                             template("DELIVERY_PROMISE", ["%s", "%d", "%d"])]
        return self.guides[pack]

    def notification(self, resource: str, number: int = 1, **claims: Any) -> bytes:
        return json.dumps({"id": f"n{number}-{resource[:8]}", "resource": resource,
                           "user_id": int(self.seller), "topic": "messages",
                           "actions": ["created"], "application_id": int(APP), "attempts": 1,
                           "sent": "2026-01-01T10:00:00.000Z", **claims}).encode()

    # -- plumbing ----------------------------------------------------------------------------

    async def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.method, request.path, dict(request.query)))
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        if self.rate_per_minute is not None:
            now = time.monotonic()
            while self._calls and self._calls[0] <= now - 60:
                self._calls.popleft()
            if len(self._calls) >= self.rate_per_minute:
                wait = max(1, int(self._calls[0] + 60 - now) + 1)
                return web.json_response({"message": "too many requests", "error":
                                          "too_many_requests", "status": 429, "cause": []},
                                         status=429, headers={"Retry-After": str(wait)})
            self._calls.append(now)
        given = request.headers.get("Authorization", "")
        if self.authorize is not None:
            if not self.authorize(given):
                return error(401, "invalid_token")
        elif not any(hmac.compare_digest(given, f"Bearer {t}") for t in list(self.access)):
            return error(401, "invalid_token")
        if self.failures:
            status, code, headers = self.failures.pop(0)
            response = error(status, code)
            response.headers.update(headers)
            return response
        return None

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "refresh_token" or form.get("client_id") != APP or \
                form.get("client_secret") != CLIENT_SECRET:
            return error(400, "invalid_client")
        old = str(form.get("refresh_token", ""))
        if old not in self.refresh_live:
            self.refresh_refused += 1
            return error(400, "invalid_grant")
        self.refresh_live.discard(old)  # rotating: the old refresh token is spent
        access, refresh = self.grant()
        return web.json_response({"access_token": access, "token_type": "Bearer",
                                  "expires_in": self.access_seconds, "scope": "offline_access",
                                  "user_id": int(self.seller), "refresh_token": refresh})

    async def message(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        found = self.messages.get(request.match_info["id"])
        if found is None:
            return error(404, "not_found")
        return web.json_response(found)

    async def pack(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        pack, seller = request.match_info["pack"], request.match_info["seller"]
        if seller != self.seller:
            return error(403, "forbidden")
        if request.method == "POST":
            return await self._reply(request, pack)
        if request.query.get("mark_as_read") != "false":
            self.marked_read.append(pack)
        ids = self.packs.get(pack)
        if ids is None:
            return error(404, "not_found")
        limit = int(request.query.get("limit", "10"))
        offset = int(request.query.get("offset", "0"))
        page = [self.messages[i] for i in ids[offset:offset + limit]]
        return web.json_response({
            "paging": {"limit": limit, "offset": offset, "total": len(ids)},
            "conversation_status": {"path": f"/packs/{pack}", "status": "active",
                                    "substatus": None, **self.status.get(pack, {})},
            "messages": page, "seller_max_message_length": 350,
            "buyer_max_message_length": 3500})

    async def _reply(self, request: web.Request, pack: str) -> web.Response:
        status = self.status.get(pack, {})
        if status.get("status") == "blocked":
            return error(403, "blocked_conversation_send_message_forbidden",
                         "echo of the buyer text must not leak")
        body = await request.json()
        body["pack"] = pack
        self.sent.append(body)
        return web.json_response({"id": f"s{len(self.sent):031x}", "status": "available"})

    async def action_guide(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        options = self.guides.get(request.match_info["pack"])
        if options is None:
            return error(400, "blocked_by_excepted_case")
        return web.json_response({"options": options})

    async def reason(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        pack = request.match_info["pack"]
        options = self.guides.get(pack)
        if options is None:
            return error(400, "blocked_by_excepted_case")
        if self.reason_failures:
            return error(*self.reason_failures.pop(0))
        body = await request.json()
        option = next((o for o in options if o["id"] == body.get("option_id")), None)
        if option is None or not option["enabled"]:
            return error(400, "invalid_option")
        if option["cap_available"] < 1:
            return error(403, "cap_exceeded")
        if option["type"] == "free_text":
            text = body.get("text")
            if not isinstance(text, str) or not text or len(text) > option["char_limit"] \
                    or "template_id" in body:
                return error(400, "invalid_text")
        elif body.get("template_id") not in {t["id"] for t in option["templates"]} \
                or "text" in body:
            return error(400, "invalid_template")
        option["cap_available"] -= 1
        self.reasons_sent.append({**body, "pack": pack})
        return web.json_response({"id": f"r{len(self.reasons_sent):031x}"})

    async def unread(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        results = [{"resource": f"/packs/{p}/sellers/{self.seller}", "count": len(ids)}
                   for p, ids in self.packs.items()]
        return web.json_response({"user_id": int(self.seller), "results": results[:1000]})

    async def user(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        uid = request.match_info["id"]
        if uid not in self.users:
            return error(404, "not_found")
        return web.json_response({"id": int(uid), "nickname": self.users[uid]})

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        form = await request.post()
        item = form.get("file")
        if not isinstance(item, FileField):
            return error(400, "bad_request")
        data = item.file.read()
        if len(data) > 25 * 1024 * 1024:
            return error(400, "file_too_large")
        fid = f"{SELLER}_{next(self._counter):08x}.{item.filename.rsplit('.', 1)[-1]}"
        self.attachments[fid] = data
        self.uploads[fid] = (item.filename, item.content_type)
        return web.json_response({"id": fid})

    async def download(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        data = self.attachments.get(request.match_info["id"])
        if data is None:
            return error(404, "not_found")
        return web.Response(body=data, content_type="application/octet-stream")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/messages/unread", self.unread)
        app.router.add_route("*", "/messages/packs/{pack}/sellers/{seller}", self.pack)
        app.router.add_get("/messages/action_guide/packs/{pack}", self.action_guide)
        app.router.add_post("/messages/action_guide/packs/{pack}/option", self.reason)
        app.router.add_post("/messages/attachments", self.upload)
        app.router.add_get("/messages/attachments/{id}", self.download)
        app.router.add_get("/messages/{id}", self.message)
        app.router.add_get("/users/{id}", self.user)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


class KitMercadoLibre(MercadoLibreFake):
    """The fake as the conformance kit's ``FetchProvider``: each ``InboundCase`` payload is a
    buyer message, published into the pack its ``message_resources`` name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._open = asyncio.Event()
        self._open.set()
        self.fetches = 0
        self.send_failures: list[tuple[int, str, dict[str, str]]] = []
        self.fetch_failures: list[tuple[int, str, dict[str, str]]] = []
        # The kit drives the notify path: the reconciliation poll sees no unread packs
        # unless a test turns it on, so it does not store the kit's cases beside the fetches.
        self.unread_enabled = False

    def publish_case(self, payload: dict[str, Any]) -> None:
        self.publish(str(payload["message_resources"][0]["id"]), payload)

    # -- channels.testing.fetches.FetchProvider ----------------------------------------------

    def publish(self, case_or_pack: Any, message: dict[str, Any] | None = None) -> None:
        if message is None:
            payload = dict(case_or_pack.payload)
            # A case carrying a file (the attachment battery): its bytes are served at the
            # attachment download path, not in the message.
            for file_id, data in payload.pop("kit_files", {}).items():
                self.attachments[file_id] = data
            super().publish(str(payload["message_resources"][0]["id"]), payload)
        else:
            super().publish(case_or_pack, message)

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        return [[(*self.uploads[fid], self.attachments[fid]) for fid in s.get("attachments", [])]
                for s in self.sent]

    def notification(self, resource: Any, number: int = 1, **claims: Any) -> bytes:
        case_or_resource = resource
        resource = case_or_resource if isinstance(case_or_resource, str) \
            else case_or_resource.provider_message_id
        return super().notification(resource, number, **claims)

    def forged_notification(self, case: Any, number: int) -> bytes | None:
        return self.notification(case, number, text="Pague aqui: forged",
                                 **{"from": {"user_id": 666}})

    def signed_headers(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json"}  # Mercado Libre signs nothing

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
        from channels.testing import SentRecord
        return [SentRecord(recipient=str(s["to"]["user_id"]), text=s["text"], thread_id=s["pack"])
                for s in self.sent]

    def fail_next_send(self, kind: str) -> None:
        self.send_failures.append(_failure(kind))

    async def message(self, request: web.Request) -> web.Response:
        self.fetches += 1
        await self._open.wait()
        if self.fetch_failures:
            status, code, headers = self.fetch_failures.pop(0)
            response = error(status, code)
            response.headers.update(headers)
            return response
        return await super().message(request)

    async def unread(self, request: web.Request) -> web.Response:
        if not self.unread_enabled:
            if (refused := await self._gate(request)) is not None:
                return refused
            return web.json_response({"user_id": int(self.seller), "results": []})
        return await super().unread(request)

    async def _reply(self, request: web.Request, pack: str) -> web.Response:
        if self.send_failures:
            status, code, headers = self.send_failures.pop(0)
            response = error(status, code)
            response.headers.update(headers)
            return response
        return await super()._reply(request, pack)


def _failure(kind: str) -> tuple[int, str, dict[str, str]]:
    return {"retryable": (503, "internal_error", {}),
            "rate_limited": (429, "too_many_requests", {"Retry-After": "7"}),
            "permanent": (400, "bad_request", {}),
            # A 401 is answered with a refresh (channels.tokens); what no refresh mends is a
            # 403 on our own seller's resource: the grant does not cover it (inferred shape).
            "auth": (403, "forbidden", {})}[kind]
