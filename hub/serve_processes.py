"""``inboxhub serve --processes N``: N child ``serve`` processes on one port, supervised.

Python runs one core per process; the hub scales on one host by running several full hub
processes, each the owner of its own tasks (HTTP server, loops, Redis pool), that share the
listening port through SO_REUSEPORT (the kernel spreads new connections over them) and share
work through Redis (consumer groups, leases), exactly as hubs on several hosts do.

The parent does what must happen once, before any child runs:

- starts the embedded Redis (no ``storage.redis_url``) and keeps it for its lifetime: every
  child finds it already running on the data directory's socket and uses it, so there is
  never more than one redis-server on one AOF;
- checks and upgrades the stored schema, and creates the OAuth token key file if one is
  needed, so N children do not race to do it;
- holds a socket bound to the port with SO_REUSEPORT (bound, not listening: it takes no
  connection), so a port already in use by anything else fails here with a clear error,
  not as N children crashing in a loop.

Then it supervises: a child that exits is logged with its exit code and started again after
a capped, doubling backoff (reset once a child has run for a while). SIGTERM/SIGINT sends
SIGTERM to every child, waits ``hub.shutdown_timeout_seconds`` (+1 s for the interpreter to
exit) and SIGKILLs what is left; the exit code is 0 when every child stopped cleanly.
A SIGKILLed child loses nothing: what it had read and not acknowledged stays pending in its
consumer group and is reclaimed by a sibling. SIGHUP (routing reload) is forwarded to every
child. Children get SIGTERM if the parent itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Final

from hub.app import oauth_token_store
from hub.config import LoadedConfig
from hub.redis_connection import open_redis
from hub.roles import PortInUse, Role
from storage.schema import ensure_schema

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
# A child that ran this long before exiting is restarted after the base delay again.
STABLE_SECONDS = 30.0
# How a child asked to stop may end cleanly: 0 from its orderly shutdown, or the signal's own
# default action when it came before the child installed its handlers (still importing and
# loading its config, nothing in flight); 130 is the CLI's answer to a Ctrl-C at that point.
STOPPED_CLEAN: Final = frozenset({0, -signal.SIGTERM, -signal.SIGINT, 130})
# Beyond the children's own shutdown deadline: interpreter exit, the last log lines.
EXIT_SLACK_SECONDS = 1.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind (not listen) SO_REUSEPORT sockets on every address ``host`` resolves to, as the
    children's listeners will: the port stays ours between child restarts, and a port
    already taken by a server that does not share it raises ``PortInUse``."""
    held: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in {(i[0], i[1], i[2], "", i[4])
                                                    for i in infos}:
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in held:
            sock.close()
        raise PortInUse(f"cannot share {host}:{port} between hub processes: {exc.strerror} "
                        "(is another server, or a hub without --processes, on it?)") from None
    return held


def child_argv(config_path: Path, role: Role, port: int | None) -> list[str]:
    """One child: a single-process ``serve`` of the same config and role, on a shared port."""
    argv = [sys.executable, "-m", "hub", "--config", str(config_path), "serve",
            "--role", role, "--reuse-port"]
    if port is not None:
        argv += ["--port", str(port)]
    return argv


class Child:
    """One slot of the pool: its current process, restarted until the pool stops."""

    def __init__(self, slot: int, argv: list[str]) -> None:
        self.slot = slot
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.clean = True  # how its last process ended at the pool's stop

    def send(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        """Start, watch, restart with backoff; on ``stop`` terminate within ``grace``."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent)
            log.info("hub process %d started (slot %d)", self.proc.pid, self.slot)
            exited = asyncio.ensure_future(self.proc.wait())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if stop.is_set():
                exited.cancel()
                await self._terminate(grace)
                return
            code = self.proc.returncode
            lived = time.monotonic() - started
            failures = 1 if lived >= STABLE_SECONDS else failures + 1
            delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
            self.restarts += 1
            log.error("hub process %d (slot %d) exited with %s after %.1f s; restarting in "
                      "%.1f s", self.proc.pid, self.slot, _describe(code), lived, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        self.proc = None  # stopped during a backoff: nothing runs

    async def _terminate(self, grace: float) -> None:
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            code = await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.error("hub process %d (slot %d) did not stop within %.1f s; killing it "
                      "(its unacknowledged entries are reclaimed by the others)",
                      proc.pid, self.slot, grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            self.clean = False
            return
        self.clean = code in STOPPED_CLEAN
        log.log(logging.INFO if self.clean else logging.ERROR,
                "hub process %d (slot %d) stopped: %s", proc.pid, self.slot, _describe(code))


async def _owned(child: Child, stop: asyncio.Event, grace: float) -> None:
    """``child.run``, its failure (a process that could not be started) logged and counted:
    the pool then exits non-zero instead of running one process short in silence."""
    try:
        await child.run(stop, grace)
    except Exception:
        log.exception("hub slot %d failed; stopping the pool", child.slot)
        child.clean = False
        stop.set()


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


async def supervise(loaded: LoadedConfig, *, role: Role, processes: int,
                    port: int | None = None) -> int:
    """Run ``processes`` children until SIGTERM/SIGINT; the exit code (0: all stopped clean)."""
    config = loaded.config
    bind_port = config.hub.port if port is None else port
    if bind_port == 0:
        raise PortInUse("serve --processes needs a fixed port (hub.port or --port), not 0")
    held = reserve_port(config.hub.host, bind_port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    children = [Child(slot, child_argv(loaded.path, role, port)) for slot in range(processes)]

    def forward_hup() -> None:
        log.info("SIGHUP: forwarding to %d hub processes", len(children))
        for child in children:
            child.send(signal.SIGHUP)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, forward_hup)
    grace = config.hub.shutdown_timeout_seconds + EXIT_SLACK_SECONDS
    try:
        async with open_redis(config) as (client, embedded):
            await ensure_schema(client, partitions=config.storage.partitions)
            await oauth_token_store(loaded, client)  # makes the key file once, if one is due
            print(f"inboxhub supervising {processes} processes (role {role}, pid {os.getpid()}) "
                  f"on http://{config.hub.host}:{bind_port}", flush=True)
            log.info("supervising %d hub processes (role %s%s)", processes, role,
                     "; embedded redis started here" if embedded is not None else "")
            runs = [asyncio.create_task(_owned(child, stop, grace), name=f"hub-slot-{child.slot}")
                    for child in children]
            try:
                await stop.wait()
                log.info("stopping %d hub processes", processes)
            finally:
                stop.set()
                await asyncio.gather(*runs, return_exceptions=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for sock in held:
            sock.close()
    return 0 if all(child.clean for child in children) else 1
