"""Threading: our outbound Message-IDs, reply headers per RFC 5322 §3.6.4, the ids to look a
reply up by, and the subject key for the subject-plus-sender fallback.

Our Message-IDs look like ``<ih.{reply_token}.{random}@{domain}>``. The token is the hub's
reply id, so a buyer's answer is matched to the reply it answers even when the buyer's client
rewrote or dropped References (Outlook keeps only In-Reply-To, some webmails keep only the
last id): any one surviving id of ours is enough, and ``thread_candidates`` also finds our ids
quoted in the body. The random part keeps two sends of one reply (a retry) distinct, as
Message-IDs must be.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Protocol

import msgspec

MAX_REFERENCES = 20
"""References on our replies: the thread's first id plus the newest ones (RFC 5322 §3.6.4
allows dropping the middle; very long headers get mangled by relays)."""
MAX_CANDIDATES = 60
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DOMAIN = re.compile(r"[A-Za-z0-9.-]{1,253}")
_OURS = re.compile(r"<ih\.([A-Za-z0-9_-]{1,64})\.[0-9a-f]{8,32}@[A-Za-z0-9.-]{1,253}>",
                   re.IGNORECASE)
_ANY_ID = re.compile(r"<[^<>\s]{1,250}>")
_PREFIX = re.compile(
    r"[ \t]{0,8}(?:re|aw|sv|vs|antw|ref|rv|res|fw|fwd|tr|wg|enc|reenv|答复|回复|转发|回覆|轉寄|"
    r"答覆|转寄)[ \t]{0,4}(?:\[\d{1,4}\]|\(\d{1,4}\))?[ \t]{0,4}[:：][ \t]{0,8}", re.IGNORECASE)
_IMPORTANT = re.compile(r"\[important\]", re.IGNORECASE)
_WS = re.compile(r"\s+")
MAX_SUBJECT_CHARS = 1000


class ThreadFields(Protocol):
    """What threading reads of a message (``ParsedEmail`` has these)."""

    @property
    def message_id(self) -> str | None: ...
    @property
    def in_reply_to(self) -> str | None: ...
    @property
    def references(self) -> tuple[str, ...]: ...


class BodyFields(ThreadFields, Protocol):
    @property
    def full_text(self) -> str: ...
    @property
    def html(self) -> str | None: ...


def new_message_id(reply_token: str, domain: str) -> str:
    """A fresh Message-ID of ours carrying ``reply_token`` (``[A-Za-z0-9_-]{1,64}``)."""
    if not _TOKEN.fullmatch(reply_token):
        raise ValueError("reply token must be 1-64 characters of A-Z a-z 0-9 _ -")
    if not _DOMAIN.fullmatch(domain) or "." not in domain.strip("."):
        raise ValueError(f"not a domain for a Message-ID: {domain!r}")
    return f"<ih.{reply_token}.{secrets.token_hex(8)}@{domain.lower()}>"


def reply_token_of(message_id: str) -> str | None:
    """The reply token when ``message_id`` is one of ours, else ``None``."""
    found = _OURS.fullmatch(message_id.strip())
    return found.group(1) if found else None


def reply_tokens(candidates: list[str]) -> list[str]:
    """Our reply tokens among ``candidates``, in their order."""
    return [token for token in map(reply_token_of, candidates) if token is not None]


def reply_headers(parent: ThreadFields) -> tuple[str | None, tuple[str, ...]]:
    """``(In-Reply-To, References)`` for a reply to ``parent``, RFC 5322 §3.6.4: References is
    the parent's References (or, lacking them, its single In-Reply-To id) followed by the
    parent's Message-ID; bounded to ``MAX_REFERENCES`` keeping the first and the newest."""
    chain: list[str] = list(parent.references)
    if not chain and parent.in_reply_to and len(_ANY_ID.findall(parent.in_reply_to)) <= 1:
        chain = [parent.in_reply_to]
    if parent.message_id:
        chain.append(parent.message_id)
    unique = _dedupe(i for i in chain if _ANY_ID.fullmatch(i))
    if len(unique) > MAX_REFERENCES:
        unique = unique[:1] + unique[-(MAX_REFERENCES - 1):]
    return parent.message_id, tuple(unique)


def thread_candidates(email: BodyFields) -> list[str]:
    """Message-IDs to look the conversation up by, most specific first: In-Reply-To, then
    References newest first, then ids of ours quoted in the body (for clients that drop
    References and In-Reply-To alike)."""
    ordered: list[str] = []
    if email.in_reply_to:
        ordered.append(email.in_reply_to)
    ordered.extend(reversed(email.references))
    for text in (email.full_text[:500_000], (email.html or "")[:500_000]):
        ordered.extend(match.group(0) for match in _OURS.finditer(text))
    # a message cannot thread onto itself
    unique = _dedupe(i for i in ordered if i != email.message_id)
    return unique[:MAX_CANDIDATES]


def _dedupe(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


class SubjectKey(msgspec.Struct, frozen=True):
    """``key``: the subject for comparing (prefixes and ``[Important]`` gone, case-folded,
    whitespace collapsed); ``base``: the same for display; ``important``: the buyer or seller
    used Amazon's ``[Important]`` marker."""

    key: str
    base: str
    important: bool


def normalize_subject(subject: str) -> SubjectKey:
    """Strip reply/forward prefixes in every language clients use (Re, RE[2], AW, SV, RV, RES,
    Fwd, FW, TR, WG, Enc, 答复, 回复, 转发 …), repeatedly, and set ``[Important]`` aside."""
    text = _WS.sub(" ", subject[:MAX_SUBJECT_CHARS]).strip()
    important = _IMPORTANT.search(text) is not None
    text = _WS.sub(" ", _IMPORTANT.sub(" ", text)).strip()
    for _ in range(50):
        found = _PREFIX.match(text)
        if found is None or found.end() == 0:
            break
        text = text[found.end():]
        text = _WS.sub(" ", _IMPORTANT.sub(" ", text)).strip()
    return SubjectKey(key=text.casefold(), base=text, important=important)
