"""A local fake of DHgate's DOP gateway for station messages, for tests.

There is NO official documentation of these calls (CHANNELS.md §6.5): the method and field
names come from third-party integration code; their meaning, formats and errors are INFERRED.
Source, field by field (DOC = CHANNELS.md §6.5, itself from third-party integration code;
3RD = third-party code read for this fake; INFERRED = our assumption, nothing seen):

    DOC       gateway POST /dop/router; access_token, method, timestamp (ms), v=2.0; no sign
    DOC       OAuth2 token endpoint POST /dop/oauth2/access_token
    INFERRED  refresh form grant_type=refresh_token, refresh_token, client_id, client_secret
              (only the password grant was seen)
    INFERRED  token answer access_token, refresh_token, expires_in, scope; refresh tokens
              rotate (assumed: the safe side)
    DOC       dh.message.list params beforeDay, pageNo, pageSize
    3RD       beforeDay is 1-366 days back from today
    DOC       msgList[{msgId, msgType, msgTitle, msgReplyCount, senderId, senderNickName,
              receiverNickName, receiverRead, receiverMark, lastReplyTime, param}]
    DOC       the list is newest first by lastReplyTime
    INFERRED  totalPage, totalRecord, pageNo, pageSize in the list answer
    INFERRED  times as "YYYY-MM-DD HH:MM:SS", Beijing time, one-second resolution
    INFERRED  param of an order topic (002) is the order number (3RD sends param = order id)
    INFERRED  msgReplyCount grows with every reply
    DOC       dh.message.get (msgId) -> msgDetailList[{detailId, senderId, senderNickName,
              receiverId, content, attUrls, attNames, createTime}]
    INFERRED  attUrls / attNames as comma-separated strings
    DOC       msgType 001-003 buyer-seller, 004-009 system, 010-013 announcements
    DOC/3RD   reply dh.msg.info.reply (DOC) = dh.message.info.reply (3RD): msgId, content,
              receiverId
    INFERRED  the reply answer's detailId
    3RD       success: status{code "00000000", message, solution, subErrors[]}
    3RD       gateway error {code: 40, message}: access token expired or missing
    INFERRED  ... answered with HTTP 200
    INFERRED  too many calls: HTTP 429 + Retry-After (10 QPS in one config, unverified)
    INFERRED  a business error is a status.code other than 00000000 (here 10000001)
    INFERRED  the timestamp must be within 10 minutes
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from channels.testing import HTTP_FAILURES, FailureKind, InboundCase, SentRecord

SELLER = "ff8080815f1e2a3b015f2c9d1e0a0001"
OTHER_SELLER = "ff8080815f1e2a3b015f2c9d1e0a0999"
BUYER = "ff80808160aa11bb0160ab22cc330042"
CLIENT_ID = "dhgate-app-7"
CLIENT_SECRET = "dhgate-client-secret-0123456789"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))
OK = {"code": "00000000", "message": "OK", "solution": "", "subErrors": []}  # third-party code
# "auth" is a 403: a grant that does not cover the call (401-equivalents are gateway code 40).
FAILURES = {**HTTP_FAILURES, "auth": (403, {})}


def dh_time(at: float) -> str:
    """INFERRED format: Beijing wall-clock time to the second."""
    return datetime.datetime.fromtimestamp(at, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


class DHgateFake:
    def __init__(self, *, seller: str = SELLER) -> None:
        self.seller = seller
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        # Who accepts an access token: our own token endpoint by default, or the kit's OAuth
        # server (``TokenBattery``) when set.
        self.authorize: Callable[[str], bool] | None = None
        self.rate_limited = 0  # the next N gateway calls answer 429
        self.failures: list[tuple[int, dict[str, str]]] = []  # the next replies fail so
        self.topics: dict[str, dict[str, Any]] = {}
        self.details: dict[str, list[dict[str, Any]]] = {}
        self.sent: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.clock = time.time() - 3600
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- state --------------------------------------------------------------------------------

    def tick(self) -> float:
        """The fake's clock: real time, but every write at least a second after the last (so
        a test that does not ask for ties gets none)."""
        self.clock = max(time.time(), self.clock + 1)
        return self.clock

    def grant(self) -> tuple[str, str]:
        access, refresh = f"at-{secrets.token_hex(8)}", f"rt-{secrets.token_hex(8)}"
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return access, refresh

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def write(self, msg_id: str, text: str, *, detail_id: str | None = None,
              sender: str = BUYER, nickname: str = "Buyer Bob", receiver: str | None = None,
              msg_type: str = "001", order: str | None = None, at: float | None = None,
              attachments: list[str] | None = None) -> str:
        """A reply in topic ``msg_id`` (created if new), by default from the buyer."""
        when = self.tick() if at is None else at
        detail_id = detail_id or f"{next(self._ids):08d}"
        topic = self.topics.setdefault(msg_id, {
            "msgId": msg_id, "msgType": msg_type, "msgTitle": f"PO#{order}" if order else "Hi",
            "msgReplyCount": 0, "senderId": sender, "senderNickName": nickname,
            "receiverNickName": "our-shop", "receiverRead": "0", "receiverMark": "0",
            "lastReplyTime": dh_time(when), "param": order or ""})
        self.details.setdefault(msg_id, []).append({
            "detailId": detail_id, "senderId": sender, "senderNickName": nickname,
            "receiverId": receiver or (BUYER if sender == self.seller else self.seller),
            "content": text, "attUrls": ",".join(attachments or []),
            "attNames": ",".join(attachments or []), "createTime": dh_time(when)})
        topic["msgReplyCount"] += 1
        topic["lastReplyTime"] = max(topic["lastReplyTime"], dh_time(when))
        return detail_id

    def resurface(self, detail_id: str) -> None:
        """The same reply shown again as new (the kit's redelivery): its time moves on."""
        for msg_id, details in self.details.items():
            for detail in details:
                if detail["detailId"] == detail_id:
                    detail["createTime"] = dh_time(self.tick())
                    self.topics[msg_id]["lastReplyTime"] = detail["createTime"]
                    self.topics[msg_id]["msgReplyCount"] += 1
                    return
        raise KeyError(detail_id)

    # -- the kit's provider protocol ------------------------------------------------------------

    def publish(self, case: InboundCase) -> None:
        p = case.payload
        if any(d["detailId"] == p["detailId"] for ds in self.details.values() for d in ds):
            self.resurface(p["detailId"])
            return
        self.write(p["msgId"], p["content"], detail_id=p["detailId"], sender=p["senderId"],
                   nickname=p["senderNickName"], msg_type=p.get("msgType", "001"),
                   order=p.get("order"))

    def sent_records(self) -> list[SentRecord]:
        return [SentRecord(recipient=s["receiverId"], text=s["content"], thread_id=s["msgId"])
                for s in self.sent]

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    # -- server -------------------------------------------------------------------------------

    async def __aenter__(self) -> DHgateFake:
        app = web.Application()
        app.router.add_post("/dop/router", self._router)
        app.router.add_post("/dop/oauth2/access_token", self._token)
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
        return f"{self.url}/dop/oauth2/access_token"

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        used = form.get("refresh_token")
        if form.get("grant_type") != "refresh_token" or used not in self.refresh_tokens:
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refresh_tokens.discard(str(used))
        self.refreshes += 1
        access, refresh = self.grant()
        return web.json_response({"access_token": access, "refresh_token": refresh,
                                  "expires_in": 86400, "scope": "basic"})

    def _live(self, token: str) -> bool:
        if self.authorize is not None:
            return self.authorize(f"Bearer {token}")
        return token in self.access_tokens

    async def _router(self, request: web.Request) -> web.Response:
        form = {**request.query, **(await request.post())}
        method = str(form.get("method", ""))
        self.calls.append(method)
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response({"code": 429, "message": "too many requests"},
                                     status=429, headers={"Retry-After": "1"})
        try:
            ts = int(str(form.get("timestamp", "")))
        except ValueError:
            return web.json_response({"code": 1, "message": "timestamp missing"})
        if form.get("v") != "2.0" or abs(time.time() * 1000 - ts) > 600_000:
            return web.json_response({"code": 1, "message": "bad v or timestamp"})
        if not self._live(str(form.get("access_token", ""))):
            return web.json_response({"code": 40, "message": "access token expired"})
        if method == "dh.message.list":
            return self._list(form)
        if method == "dh.message.get":
            msg_id = str(form.get("msgId", ""))
            if msg_id not in self.details:
                return web.json_response({"status": {**OK, "code": "10000001",
                                                     "message": "msgId not found"}})
            return web.json_response({"msgDetailList": self.details[msg_id], "status": OK})
        if method in ("dh.message.info.reply", "dh.msg.info.reply"):
            return self._reply(form)
        return web.json_response({"code": 2, "message": f"unknown method {method}"})

    def _list(self, form: dict[str, Any]) -> web.Response:
        days = int(str(form.get("beforeDay", "7")))
        page, size = int(str(form.get("pageNo", "1"))), int(str(form.get("pageSize", "20")))
        since = dh_time(time.time() - days * 86400)
        ordered = sorted((t for t in self.topics.values() if t["lastReplyTime"] >= since),
                         key=lambda t: (t["lastReplyTime"], t["msgId"]), reverse=True)
        chunk = ordered[(page - 1) * size: page * size]
        total_page = max(1, -(-len(ordered) // size))
        return web.json_response({"msgList": chunk, "pageNo": page, "pageSize": size,
                                  "totalPage": total_page, "totalRecord": len(ordered),
                                  "status": OK})

    def _reply(self, form: dict[str, Any]) -> web.Response:
        if self.failures:
            status, headers = self.failures.pop(0)
            return web.json_response({"code": status, "message": "injected"}, status=status,
                                     headers=headers)
        msg_id, receiver = str(form.get("msgId", "")), str(form.get("receiverId", ""))
        if msg_id not in self.topics:
            return web.json_response({"status": {**OK, "code": "10000001"}})
        content = str(form.get("content", ""))
        self.sent.append({"msgId": msg_id, "content": content, "receiverId": receiver})
        detail = self.write(msg_id, content, sender=self.seller, nickname="our-shop",
                            receiver=receiver)
        return web.json_response({"detailId": detail, "status": OK})
