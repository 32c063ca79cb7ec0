"""Signed survey links: for a conversation the channel cannot answer, the survey is a link to a
page the hub serves (hub/survey_page.py) that an agent pastes where the buyer will see it.

A link is ``<csat.public_url>/survey/<token>``. The token is the capability: whoever holds it
may answer that one survey, once, until it expires, and nothing else. It is
``<payload>.<mac>``, both unpadded base64url; the payload is the JSON array
``[conversation id, survey round, expiry]`` (the round is the id of the resolution event that
triggered the survey, so a later survey of the same conversation gets a different link and an
old link cannot answer it), the mac HMAC-SHA256 over a version prefix and the payload bytes
with ``csat.link_secret``. The mac is checked in constant time before the payload is parsed;
the expiry is the survey's own (``csat.answer_hours``). Nothing is stored per link: the same
inputs make the same token, so the API can show it again at any time.

Rotating ``link_secret`` invalidates every outstanding link (their pages answer "not valid").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final, Literal

import msgspec

from channels.secrets import Secret

# Generous for ids of ours (a conversation id is about 30 characters, a stream id up to 41):
# anything longer is refused before any work is done on it.
MAX_TOKEN_LENGTH: Final = 400
_VERSION: Final = b"inboxhub-survey-link-v1\n"
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,300}\.[A-Za-z0-9_-]{43}")
_PART_LIMIT: Final = 120

Problem = Literal["malformed", "forged", "expired"]


class Claims(msgspec.Struct, frozen=True, array_like=True):
    """What a valid token says: the survey of ``conversation_id`` sent for ``survey_round``,
    open until ``expires_at`` (UNIX seconds)."""

    conversation_id: str
    survey_round: str
    expires_at: int


class InvalidLink(Exception):
    """A token that is not a link of ours (``malformed``, ``forged``) or is past its expiry
    (``expired``; only said of a genuine token)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.problem: Problem = problem


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Makes and checks tokens with one secret; ``base_url`` is where the page is served."""

    def __init__(self, secret: Secret, base_url: str) -> None:
        self._key = hashlib.sha256(_VERSION + secret.reveal_bytes()).digest()
        self.base_url = base_url.rstrip("/")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _VERSION + payload, hashlib.sha256).digest()

    def token(self, conversation_id: str, survey_round: str, expires_at: float) -> str:
        if len(conversation_id) > _PART_LIMIT or len(survey_round) > _PART_LIMIT:
            raise ValueError("conversation id or survey round too long for a link")
        payload = msgspec.json.encode(Claims(conversation_id, survey_round, int(expires_at)))
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def url(self, conversation_id: str, survey_round: str, expires_at: float) -> str:
        return f"{self.base_url}/survey/{self.token(conversation_id, survey_round, expires_at)}"

    def verify(self, token: str, *, now: float) -> Claims:
        """The claims of a genuine, unexpired token; ``InvalidLink`` otherwise. The shape is
        checked first (bounded work for any input), then the mac in constant time, and only
        then is the payload decoded: nothing an attacker wrote is parsed unsigned."""
        if len(token) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
            raise InvalidLink("malformed")
        encoded, _, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(encoded), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise InvalidLink("malformed") from None
        if _b64(payload) != encoded or _b64(mac) != mac_text:  # one spelling per token
            raise InvalidLink("malformed")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidLink("forged")
        try:
            claims = msgspec.json.decode(payload, type=Claims)
        except msgspec.DecodeError:  # signed by us, so only a bug or an old format
            raise InvalidLink("malformed") from None
        if claims.expires_at < now:
            raise InvalidLink("expired")
        return claims
