"""OAuth tokens on Redis (``channels.services.tokens.TokenStore``): encrypted at rest, refreshed
by one process at a time across every hub process.

**Encryption.** The tokens are stored only sealed with AES-256-GCM (``cryptography``), bound to
their instance (the instance name is the associated data: a sealed record copied to another
instance's key does not open). The key comes from ``INBOXHUB_TOKEN_KEY`` (urlsafe base64 of 32
bytes; several comma-separated keys rotate: the first seals, all open). Without it the hub
uses ``<data_dir>/oauth-token.key``, created on first use with mode 0600 (and refused if group
or others may read it): the embedded single-process default works out of the box, and a Redis
dump or backup alone does not reveal the tokens. Hub processes on several machines sharing a
Redis must all get the same ``INBOXHUB_TOKEN_KEY`` (the hub warns when it uses a key file with
an external Redis). Each record names its key by an id, so a process without that key says so.

**Single-flight refresh.** A refresh takes a lock (``SET NX PX`` with a random id, released by
compare-and-delete in Lua) whose TTL outlives the refresher's timeout, so a refresher that hangs
gives up before its lock can pass to another process. The record carries a generation (every
stored set of tokens) and a failure counter: a process that waited for someone else's refresh
sees the generation move and takes the rotated tokens instead of refreshing again with the
refresh token the provider just invalidated, or sees the failure counter move and reports that
refresh's error. The commit writes only if the generation is still the one the refresh started
from (tokens an operator loaded meanwhile win), and never destroys the old refresh token on a
failure. Keys: ``storage.keys.tokens`` and ``storage.keys.token_lock``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis
from redis.exceptions import RedisError

from channels.errors import AuthError, RetryableError
from channels.services.tokens import (
    DEFAULT_MARGIN_SECONDS,
    OAuthTokens,
    Refresher,
    TokenState,
    check_tokens,
    token_status,
)
from channels.tokens import DEFAULT_REFRESH_TIMEOUT_SECONDS, call_refresher, scrub
from storage import keys
from storage.scripts import load_script

log = logging.getLogger(__name__)

KEY_ENV = "INBOXHUB_TOKEN_KEY"
KEY_FILE = "oauth-token.key"
_VERSION = b"\x01"
_KID_BYTES = 8
_NONCE_BYTES = 12


class TokenKeyError(Exception):
    """The encryption key is missing, malformed, unsafe, or not the one a record needs. The
    message says what to fix and never contains key material."""


def _kid(key: bytes) -> bytes:
    return hashlib.sha256(b"inboxhub-token-key\x00" + key).digest()[:_KID_BYTES]


class TokenCipher:
    """Seals and opens token records; the first key seals, every key opens."""

    def __init__(self, keys_: Sequence[bytes], *, source: str) -> None:
        if not keys_:
            raise TokenKeyError("no token encryption key")
        for key in keys_:
            if len(key) != 32:
                raise TokenKeyError(f"{source}: a token key must be 32 bytes, got {len(key)}")
        self.source = source
        self._keys = {_kid(k): AESGCM(k) for k in keys_}
        self._sealing = _kid(keys_[0])

    def __repr__(self) -> str:
        return f"TokenCipher({self.source}, key {self.kid})"

    @property
    def kid(self) -> str:
        """The sealing key's id (hex): names the key in messages, reveals nothing of it."""
        return self._sealing.hex()

    def knows(self, kid: str) -> bool:
        try:
            return bytes.fromhex(kid) in self._keys
        except ValueError:
            return False

    @staticmethod
    def _aad(instance: str) -> bytes:
        return b"inboxhub-oauth-tokens\x00" + instance.encode()

    def seal(self, instance: str, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._sealing].encrypt(nonce, data, self._aad(instance))
        return _VERSION + self._sealing + nonce + sealed

    def open(self, instance: str, blob: bytes) -> bytes:
        if blob[:1] != _VERSION or len(blob) < 1 + _KID_BYTES + _NONCE_BYTES + 16:
            raise TokenKeyError(f"{instance}: the stored tokens are not in a format this "
                                "release reads")
        kid = blob[1:1 + _KID_BYTES]
        aes = self._keys.get(kid)
        if aes is None:
            raise TokenKeyError(
                f"{instance}: the stored tokens were sealed with key {kid.hex()}, which this "
                f"process does not have (its key: {self.kid}, from {self.source}); give every "
                f"hub process the same {KEY_ENV}, or load the tokens again")
        nonce = blob[1 + _KID_BYTES:1 + _KID_BYTES + _NONCE_BYTES]
        try:
            return aes.decrypt(nonce, blob[1 + _KID_BYTES + _NONCE_BYTES:], self._aad(instance))
        except InvalidTag:
            raise TokenKeyError(f"{instance}: the stored tokens do not open with key "
                                f"{kid.hex()} (altered, or moved from another instance)") \
                from None


def new_key() -> str:
    """A fresh key in the form ``INBOXHUB_TOKEN_KEY`` takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise TokenKeyError(f"{source}: not urlsafe base64 (make one with: python -c "
                            "\"import base64,secrets;print(base64.urlsafe_b64encode("
                            "secrets.token_bytes(32)).decode())\")") from None
    if len(key) != 32:
        raise TokenKeyError(f"{source}: a token key must decode to 32 bytes, got {len(key)}")
    return key


def _key_file(data_dir: Path, *, create: bool = True) -> Path:
    """Read ``data_dir/oauth-token.key``, creating it (0600, atomically) if absent and
    ``create``."""
    path = data_dir / KEY_FILE
    if not path.exists() and not create:
        raise TokenKeyError(f"no token key: set {KEY_ENV} as on the hub processes, or run "
                            f"this where their data directory is ({path} does not exist)")
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(new_key() + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
                log.warning("created %s: the key that encrypts OAuth tokens at rest; back it "
                            "up with the data directory (tokens cannot be read without it)",
                            path)
        finally:
            tmp.unlink(missing_ok=True)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenKeyError(f"{path}: the token key is readable by others (mode "
                            f"{stat.S_IMODE(mode):04o}); chmod 600 it")
    return path


def load_token_cipher(data_dir: Path, env_value: str | None, *,
                      create: bool = True) -> TokenCipher:
    """The cipher from ``INBOXHUB_TOKEN_KEY`` when set (comma-separated keys: the first
    seals), else from the data directory's key file (created on first use unless ``create``
    is false: a CLI on another host must not seal tokens with a key no hub has). Blocking
    file I/O: call it before the loop runs or through ``asyncio.to_thread``."""
    if env_value is not None and env_value.strip():
        parts = [p for p in env_value.split(",") if p.strip()]
        return TokenCipher([_decode_key(p, f"{KEY_ENV} (key {i + 1})")
                            for i, p in enumerate(parts)], source=KEY_ENV)
    path = _key_file(data_dir, create=create)
    return TokenCipher([_decode_key(path.read_text(encoding="ascii"), str(path))],
                       source=str(path))


def _instance(instance: str) -> str:
    if not instance or len(instance) > 200 or "{" in instance or "}" in instance:
        raise ValueError("a channel instance name must be 1-200 characters without braces")
    return instance


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text or None


def _number(value: Any) -> float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(OAuthTokens)


class RedisTokenStore:
    """``TokenStore`` on Redis; see the module doc. ``lock_seconds`` bounds how long a refresh
    may hold the lock (the refresher's timeout is kept below it), ``wait_seconds`` how long a
    process waits for another's refresh before giving up with a ``RetryableError``."""

    def __init__(self, redis: Redis, cipher: TokenCipher, *,
                 margin_seconds: float = DEFAULT_MARGIN_SECONDS,
                 refresh_timeout_seconds: float = DEFAULT_REFRESH_TIMEOUT_SECONDS,
                 lock_seconds: float = 45.0, wait_seconds: float | None = None,
                 poll_seconds: float = 0.02) -> None:
        if not lock_seconds > 0:
            raise ValueError("lock_seconds must be positive")
        self.redis: Any = redis  # bytes replies
        self.cipher = cipher
        self.margin_seconds = margin_seconds
        # Half the lock for the provider, half for storing what it answered (three commit
        # attempts through a slow Redis): a commit outliving the lock would let another process
        # refresh with the refresh token the provider has just spent.
        self.refresh_timeout_seconds = min(refresh_timeout_seconds, lock_seconds * 0.5)
        self.lock_ms = max(1, math.ceil(lock_seconds * 1000))
        self.wait_seconds = lock_seconds + 5.0 if wait_seconds is None else wait_seconds
        self.poll_seconds = poll_seconds
        self._finishing: set[asyncio.Task[OAuthTokens]] = set()
        self._put = load_script(redis, "token_put")
        self._commit = load_script(redis, "token_commit")
        self._fail = load_script(redis, "token_fail")
        self._unlock = load_script(redis, "token_unlock")

    def __repr__(self) -> str:
        return f"RedisTokenStore({self.cipher!r})"

    # -- sealing -----------------------------------------------------------------------------

    def _seal(self, instance: str, tokens: OAuthTokens) -> list[Any]:
        """The record fields of token_put/token_commit: blob, kid, expires_at, scope,
        refreshable."""
        blob = self.cipher.seal(instance, _encode.encode(tokens))
        expires = "" if tokens.expires_at is None else repr(float(tokens.expires_at))
        return [blob, self.cipher.kid, expires, tokens.scope or "",
                1 if tokens.refresh_token else 0]

    def _open(self, instance: str, blob: bytes) -> OAuthTokens:
        try:
            return _decode.decode(self.cipher.open(instance, blob))
        except TokenKeyError as exc:
            raise AuthError(str(exc)) from None
        except msgspec.DecodeError:
            raise AuthError(f"{instance}: the stored tokens are unreadable; load them again") \
                from None

    # -- TokenStore ------------------------------------------------------------------------

    async def get(self, instance: str) -> OAuthTokens | None:
        blob = await self.redis.hget(keys.tokens(_instance(instance)), "blob")
        return None if blob is None else self._open(instance, blob)

    async def current(self, instance: str) -> OAuthTokens:
        blob, reauth, error = await self.redis.hmget(keys.tokens(_instance(instance)),
                                                     "blob", "reauth", "error")
        if blob is None:
            raise AuthError(f"{instance}: no OAuth tokens loaded (inboxhub channels auth "
                            f"{instance})")
        if reauth is not None:
            raise AuthError(f"{instance} needs re-authorization: "
                            f"{_text(error) or 'the refresh was refused'}")
        return self._open(instance, blob)

    async def put(self, instance: str, tokens: OAuthTokens) -> TokenState:
        check_tokens(tokens)
        await self._put(keys=[keys.tokens(_instance(instance))],
                        args=[*self._seal(instance, tokens), repr(time.time())])
        return await self.state(instance)

    async def state(self, instance: str, *, now: float | None = None) -> TokenState:
        (gen, expires, refreshed, loaded, error, refreshable, scope, reauth,
         kid) = await self.redis.hmget(
            keys.tokens(_instance(instance)), "gen", "expires_at", "refreshed_at",
            "loaded_at", "error", "refreshable", "scope", "reauth", "kid")
        if gen is None:
            return TokenState(instance=instance, status="missing")
        last_error = _text(error)
        kid_text = _text(kid) or ""
        foreign = not self.cipher.knows(kid_text)
        if foreign:
            last_error = (f"sealed with key {kid_text}, which this process does not have "
                          f"(set {KEY_ENV} as on the process that loaded them)")
        expires_at = _number(expires)
        can_refresh = _text(refreshable) == "1"
        return TokenState(
            instance=instance,
            status=token_status(present=True, needs_reauth=reauth is not None or foreign,
                                refreshable=can_refresh, expires_at=expires_at,
                                margin=self.margin_seconds,
                                now=time.time() if now is None else now),
            expires_at=expires_at, last_refresh_at=_number(refreshed),
            loaded_at=_number(loaded), last_error=last_error, refreshable=can_refresh,
            scope=_text(scope), generation=int(gen))

    async def refresh(self, instance: str, refresher: Refresher, *,
                      stale: OAuthTokens | None = None) -> OAuthTokens:
        record = keys.tokens(_instance(instance))
        lock = keys.token_lock(instance)
        gen, failures = await self.redis.hmget(record, "gen", "failures")
        if gen is None:
            await self.current(instance)  # raises: nothing to refresh
        me = secrets.token_hex(16)
        deadline = time.monotonic() + self.wait_seconds
        pause = self.poll_seconds
        while True:
            if await self.redis.set(lock, me, nx=True, px=self.lock_ms):
                return await self._finish_even_if_cancelled(
                    self._refresh_and_unlock(instance, refresher, stale, me, gen, failures))
            # Someone else is refreshing: wait for the outcome rather than refresh twice.
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.25)
            now_gen, now_failures, error, reauth = await self.redis.hmget(
                record, "gen", "failures", "error", "reauth")
            if now_gen != gen:
                return await self.current(instance)
            if now_failures != failures:
                kind = AuthError if reauth is not None else RetryableError
                raise kind(f"{instance}: token refresh failed: {_text(error)}")
            if time.monotonic() > deadline:
                raise RetryableError(f"{instance}: another process's token refresh did not "
                                     f"finish within {self.wait_seconds:g}s")

    async def _finish_even_if_cancelled(self, work: Coroutine[Any, Any, OAuthTokens],
                                        ) -> OAuthTokens:
        """Run a refresh to its commit even when the caller is cancelled (hub shutdown, a
        poller stopped): once the provider has rotated the refresh token, the old one is dead,
        and only the commit keeps the new one. The caller's cancellation is honoured as soon
        as the refresh has finished, which its timeout bounds."""
        task = asyncio.ensure_future(work)
        self._finishing.add(task)  # owned by the store until it ends (``drain``)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                log.info("token refresh in progress: finishing it before stopping")
                await asyncio.wait([task], timeout=self.refresh_timeout_seconds + 10.0)
                if not task.done():
                    task.cancel()
            raise

    def _finished(self, task: asyncio.Task[OAuthTokens]) -> None:
        self._finishing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled is gone; it is stored

    async def drain(self, timeout: float) -> None:
        """At shutdown: let refreshes whose callers were cancelled (even twice) commit what
        the provider answered, for up to ``timeout``; then cancel what is left."""
        pending = list(self._finishing)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in list(self._finishing):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _refresh_and_unlock(self, instance: str, refresher: Refresher,
                                  stale: OAuthTokens | None, me: str, gen: bytes | None,
                                  failures: bytes | None) -> OAuthTokens:
        lock = keys.token_lock(instance)
        try:
            return await self._refresh_locked(instance, refresher, stale, me, gen, failures)
        finally:  # a no-op when the commit or the failure note released it
            await self._unlock(keys=[lock], args=[me])

    async def _refresh_locked(self, instance: str, refresher: Refresher,
                              stale: OAuthTokens | None, me: str, gen: bytes | None,
                              failures: bytes | None) -> OAuthTokens:
        record, lock = keys.tokens(instance), keys.token_lock(instance)
        blob, now_gen, now_failures, reauth, error = await self.redis.hmget(
            record, "blob", "gen", "failures", "reauth", "error")
        if blob is None:
            await self.current(instance)  # raises: gone meanwhile
        tokens = self._open(instance, blob)
        if now_gen != gen or (stale is not None and tokens.access_token != stale.access_token):
            return tokens  # rotated while we waited, or before we asked
        if reauth is not None:
            raise AuthError(f"{instance} needs re-authorization: {_text(error)}")
        if now_failures != failures:  # a refresh under way when we came has failed
            raise RetryableError(f"{instance}: token refresh failed: {_text(error)}")
        expected = _text(now_gen) or "0"
        try:
            new = await call_refresher(refresher, tokens, self.refresh_timeout_seconds)
        except (AuthError, RetryableError) as exc:
            refused = isinstance(exc, AuthError)
            message = scrub(str(exc), tokens)
            await self._fail(keys=[record, lock], args=[expected, me, message,
                                                        1 if refused else 0])
            if refused:
                log.warning("channel %s needs re-authorization: %s", instance, message)
                raise AuthError(f"{instance} needs re-authorization: {message}") from None
            raise
        fields = self._seal(instance, new)
        for attempt in range(3):  # the provider has rotated: losing this write loses the account
            try:
                written = await self._commit(keys=[record, lock],
                                             args=[expected, me, *fields, repr(time.time())])
                break
            except RedisError:
                if attempt == 2:
                    log.error("channel %s: refreshed OAuth tokens could not be stored; the "
                              "account may need re-authorization", instance)
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        if not written:  # an operator loaded tokens meanwhile: theirs win
            return await self.current(instance)
        return new
