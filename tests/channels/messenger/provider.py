"""A local fake of Meta's side of Messenger and Instagram messaging, following the documented
API (CHANNELS.md §5): it signs the webhooks the tests post and serves the Graph API calls the
adapter makes.

* ``POST /me/messages`` and ``POST /{page_id}/messages``, ``Authorization: Bearer <page
  token>``: ``{"recipient": {"id"}, "messaging_type", "message": {"text"}, "tag"?}`` ->
  ``{"recipient_id", "message_id"}``. Refused as Graph refuses, in Graph's error shape
  ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``: a wrong token
  (190), a bad body or over-long text (100), ``MESSAGE_TAG`` without a tag (100), a reply
  outside the window it knows of (10/2018278: 24 h for ``RESPONSE``, 7 days for
  ``HUMAN_AGENT``), and whatever a test injects;
* ``GET /{message-id}?fields=...``: a published message as the Graph API returns it
  (``id, created_time, from, to, message, attachments{data[...]}``), for the adapter's fetch;
* ``GET /cdn/{name}``: the bytes of a published attachment (Meta's CDN).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.testing import FailureKind, SentRecord

PAGE_ID = "104857600000001"
IG_ACCOUNT_ID = "17841400000000001"
DAY = 86400.0

# What each injected failure looks like from Graph: (HTTP status, code, subcode, message).
FAILURES: dict[str, tuple[int, int, int | None, str]] = {
    "retryable": (503, 2, None, "Service temporarily unavailable"),
    "rate_limited": (400, 613, None, "Calls to this api have exceeded the rate limit."),
    "permanent": (400, 100, None, "Invalid parameter"),
    "auth": (401, 190, 463, "Error validating access token: Session has expired."),
}


def graph_error(status: int, code: int, message: str, subcode: int | None = None,
                error_type: str = "OAuthException") -> web.Response:
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code,
                             "fbtrace_id": "AbCdEfGhIjK"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return web.json_response({"error": error}, status=status)


class SentBody(msgspec.Struct, frozen=True):
    recipient: str
    text: str
    messaging_type: str
    tag: str | None


class GraphFake:
    def __init__(self, token: str, app_secret: str, *, text_limit: int = 2000) -> None:
        self.token = token
        self.app_secret = app_secret
        self.text_limit = text_limit
        self.bodies: list[SentBody] = []
        self.failures: list[web.Response] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.file_requests = 0
        self.message_requests = 0
        # The buyer's last message as Meta knows it (PSID -> UNIX seconds): where a test sets
        # it, a send outside the window is refused as Graph refuses it.
        self.last_user_message: dict[str, float] = {}
        self.recipients: dict[str, str] = {}  # message id -> recipient PSID
        self._ids = itertools.count(1)
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    # -- the kit's SendingProvider -------------------------------------------------------------

    def sent(self) -> list[SentRecord]:
        return [SentRecord(recipient=b.recipient, text=b.text) for b in self.bodies]

    def fail_next_send(self, kind: FailureKind) -> None:
        status, code, subcode, message = FAILURES[kind]
        self.failures.append(graph_error(status, code, message, subcode))

    def sign(self, body: bytes, subpath: str = "") -> dict[str, str]:
        """What Meta sends with a webhook body: the signature over the bytes as sent (computed
        here with hashlib, not with the hub's own helper)."""
        digest = hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}",
                "Content-Type": "application/json"}

    # -- publishing what fetches read ---------------------------------------------------------

    def publish(self, mid: str, sender: str, text: str, created: float,
                files: list[tuple[str, str, str, bytes]]) -> None:
        """A message as the Graph API serves it; ``files`` are (kind image|video|file, name,
        mime type, bytes)."""
        data = []
        for i, (kind, name, mime, content) in enumerate(files, 1):
            self.files[name] = content
            url = f"{self.url}/cdn/{name}"
            item: dict[str, Any] = {"id": f"{mid}-a{i}", "mime_type": mime, "name": name,
                                    "size": len(content)}
            if kind == "image":
                item["image_data"] = {"width": 64, "height": 64, "max_width": 64,
                                      "max_height": 64, "url": url, "preview_url": url}
            elif kind == "video":
                item["video_data"] = {"width": 64, "height": 64, "length": 3, "url": url,
                                      "preview_url": url}
            else:
                item["file_url"] = url
            data.append(item)
        created_time = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(created))
        self.messages[mid] = {
            "id": mid, "created_time": created_time,
            "from": {"id": sender, "name": "Ana Pérez", "email": f"{sender}@facebook.com"},
            "to": {"data": [{"id": PAGE_ID, "name": "Tienda"}]},
            "message": text,
            "attachments": {"data": data},
        }

    # -- the API ------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return graph_error(400, 190, "Invalid OAuth access token - Cannot parse access "
                               "token")
        if request.match_info.get("page", "me") not in ("me", PAGE_ID):
            return graph_error(400, 100, "Unsupported post request.", 33,
                               "GraphMethodException")
        if self.failures:
            return self.failures.pop(0)
        try:
            data = await request.json()
            recipient = data["recipient"]["id"]
            text = data["message"]["text"]
            kind = data["messaging_type"]
        except (ValueError, KeyError, TypeError):
            return graph_error(400, 100, "(#100) Invalid parameter", error_type="OAuthException")
        if kind not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            return graph_error(400, 100, "(#100) Param messaging_type must be one of {RESPONSE, "
                               "UPDATE, MESSAGE_TAG}")
        tag = data.get("tag")
        if kind == "MESSAGE_TAG" and tag != "HUMAN_AGENT":
            return graph_error(400, 100, "(#100) Tag is required for MESSAGE_TAG")
        if not isinstance(text, str) or len(text) > self.text_limit:
            return graph_error(400, 100, f"(#100) Length of param message[text] must be less "
                               f"than or equal to {self.text_limit}")
        last = self.last_user_message.get(recipient)
        if last is not None:
            allowed = 7 * DAY if kind == "MESSAGE_TAG" else DAY
            if time.time() > last + allowed:
                return graph_error(400, 10, "(#10) This message is sent outside of allowed "
                                   "window.", 2018278)
        self.bodies.append(SentBody(recipient, text, kind, tag))
        message_id = f"m_sent{next(self._ids):06d}"
        self.recipients[message_id] = recipient
        return web.json_response({"recipient_id": recipient, "message_id": message_id})

    async def message(self, request: web.Request) -> web.Response:
        self.message_requests += 1
        if not self._authorized(request):
            return graph_error(400, 190, "Invalid OAuth access token")
        found = self.messages.get(request.match_info["mid"])
        if found is None:
            return graph_error(400, 100, "Unsupported get request. Object does not exist",
                               33, "GraphMethodException")
        wanted = set(request.query.get("fields", "id").split(","))
        return web.json_response({k: v for k, v in found.items() if k in wanted})

    async def cdn(self, request: web.Request) -> web.Response:
        self.file_requests += 1
        content = self.files.get(request.match_info["name"])
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    async def __aenter__(self) -> GraphFake:
        app = web.Application()
        app.router.add_post("/{page}/messages", self.send)
        app.router.add_get("/cdn/{name}", self.cdn)
        app.router.add_get("/{mid}", self.message)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()
