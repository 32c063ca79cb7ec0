"""A local Graph API server that speaks the WhatsApp Cloud API the adapter uses.

Paths, bodies and answers as Meta documents them (CHANNELS.md §4):

    POST /v21.0/{phone-number-id}/messages     Authorization: Bearer <token>
         {"messaging_product": "whatsapp", "recipient_type": "individual", "to", "type":
          "text", "text": {"body", "preview_url"}, "context"?: {"message_id"}}
      or {..., "type": "template", "template": {"name", "language": {"code"},
          "components"?: [{"type": "body", "parameters": [{"type": "text", "text"}]}]}}
      200 {"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}],
           "messages": [{"id": "wamid..."}]}
    GET /v21.0/{media-id}                       Authorization: Bearer <token>
      200 {"messaging_product", "url", "mime_type", "sha256", "file_size", "id"}
    GET <url>                                   Authorization: Bearer <token>   -> the bytes

Errors are Graph's shape, ``{"error": {"message", "type", "code", "error_subcode",
"error_data": {"details"}, "fbtrace_id"}}``, with the documented codes: 190 for a bad token,
100 for an invalid parameter, 131047 for free text outside the 24-hour window, 130429 for
throttling (a 429 with Retry-After here, as the kit expects).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.models import TemplateRef
from channels.testing import FailureKind, SentRecord

VERSION = "v21.0"
TOKEN = "EAAtest-access-token"
APP_SECRET = "meta-app-secret-for-tests"
VERIFY_TOKEN = "verify-me-please"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "15550783881"

# (HTTP status, Graph error code, title, headers) of each kit failure kind.
FAILURES: dict[str, tuple[int, int, str, dict[str, str]]] = {
    "retryable": (503, 131000, "Something went wrong", {}),
    "rate_limited": (429, 130429, "Rate limit hit", {"Retry-After": "7"}),
    "permanent": (400, 100, "Invalid parameter", {}),
    "auth": (401, 190, "Invalid OAuth access token - Cannot parse access token", {}),
}


def meta_signature(body: bytes, secret: str = APP_SECRET) -> str:
    """``X-Hub-Signature-256`` as Meta computes it, written here independently of
    ``channels.signing``: lowercase hex HMAC-SHA256 of the raw bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def meta_json(payload: Any) -> bytes:
    """A body as Meta sends it: compact JSON with every non-ASCII character ``\\uXXXX``."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def graph_error(status: int, code: int, message: str, *, details: str | None = None,
                error_type: str = "OAuthException", subcode: int | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"message": f"(#{code}) {message}", "type": error_type,
                             "code": code, "fbtrace_id": "AbCdEfGhIjK"}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return web.json_response({"error": error}, status=status, headers=headers)


class FakeGraph:
    """The fake Cloud API; ``window_closed`` holds recipients whose 24 h window Meta considers
    closed (free text to them gets 131047)."""

    def __init__(self) -> None:
        self.records: list[SentRecord] = []
        self.templates: list[TemplateRef | None] = []
        self.bodies: list[dict[str, Any]] = []
        self.failures: list[tuple[int, int, str, dict[str, str]]] = []
        self.window_closed: set[str] = set()
        self.media: dict[str, tuple[bytes, str]] = {}
        self.media_size_claims: dict[str, int] = {}
        self.media_failures: list[tuple[int, int, str]] = []
        self.media_requests = 0
        self.download_requests = 0
        self.corrupt_downloads = 0
        self.hold = asyncio.Event()  # cleared: media lookups wait
        self.hold.set()
        self.send_hold = asyncio.Event()  # cleared: sends wait
        self.send_hold.set()
        self._ids = itertools.count(1)
        self.server: TestServer | None = None

    # -- the kit's SendingProvider -------------------------------------------------------

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def sent_templates(self) -> list[TemplateRef | None]:
        return list(self.templates)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    def fail_next_send_with(self, status: int, code: int, title: str,
                            headers: dict[str, str] | None = None) -> None:
        self.failures.append((status, code, title, headers or {}))

    # -- serving ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/{VERSION}"))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(f"/{VERSION}/{{phone}}/messages", self._messages)
        app.router.add_get(f"/{VERSION}/{{media_id}}", self._media_info)
        app.router.add_get("/whatsapp_business/attachments/", self._download)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _unauthorized(self) -> web.Response:
        return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")

    async def _messages(self, request: web.Request) -> web.Response:
        await self.send_hold.wait()
        if not self._authorized(request):
            return self._unauthorized()
        if request.match_info["phone"] != PHONE_NUMBER_ID:
            return graph_error(400, 100, "Invalid parameter", error_type="GraphMethodException",
                               subcode=33, details="Unsupported post request. Object with ID "
                               "does not exist")
        if request.content_type != "application/json":
            return graph_error(400, 100, "Invalid parameter", details="expected JSON")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return graph_error(400, 100, "Invalid parameter", details="body is not JSON")
        if self.failures:
            status, code, title, headers = self.failures.pop(0)
            return graph_error(status, code, title, headers=headers, details=title)
        problem = self._invalid(body)
        if problem is not None:
            return graph_error(400, 100, "Invalid parameter", details=problem)
        to = body["to"]
        if body["type"] == "text":
            if to in self.window_closed:
                return graph_error(400, 131047, "Re-engagement message", details=(
                    "Message failed to send because more than 24 hours have passed since the "
                    "customer last replied to this number."))
            text = body["text"]["body"]
            self.templates.append(None)
        else:
            template = body["template"]
            params = tuple(p["text"] for c in template.get("components", [])
                           if c.get("type") == "body" for p in c.get("parameters", []))
            ref = TemplateRef(template["name"], template["language"]["code"], params)
            self.templates.append(ref)
            text = f"[template {ref.name}]"
        self.bodies.append(body)
        self.records.append(SentRecord(recipient=to, text=text, thread_id=to))
        wamid = f"wamid.HBgLMTU1NTA{next(self._ids):06d}AA=="
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": to, "wa_id": to}],
                                  "messages": [{"id": wamid}]})

    @staticmethod
    def _invalid(body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return "messaging_product must be 'whatsapp'"
        if not isinstance(body.get("to"), str) or not body["to"].isdigit():
            return "to must be a phone number"
        kind = body.get("type")
        if kind == "text":
            text = body.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str):
                return "text.body is required"
            if not 1 <= len(text["body"]) <= 4096:
                return "text.body must be 1-4096 characters"
            context = body.get("context")
            if context is not None and not str(context.get("message_id", "")).startswith(
                    "wamid."):
                return "context.message_id must be a wamid"
            return None
        if kind == "template":
            template = body.get("template")
            if not isinstance(template, dict) or not template.get("name"):
                return "template.name is required"
            if not isinstance(template.get("language"), dict) or \
                    not template["language"].get("code"):
                return "template.language.code is required"
            return None
        return f"type {kind!r} is not supported by this fake"

    # -- media -----------------------------------------------------------------------------

    def publish_media(self, media_id: str, data: bytes, mime: str, *,
                      claimed_size: int | None = None) -> None:
        self.media[media_id] = (data, mime)
        if claimed_size is not None:
            self.media_size_claims[media_id] = claimed_size

    def fail_next_media(self, status: int, code: int, title: str) -> None:
        self.media_failures.append((status, code, title))

    async def _media_info(self, request: web.Request) -> web.Response:
        self.media_requests += 1
        await self.hold.wait()
        if not self._authorized(request):
            return self._unauthorized()
        if self.media_failures:
            status, code, title = self.media_failures.pop(0)
            return graph_error(status, code, title)
        media_id = request.match_info["media_id"]
        found = self.media.get(media_id)
        if found is None:
            return graph_error(400, 100, "Invalid parameter", error_type="GraphMethodException",
                               subcode=33, details=f"Unsupported get request. Object with ID "
                               f"'{media_id}' does not exist")
        data, mime = found
        assert self.server is not None
        url = self.server.make_url("/whatsapp_business/attachments/").with_query(
            mid=media_id, ext="1700000000", hash="ATtest")
        return web.json_response({
            "messaging_product": "whatsapp", "url": str(url), "mime_type": mime,
            "sha256": hashlib.sha256(data).hexdigest(),
            "file_size": self.media_size_claims.get(media_id, len(data)), "id": media_id})

    async def _download(self, request: web.Request) -> web.Response:
        self.download_requests += 1
        if not self._authorized(request):
            return web.Response(status=404)  # the CDN answers an anonymous request with 404
        found = self.media.get(request.query.get("mid", ""))
        if found is None:
            return web.Response(status=404)
        data, mime = found
        if self.corrupt_downloads:
            self.corrupt_downloads -= 1
            data = data[:-1] + bytes([data[-1] ^ 1])
        return web.Response(body=data, content_type=mime)
