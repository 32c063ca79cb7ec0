"""The embedded Redis keeps every buyer's messages under the data directory: the directory is
0700 and the AOF, RDB and log files 0600, including a directory an earlier release left with
looser modes (tightened at start, and logged)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from storage.embedded import EmbeddedRedis


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ihperm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _modes(data_dir: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    for path in data_dir.rglob("*"):
        if not path.is_socket():
            out[str(path.relative_to(data_dir))] = stat.S_IMODE(path.stat().st_mode)
    return out


async def _write_and_rewrite(server: EmbeddedRedis) -> None:
    client = Redis(unix_socket_path=str(server.socket_path))
    try:
        await client.set("k", "buyer data")
        await client.bgrewriteaof()  # new base and incremental AOF files
        await client.save()  # and an RDB
    finally:
        await client.aclose()


async def test_new_data_directory_is_private(short_dir: Path) -> None:
    data = short_dir / "data"
    server = EmbeddedRedis(data)
    await server.start()
    try:
        await _write_and_rewrite(server)
    finally:
        await server.stop()
    modes = _modes(data)
    assert any(name.startswith("appendonlydir/") for name in modes), modes
    assert "redis.log" in modes and "dump.rdb" in modes
    for name, mode in modes.items():
        wanted = 0o700 if (data / name).is_dir() else 0o600
        assert mode == wanted, (name, oct(mode))


async def test_loose_directory_of_an_earlier_release_is_tightened(
        short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = short_dir / "data"
    old_umask = os.umask(0o022)
    try:
        data.mkdir(mode=0o755)
        (data / "redis.log").write_text("old log\n")
        os.chmod(data, 0o755)
        os.chmod(data / "redis.log", 0o644)
        server = EmbeddedRedis(data)
        await server.start()
        await _write_and_rewrite(server)
        await server.stop()
    finally:
        os.umask(old_umask)
    # Loosen everything as an earlier release (plain umask 022) would have left it.
    for path in [data, *data.rglob("*")]:
        if not path.is_socket():
            path.chmod(0o755 if path.is_dir() else 0o644)
    caplog.set_level(logging.WARNING, logger="storage.embedded")
    server = EmbeddedRedis(data)
    await server.start()
    try:
        client = Redis(unix_socket_path=str(server.socket_path))
        assert await client.get("k") == b"buyer data"
        await client.aclose()
    finally:
        await server.stop()
    for name, mode in _modes(data).items():
        wanted = 0o700 if (data / name).is_dir() else 0o600
        assert mode == wanted, (name, oct(mode))
    tightened = [m for m in (r.getMessage() for r in caplog.records)
                 if "tightened permissions" in m]
    assert any(m.endswith("from 755 to 700") and str(data) in m for m in tightened), tightened
    assert any("redis.log from 644 to 600" in m for m in tightened), tightened
