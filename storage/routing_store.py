"""Routing's state in Redis: the one place that knows its keys and commands.

The routing engine decides *what* it wants (classification, rules, pools, deadlines) and asks
this store; the atomic decisions themselves are the commands of ``storage/lua/routing.lua``
(``decide``). Everything lives under the routing hash tag (``ih:{r}:``, layout in the script's
header), so every decision runs in one cluster slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from storage import keys
from storage.scripts import load_script


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class RoutingStore:
    """Typed access to routing state; one per process, shared by the engine's callers."""

    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # bytes replies; decoded here, never by callers
        self.base = keys.ROUTING_BASE
        self.script = load_script(redis, "routing")

    def _key(self, *parts: str) -> str:
        return self.base + ":".join(parts)

    # -- the atomic decisions --------------------------------------------------------------

    async def decide(self, command: str, *args: Any, now: float | None = None) -> Any:
        """Run one command of routing.lua (enqueue, agent, release, timers, ...)."""
        return await self.script(
            keys=[self.base + "events"],
            args=[self.base, command, repr(time.time() if now is None else now), *args],
        )

    # -- settings and agent profiles -------------------------------------------------------

    async def write_settings(self, settings: Mapping[str, float | int]) -> None:
        await self.redis.hset(self._key("settings"), mapping=dict(settings))

    async def profiles(self) -> dict[str, bytes]:
        raw = await self.redis.hgetall(self._key("profiles"))
        return {_text(k) or "": v for k, v in raw.items()}

    async def profile(self, agent_id: str) -> bytes | None:
        raw: bytes | None = await self.redis.hget(self._key("profiles"), agent_id)
        return raw

    async def put_profile(self, agent_id: str, profile: bytes, *, origin: str,
                          keep_origin: bool = False) -> None:
        """Store a profile; ``origin`` is "config" or "api" (``keep_origin``: only if unset)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._key("profiles"), agent_id, profile)
            if keep_origin:
                pipe.hsetnx(self._key("origins"), agent_id, origin)
            else:
                pipe.hset(self._key("origins"), agent_id, origin)
            await pipe.execute()

    async def origins(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self._key("origins"))
        return {_text(k) or "": _text(v) or "" for k, v in raw.items()}

    async def take_profile(self, agent_id: str) -> bytes | None:
        """Remove and return a profile (the first step of removing an agent)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self._key("profiles"), agent_id)
            pipe.hdel(self._key("profiles"), agent_id)
            raw, _ = await pipe.execute()
        return raw  # type: ignore[no-any-return]

    async def forget_agent(self, agent_id: str) -> None:
        """Everything routing kept about an agent, once it is offline and out of every pool."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._key("agent", agent_id), self._key("agent", agent_id, "pools"),
                        self._key("agent", agent_id, "convs"))
            for field_of in ("presence", "heartbeat", "origins"):
                pipe.hdel(self._key(field_of), agent_id)
            await pipe.execute()

    # -- presence ----------------------------------------------------------------------------

    async def set_presence(self, agent_id: str, status: str, now: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._key("presence"), agent_id, status)
            pipe.hset(self._key("heartbeat"), agent_id, repr(now))
            await pipe.execute()

    async def presence(self, agent_id: str) -> str | None:
        return _text(await self.redis.hget(self._key("presence"), agent_id))

    async def heartbeat(self, agent_id: str, now: float) -> None:
        await self.redis.hset(self._key("heartbeat"), agent_id, repr(now))

    async def heartbeats(self) -> dict[str, float]:
        raw = await self.redis.hgetall(self._key("heartbeat"))
        return {_text(k) or "": float(v) for k, v in raw.items()}

    async def placed_status(self, agent_id: str) -> str | None:
        """The status routing placed the agent with (may lag ``presence``: shifts, beats)."""
        return _text(await self.redis.hget(self._key("agent", agent_id), "status"))

    async def agent_record(self, agent_id: str) -> tuple[dict[str, str], list[str]]:
        """The agent's routing hash (status, cap:<kind>, load:<kind>, ...) and conversations."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key("agent", agent_id))
            pipe.smembers(self._key("agent", agent_id, "convs"))
            raw, convs = await pipe.execute()
        state = {_text(k) or "": _text(v) or "" for k, v in raw.items()}
        return state, sorted(_text(c) or "" for c in convs)

    # -- conversations -----------------------------------------------------------------------

    async def conversation_state(self, conversation_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self._key("rc", conversation_id))
        return {_text(k) or "": _text(v) or "" for k, v in raw.items()}

    async def conversation_fields(self, conversation_id: str,
                                  names: Iterable[str]) -> list[str | None]:
        values = await self.redis.hmget(self._key("rc", conversation_id), *names)
        return [_text(v) for v in values]

    async def set_conversation_field(self, conversation_id: str, name: str, value: str) -> None:
        await self.redis.hset(self._key("rc", conversation_id), name, value)

    async def decision_log(self, conversation_id: str) -> list[bytes]:
        """Explain records, newest first (JSON, as the script wrote them)."""
        rows: list[bytes] = await self.redis.lrange(self._key("rc", conversation_id, "log"),
                                                    0, -1)
        return rows

    async def scope_facts(self, conversation_id: str,
                          agent_id: str) -> tuple[list[str | None], frozenset[str]]:
        """(status, assignee, pool) of a conversation and the pools an agent is eligible for,
        in one round trip: what an agent-scope decision needs."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._key("rc", conversation_id), "status", "assignee", "pool")
            pipe.hkeys(self._key("agent", agent_id, "pools"))
            fields, pools = await pipe.execute()
        return [_text(v) for v in fields], frozenset(_text(p) or "" for p in pools)

    async def agent_pool_ids(self, agent_id: str) -> tuple[str, ...]:
        pools = await self.redis.hkeys(self._key("agent", agent_id, "pools"))
        return tuple(sorted(_text(p) or "" for p in pools))

    # -- pools -------------------------------------------------------------------------------

    async def pool_counts(self, pool: str, kinds: Iterable[str]) -> tuple[dict[str, int],
                                                                          dict[str, int], int]:
        """Waiting conversations and available agents per kind, and online agents."""
        kinds = list(kinds)
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind in kinds:
                pipe.zcard(self._key("pool", pool, "wait", kind))
            for kind in kinds:
                pipe.zcard(self._key("pool", pool, "avail", kind))
            pipe.scard(self._key("pool", pool, "online"))
            counts = [int(c) for c in await pipe.execute()]
        n = len(kinds)
        return (dict(zip(kinds, counts[:n], strict=True)),
                dict(zip(kinds, counts[n:2 * n], strict=True)), counts[-1])

    async def waiting_pools(self) -> AsyncIterator[str]:
        """Every pool that has (or had) a waiting set, by pool id (``queue#step``)."""
        prefix = self.base + "pool:"
        async for key in self.redis.scan_iter(match=prefix + "*:wait:*", count=500):
            yield _text(key)[len(prefix):].rsplit(":wait:", 1)[0]  # type: ignore[index]

    async def take_waiting(self, pool: str) -> list[str]:
        """Empty a pool's waiting sets (a pool a reload removed); returns who was waiting."""
        taken: list[str] = []
        async for key in self.redis.scan_iter(match=self._key("pool", pool, "wait", "*"),
                                              count=100):
            for cid in await self.redis.zrange(key, 0, -1):
                await self.redis.zrem(key, cid)
                taken.append(_text(cid) or "")
        return taken
