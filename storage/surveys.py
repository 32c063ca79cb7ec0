"""The Redis side of the survey-link page (hub/survey_page.py): an answer recorded once per
survey round, and a per-address request count that keeps one client from hammering it.

The answer is one script on the conversation's record (``lua/csat_link_answer.lua``): two
submits racing each other, or a submit racing the survey's expiry or a newer survey, leave
exactly one outcome. The fields are the ones a chat answer writes (hub/csat.py), so the
conversation view and the KPIs cannot tell the two apart except by ``csat_via``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal

from redis.commands.core import AsyncScript

from storage.keys import survey_client
from storage.scripts import load_script

Outcome = Literal["answered", "already", "closed"]


def link_marker(survey_round: str) -> str:
    """What ``csat_message`` holds for an answer given on the page (a chat answer: the
    message id): the retry of an answer already recorded is recognised by it."""
    return f"link:{survey_round}"


def client_key(client: str) -> str:
    """A digest, not the address: the count needs no personal data in Redis."""
    return survey_client(hashlib.sha256(client.encode()).hexdigest()[:24])


class SurveyAnswersStore:
    """Recording link answers and counting requests per client address."""

    def __init__(self, redis: Any) -> None:
        self.redis: Any = redis
        self._answer: AsyncScript = load_script(redis, "csat_link_answer")

    async def record(self, conversation_key: str, survey_round: str, score: int,
                     *, now: float | None = None) -> tuple[Outcome, int | None]:
        """The outcome and the score on record (the first one for ``already``)."""
        outcome, stored = await self._answer(
            keys=[conversation_key],
            args=[survey_round, str(score), repr(time.time() if now is None else now),
                  link_marker(survey_round)])
        name = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        raw = stored.decode() if isinstance(stored, bytes) else str(stored)
        value = int(raw) if raw.isdigit() else None
        if name == "answered":
            return "answered", value
        if name == "already":
            return "already", value
        return "closed", None

    async def hit(self, client: str, window_seconds: int) -> int:
        """Count one request from ``client`` in the current window; the count so far. SET NX
        then INCR rather than EXPIRE NX, which Redis 6.2 does not have."""
        key = client_key(client)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, 0, ex=window_seconds, nx=True)
            pipe.incr(key)
            _created, count = await pipe.execute()
        return int(count)
