"""A local server that speaks the part of Twilio's REST API the channel uses, as documented
(twilio.com/docs/messaging/api/message-resource, .../media-resource, /docs/usage/api):

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json         HTTP Basic AccountSid:AuthToken
         To, From | MessagingServiceSid, Body (<= 1600), StatusCallback
         201 the Message resource | 4xx/5xx {"code", "message", "more_info", "status"}
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json           the Message resource
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}/Media.json     {"media_list": [...]}
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}/Media/{MediaSid}
         307 to the media store (which serves the bytes without credentials)

It also writes the webhooks Twilio would post (forms signed with twilio's own
``RequestValidator``), so tests sign with an implementation that is not ours.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from channels.testing import HTTP_FAILURES, FailureKind, SentRecord

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-test-auth-token-0123456789ab"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
OUR_NUMBER = "+34911000000"


def sid(prefix: str, n: int) -> str:
    """A SID of Twilio's shape (two letters, 32 hex digits), numbered for tests."""
    return f"{prefix}{n:032x}"


def error_body(code: int, message: str, status: int) -> dict[str, Any]:
    return {"code": code, "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


# What each kit failure looks like from Twilio: the kit's HTTP status, Twilio's code and words.
FAILURE_BODIES: dict[int, tuple[int, str]] = {
    503: (20503, "Service Unavailable"),
    500: (20500, "Internal Server Error"),
    429: (20429, "Too Many Requests"),
    400: (21211, "The 'To' number +3400000 is not a valid phone number."),
    401: (20003, "Authenticate"),
}


def form_body(params: Mapping[str, str] | list[tuple[str, str]]) -> bytes:
    items = list(params.items()) if isinstance(params, Mapping) else params
    return urllib.parse.urlencode(items).encode("ascii")


def sign_form(url: str, body: bytes, token: str = AUTH_TOKEN) -> str:
    """X-Twilio-Signature for a form body posted to ``url``, by twilio-python itself (the body
    is read leniently: the hostile tests sign bytes that are not quite a form)."""
    params = MultiDict(urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    return str(RequestValidator(token).compute_signature(url, params))


class TwilioFake:
    """The REST API above, with the kit's ``SendingProvider`` hooks (records, injected
    failures) and a store of inbound messages with media for the MMS fetches."""

    def __init__(self) -> None:
        self.records: list[SentRecord] = []
        self.forms: list[MultiDict[str]] = []
        self.created: list[str] = []  # the SIDs of the messages it accepted, in order
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.fetch_failures: list[int] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.media: dict[str, list[tuple[str, str, bytes]]] = {}  # MessageSid -> files
        self.requests: list[tuple[str, str, str | None]] = []     # method, path, Authorization
        self._next = 0x5000  # apart from the tests' own inbound SIDs
        app = web.Application()
        base = "/2010-04-01/Accounts/{account}"
        app.router.add_post(base + "/Messages.json", self._create)
        app.router.add_get(base + "/Messages/{sid}.json", self._message)
        app.router.add_get(base + "/Messages/{sid}/Media.json", self._media_list)
        app.router.add_get(base + "/Messages/{sid}/Media/{media}", self._media)
        app.router.add_get("/media-store/{media}", self._media_store)
        self.server = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> TwilioFake:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    # -- the kit's hooks -------------------------------------------------------------------

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(HTTP_FAILURES[kind])

    def fail_with(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.failures.append((status, headers or {}))

    # -- publishing an inbound MMS ---------------------------------------------------------

    def publish_mms(self, message_sid: str, sender: str, text: str,
                    files: list[tuple[str, bytes]]) -> dict[str, str]:
        """Make an inbound MMS readable over the API; returns the webhook's form fields."""
        self.messages[message_sid] = {
            "account_sid": ACCOUNT_SID, "api_version": "2010-04-01", "body": text,
            "date_created": formatdate(1767225600, usegmt=True),
            "date_sent": formatdate(1767225601, usegmt=True),
            "date_updated": formatdate(1767225601, usegmt=True), "direction": "inbound",
            "error_code": None, "error_message": None, "from": sender,
            "messaging_service_sid": None, "num_media": str(len(files)), "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": message_sid, "status": "received",
            "to": OUR_NUMBER,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}.json",
        }
        stored = []
        fields = {"MessageSid": message_sid, "SmsSid": message_sid, "SmsMessageSid": message_sid,
                  "AccountSid": ACCOUNT_SID, "From": sender, "To": OUR_NUMBER, "Body": text,
                  "NumMedia": str(len(files)), "NumSegments": "1", "SmsStatus": "received",
                  "ApiVersion": "2010-04-01", "FromCountry": "ES", "ToCountry": "ES"}
        for i, (content_type, data) in enumerate(files):
            self._next += 1
            media_sid = sid("ME", self._next)
            stored.append((media_sid, content_type, data))
            fields[f"MediaContentType{i}"] = content_type
            fields[f"MediaUrl{i}"] = (f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
                                      f"/Messages/{message_sid}/Media/{media_sid}")
        self.media[message_sid] = stored
        return fields

    # -- handlers --------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        self.requests.append((request.method, request.path,
                              request.headers.get("Authorization")))
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        return (request.headers.get("Authorization") == expected
                and request.match_info.get("account") == ACCOUNT_SID)

    @staticmethod
    def _error(code: int, message: str, status: int,
               headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(error_body(code, message, status), status=status,
                                 headers=headers)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(20003, "Authenticate", 401)
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error(20001, "Unsupported content type", 400)
        form = MultiDict(urllib.parse.parse_qsl((await request.read()).decode(),
                                                keep_blank_values=True))
        if self.failures:
            status, headers = self.failures.pop(0)
            code, message = FAILURE_BODIES.get(status, (20500, "Error"))
            return self._error(code, message, status, headers)
        to, body = form.get("To"), form.get("Body", "")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not to:
            return self._error(21604, "A 'To' phone number is required.", 400)
        if not sender and not service:
            return self._error(21603, "A 'From' phone number is required.", 400)
        if not body and "MediaUrl" not in form:
            return self._error(21602, "Message body is required.", 400)
        if len(body) > 1600:
            return self._error(21617, "The concatenated message body exceeds the 1600 "
                                      "character limit.", 400)
        self.forms.append(form)
        self.records.append(SentRecord(recipient=to, text=body))
        self._next += 1
        message_sid = sid("SM", self._next)
        self.created.append(message_sid)
        return web.json_response({
            "account_sid": ACCOUNT_SID, "api_version": "2010-04-01", "body": body,
            "date_created": formatdate(usegmt=True), "date_sent": None,
            "date_updated": formatdate(usegmt=True), "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": sender,
            "messaging_service_sid": service, "num_media": "0", "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": message_sid,
            "status": "accepted" if service else "queued", "to": to,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}.json",
        }, status=201)

    def _fetch_failure(self) -> web.Response | None:
        if self.fetch_failures:
            status = self.fetch_failures.pop(0)
            code, message = FAILURE_BODIES.get(status, (20500, "Error"))
            return self._error(code, message, status)
        return None

    async def _message(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(20003, "Authenticate", 401)
        failure = self._fetch_failure()
        if failure is not None:
            return failure
        message = self.messages.get(request.match_info["sid"])
        if message is None:
            return self._error(20404, "The requested resource was not found", 404)
        return web.json_response(message)

    async def _media_list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(20003, "Authenticate", 401)
        message_sid = request.match_info["sid"]
        files = self.media.get(message_sid, [])
        uri = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media.json"
        return web.json_response({
            "media_list": [{
                "account_sid": ACCOUNT_SID, "content_type": content_type,
                "date_created": formatdate(usegmt=True), "parent_sid": message_sid,
                "sid": media_sid,
                "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/"
                       f"{media_sid}.json"} for media_sid, content_type, _ in files],
            "end": max(len(files) - 1, 0), "first_page_uri": uri + "?PageSize=50&Page=0",
            "next_page_uri": None, "page": 0, "page_size": 50, "previous_page_uri": None,
            "start": 0, "uri": uri + "?PageSize=50&Page=0",
        })

    def _file(self, media_sid: str) -> tuple[str, bytes] | None:
        for files in self.media.values():
            for found, content_type, data in files:
                if found == media_sid:
                    return content_type, data
        return None

    async def _media(self, request: web.Request) -> web.Response:
        if not self._authorized(request):  # "Enforce HTTP Auth on Media URLs" is on
            return self._error(20003, "Authenticate", 401)
        if self._file(request.match_info["media"]) is None:
            return self._error(20404, "The requested resource was not found", 404)
        raise web.HTTPTemporaryRedirect(f"/media-store/{request.match_info['media']}")

    async def _media_store(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path,
                              request.headers.get("Authorization")))
        found = self._file(request.match_info["media"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[1], content_type=found[0])
