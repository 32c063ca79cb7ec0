"""A local fake of AliExpress's legacy TOP gateway for buyer messages, for tests.

There is NO official documentation of these calls (CHANNELS.md §6.3): only auto-generated
SDK request classes and the legacy relation-list result fields. Source, field by field
(DOC = CHANNELS.md §6.3; TOP = Taobao Open Platform gateway conventions, applied to
AliExpress by assumption; INFERRED = our assumption, nothing seen):

    DOC       gateway POST form to /router/rest; method names querymsgrelationlist,
              querymsgdetaillist (versiontwo), addmsg
    DOC       signing: upper(hex(HMAC-SHA1(app_secret, url_path + sorted(key+value))))
    TOP       common params method, app_key, session (access token), timestamp, format=json,
              v=2.0, sign_method, sign
    INFERRED  sign_method value "hmac-sha1"
    TOP       timestamp as "YYYY-MM-DD HH:MM:SS" Beijing time, within 10 minutes
    TOP       errors as {"error_response": {code, msg, sub_code, sub_msg, request_id}}, HTTP 200
    TOP       code 25 invalid signature, 27 invalid session (token), 7 app call limited
    INFERRED  those codes mean the same at AliExpress; the rate-limit storm answers code 7
              with sub_code accesscontrol.limited-by-api-access-count
    TOP       success as {"<method with _>_response": {"result": {...}, "request_id"}}
    INFERRED  relation list params current_page, page_size; result "relationList"
    DOC       relation fields unreadCount, channelId, lastMessageId, readStat,
              lastMessageContent, lastMessageIsOwn, childId, childName, messageTime,
              otherName, otherLoginId, dealStat, rank
    INFERRED  relations newest first by messageTime; messageTime in epoch ms
    INFERRED  dealStat set only on order relations (channelId is then the order id)
    INFERRED  detail list params channel_id, current_page, page_size; result
              "messageDetailList", newest first
    INFERRED  detail fields id, content, gmtCreate (epoch ms), senderLoginId, senderName,
              receiverLoginId, messageType
    DOC       addmsg params buyer_id, channel_id, content, msg_sources (message_center |
              order_msg); img_path not used
    INFERRED  addmsg seller_id param; its result {is_success, message_id}
    INFERRED  refresh grant form at the token URL: grant_type=refresh_token, client_id
              (= app_key), client_secret, refresh_token; standard answer; rotation
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from channels.aliexpress.signing import verify
from channels.testing import HTTP_FAILURES, FailureKind, InboundCase, SentRecord

APP_KEY = "12345678"
APP_SECRET = "ali-app-secret-0123456789abcdef"
SELLER = "cn1500012345abcd"
SELLER_ID = "2200012345"
OTHER_SELLER = "cn1500099999zzzz"
BUYER = "br1009876543"
PATH = "/router/rest"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))
FAILURES = {**HTTP_FAILURES, "auth": (403, {})}


def top_error(code: int, msg: str, sub_code: str = "") -> dict[str, Any]:
    return {"error_response": {"code": code, "msg": msg, "sub_code": sub_code,
                               "sub_msg": "echo of what was sent", "request_id": "r-1"}}


def answer(method: str, result: dict[str, Any]) -> dict[str, Any]:
    return {method.replace(".", "_") + "_response": {"result": result, "request_id": "r-1"}}


class AliExpressFake:
    def __init__(self, *, seller: str = SELLER, path: str = PATH, app_key: str = APP_KEY,
                 app_secret: str = APP_SECRET) -> None:
        self.seller, self.path = seller, path
        self.app_key, self.app_secret = app_key, app_secret
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        self.authorize: Callable[[str], bool] | None = None  # the kit's OAuth server, if set
        self.rate_limited = 0
        self.bad_signs = 0
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.relations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.sent: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.clock = time.time() - 3600
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- state --------------------------------------------------------------------------------

    def tick(self) -> float:
        """Real time, but every write at least a millisecond after the last."""
        self.clock = max(time.time(), self.clock + 0.001)
        return self.clock

    def grant(self) -> tuple[str, str]:
        access, refresh = f"at-{secrets.token_hex(8)}", f"rt-{secrets.token_hex(8)}"
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return access, refresh

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def write(self, channel: str, text: str, *, message_id: str | None = None,
              sender: str = BUYER, name: str = "Ana B.", receiver: str | None = None,
              order: bool = False, at: float | None = None) -> str:
        when = int((self.tick() if at is None else at) * 1000)
        message_id = message_id or f"{next(self._ids):010d}"
        relation = self.relations.setdefault(channel, {
            "channelId": channel, "otherLoginId": BUYER, "otherName": name,
            "unreadCount": 0, "readStat": 0, "rank": "rank0", "childId": 0,
            "childName": "", "dealStat": "WAIT_SELLER_SEND_GOODS" if order else "",
            "messageTime": when, "lastMessageId": message_id, "lastMessageContent": text,
            "lastMessageIsOwn": sender == self.seller})
        self.messages.setdefault(channel, []).append({
            "id": message_id, "content": text, "gmtCreate": when, "senderLoginId": sender,
            "senderName": name, "messageType": "member2member",
            "receiverLoginId": receiver or (BUYER if sender == self.seller else self.seller)})
        if when >= relation["messageTime"]:
            relation.update(messageTime=when, lastMessageId=message_id,
                            lastMessageContent=text, lastMessageIsOwn=sender == self.seller)
        if sender != self.seller:
            relation["unreadCount"] += 1
        return message_id

    def resurface(self, message_id: str) -> None:
        """The same message shown again as new (the kit's redelivery): its time moves on."""
        for channel, messages in self.messages.items():
            for m in messages:
                if m["id"] == message_id:
                    m["gmtCreate"] = int(self.tick() * 1000)
                    self.relations[channel].update(messageTime=m["gmtCreate"],
                                                   lastMessageId=f"{message_id}-again")
                    return
        raise KeyError(message_id)

    # -- the kit's provider protocol ------------------------------------------------------------

    def publish(self, case: InboundCase) -> None:
        p = case.payload
        if any(m["id"] == p["id"] for ms in self.messages.values() for m in ms):
            self.resurface(p["id"])
            return
        self.write(p["channelId"], p["content"], message_id=p["id"],
                   sender=p["senderLoginId"], name=p["senderName"])

    def sent_records(self) -> list[SentRecord]:
        return [SentRecord(recipient=s["buyer_id"], text=s["content"],
                           thread_id=s["channel_id"]) for s in self.sent]

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    # -- server -------------------------------------------------------------------------------

    async def __aenter__(self) -> AliExpressFake:
        app = web.Application()
        app.router.add_post(self.path, self._gateway)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.app_key or \
                form.get("client_secret") != self.app_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        used = form.get("refresh_token")
        if form.get("grant_type") != "refresh_token" or used not in self.refresh_tokens:
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refresh_tokens.discard(str(used))
        self.refreshes += 1
        access, refresh = self.grant()
        return web.json_response({"access_token": access, "refresh_token": refresh,
                                  "expires_in": 86400, "user_nick": self.seller})

    def _live(self, token: str) -> bool:
        if self.authorize is not None:
            return self.authorize(f"Bearer {token}")
        return token in self.access_tokens

    async def _gateway(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        method = form.get("method", "")
        self.calls.append(method)
        if not verify(self.app_secret.encode(), request.path, form) or \
                form.get("sign_method") != "hmac-sha1" or form.get("app_key") != self.app_key:
            self.bad_signs += 1
            return web.json_response(top_error(25, "Invalid signature"))
        try:
            sent_at = datetime.datetime.strptime(form.get("timestamp", ""),
                                                 "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
        except ValueError:
            return web.json_response(top_error(31, "Invalid timestamp"))
        if abs(sent_at.timestamp() - time.time()) > 600:
            return web.json_response(top_error(31, "Invalid timestamp"))
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response(top_error(7, "App Call Limited",
                                               "accesscontrol.limited-by-api-access-count"))
        if not self._live(form.get("session", "")):
            return web.json_response(top_error(27, "Invalid session", "invalid-sessionkey"))
        page = int(form.get("current_page", "1"))
        size = int(form.get("page_size", "20"))
        if method == "aliexpress.message.redefining.versiontwo.querymsgrelationlist":
            ordered = sorted(self.relations.values(),
                             key=lambda r: (r["messageTime"], r["channelId"]), reverse=True)
            return web.json_response(answer(method, {
                "result_success": True,
                "relationList": ordered[(page - 1) * size: page * size]}))
        if method == "aliexpress.message.redefining.versiontwo.querymsgdetaillist":
            messages = sorted(self.messages.get(form.get("channel_id", ""), []),
                              key=lambda m: m["gmtCreate"], reverse=True)
            return web.json_response(answer(method, {
                "result_success": True,
                "messageDetailList": messages[(page - 1) * size: page * size]}))
        if method == "aliexpress.message.redefining.addmsg":
            return self._add(method, form)
        return web.json_response(top_error(22, "Invalid method"))

    def _add(self, method: str, form: dict[str, str]) -> web.Response:
        if self.failures:
            status, headers = self.failures.pop(0)
            return web.json_response(top_error(status, "injected"), status=status,
                                     headers=headers)
        channel = form.get("channel_id", "")
        if channel not in self.relations:
            return web.json_response(answer(method, {"is_success": False,
                                                     "error_code": "channel_not_found"}))
        self.sent.append({k: form[k] for k in ("buyer_id", "channel_id", "content",
                                               "msg_sources") if k in form}
                         | ({"seller_id": form["seller_id"]} if "seller_id" in form else {}))
        mid = self.write(channel, form.get("content", ""), sender=self.seller, name="shop",
                         receiver=form.get("buyer_id"))
        return web.json_response(answer(method, {"is_success": True, "message_id": mid}))
