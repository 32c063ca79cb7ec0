"""The email adapter's parse processes: ``mime.parse_many`` on another core.

Parsing a fetched batch (MIME, charsets, HTML to text, quotes) costs about as long as
downloading it. On a thread it holds the GIL the event loop needs for IMAP and Redis, so the
adapter sends each batch to a child process instead and keeps fetching and storing meanwhile.

The child is ``python -m channels.email.parse_process``, started with
``asyncio.create_subprocess_exec`` (nothing blocks the loop, nothing is forked from a process
with threads and open sockets, and it imports only this package's parser: a
``multiprocessing`` spawn would import the parent's ``__main__``, the whole hub, first). The
two speak over its stdin/stdout in frames: a 4-byte big-endian length, then msgpack (msgspec),
never pickle. A request is ``[max_attachment_bytes, max_attachments, [raw, ...]]``; the answer
is ``{"ok": [ParsedEmail | reason, ...]}`` or ``{"error": "..."}`` when ``parse_email``
raised something other than ``MalformedEmail`` (a bug: the poll fails with it, as it did on a
thread). A child that dies (out of memory on a hostile message), or a request that is
cancelled midway, makes ``ParseProcesses.parse`` raise ``RetryableError`` / re-raise the
cancellation and that child is killed; the next request starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from channels.email.mime import ParsedEmail, parse_many
from channels.errors import RetryableError

log = logging.getLogger(__name__)

STOP_SECONDS: Final = 10.0
"""``close`` lets a child finish the batch in hand this long before it is killed."""
_ROOT: Final = str(Path(__file__).resolve().parents[2])
"""Where the ``channels`` package is: on the child's path whatever the parent's was."""
_LENGTH = struct.Struct(">I")
_MAX_FRAME = 1 << 31  # 2 GiB: far above a batch (32 MB of mail, its text twice over)


class _Answer(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: list[ParsedEmail | str] | None = None
    error: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_answer = msgspec.msgpack.Decoder(_Answer)
_request = msgspec.msgpack.Decoder(tuple[int, int, list[bytes]])


class _Child:
    """One running child and its pipes; used by one request at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin = process.stdin
        self.stdout = process.stdout

    async def ask(self, request: bytes) -> _Answer:
        self.stdin.write(_LENGTH.pack(len(request)) + request)
        await self.stdin.drain()
        size = _LENGTH.unpack(await self.stdout.readexactly(_LENGTH.size))[0]
        return _answer.decode(await self.stdout.readexactly(size))

    async def stop(self, timeout: float) -> None:
        """EOF on stdin ends the child after its current batch; killed if it takes longer."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.process.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class ParseProcesses:
    """Up to ``count`` children, started on first use; ``parse`` takes an idle one (requests
    are served in the order they came when all are busy)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one parse process")
        self.count = count
        self._idle: asyncio.Queue[_Child | None] = asyncio.Queue()
        for _ in range(count):
            self._idle.put_nowait(None)  # a slot whose child is not started yet
        self._children: set[_Child] = set()
        self._closed = False

    async def parse(self, raws: Sequence[bytes], *, max_attachment_bytes: int,
                    max_attachments: int) -> list[ParsedEmail | str]:
        """``mime.parse_many`` in a child process (module docstring)."""
        if self._closed:
            raise RuntimeError("parse processes are closed")
        request = _encode((max_attachment_bytes, max_attachments, list(raws)))
        child = await self._idle.get()
        try:
            if child is not None and child.process.returncode is not None:
                self._discard(child)  # died while idle
                child = None
            if child is None:
                child = await self._start()
            try:
                answer = await child.ask(request)
            except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError) as exc:
                self._discard(child)
                child = None
                raise RetryableError("the email parse process died; the batch is fetched "
                                     "again") from exc
            except BaseException:  # cancelled midway: its answer would meet the next request
                self._discard(child)
                child = None
                raise
        finally:
            self._idle.put_nowait(child)
        if answer.error is not None or answer.ok is None:
            raise RuntimeError(f"email parse process: {answer.error}")
        if len(answer.ok) != len(raws):
            raise RuntimeError(f"email parse process answered {len(answer.ok)} results for "
                               f"{len(raws)} messages")
        return answer.ok

    async def _start(self) -> _Child:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "channels.email.parse_process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=1 << 20)
        child = _Child(process)
        self._children.add(child)
        return child

    def _discard(self, child: _Child) -> None:
        child.kill()
        self._children.discard(child)
        # reaped (and its transport closed) in the background: nothing waits on a dead child
        asyncio.get_running_loop().create_task(self._reap(child))

    async def _reap(self, child: _Child) -> None:
        with contextlib.suppress(Exception):
            await child.stop(STOP_SECONDS)

    async def close(self) -> None:
        """Stop every child (the batch in hand may finish, ``STOP_SECONDS`` at most)."""
        self._closed = True
        children, self._children = list(self._children), set()
        await asyncio.gather(*(child.stop(STOP_SECONDS) for child in children),
                             return_exceptions=True)


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The child's loop: frames in, ``parse_many`` answers out, until EOF on ``source``."""
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        size = _LENGTH.unpack(head)[0]
        if size > _MAX_FRAME:
            return
        body = source.read(size)
        if len(body) < size:
            return
        try:
            max_bytes, max_count, raws = _request.decode(body)
            answer = _Answer(ok=parse_many(raws, max_attachment_bytes=max_bytes,
                                           max_attachments=max_count))
        except Exception as exc:  # a parser bug: told to the adapter, which fails the poll
            answer = _Answer(error=f"{type(exc).__name__}: {str(exc)[:500]}")
        out = _encode(answer)
        sink.write(_LENGTH.pack(len(out)) + out)
        sink.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
