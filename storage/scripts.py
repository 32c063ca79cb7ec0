"""The Lua scripts in ``storage/lua``, read once and called by SHA.

redis-py's ``Script`` runs EVALSHA and reloads the source on ``NOSCRIPT`` (after a Redis
restart or failover), so callers never ship the script text on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


def _source(name: str) -> str:
    return files("storage").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def load_script(redis: Redis, name: str) -> AsyncScript:
    return redis.register_script(_source(name))


class Scripts:
    """One handle per script, bound to a client."""

    def __init__(self, redis: Redis) -> None:
        self.ingest: AsyncScript = redis.register_script(_source("ingest"))
        self.enqueue_reply: AsyncScript = redis.register_script(_source("enqueue_reply"))
        self.release_retries: AsyncScript = redis.register_script(_source("release_retries"))
        self.retry_dead: AsyncScript = redis.register_script(_source("retry_dead"))
        self.dead_letter: AsyncScript = redis.register_script(_source("dead_letter"))
        self.claim_send: AsyncScript = redis.register_script(_source("claim_send"))
        self.conversations: AsyncScript = redis.register_script(_source("conversations"))
        self.deliveries: AsyncScript = redis.register_script(_source("deliveries"))


ScriptCall = tuple[Sequence[Any], Sequence[Any]]


async def run_pipelined(redis: Any, script: AsyncScript,
                        calls: Sequence[ScriptCall]) -> list[Any]:
    """``script`` once per ``(keys, args)`` of ``calls``, in one pipeline; each call's answer
    in order, an error answer as its exception (``raise_on_error=False``); a connection error
    raises.

    redis-py's pipelined ``Script`` sends ``SCRIPT EXISTS`` for its scripts before every
    pipeline: a second round trip for each batch the hot path writes. Here the EVALSHAs go
    alone, and only a ``NOSCRIPT`` answer (a Redis restarted or failed over: script caches are
    neither persisted nor replicated) loads the script and sends those calls again, which is
    their first run, since a NOSCRIPT call ran nothing. On a cluster the hub's pipeline sends
    each as EVAL (storage/cluster.py), which never answers NOSCRIPT."""
    if not calls:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for script_keys, args in calls:
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
        answers: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
    if missing:
        await redis.script_load(script.script)
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                script_keys, args = calls[i]
                pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
            again = await pipe.execute(raise_on_error=False)
        for i, answer in zip(missing, again, strict=True):
            answers[i] = answer
    return answers
