"""Starting one redis-server (node, replica or sentinel) on a local TCP port for the
multi-server fixtures (tests/redis_cluster.py, tests/redis_sentinel.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time

START_TIMEOUT = 15.0


def start_on_port(args: list[str], port: int,
                  unavailable: type[Exception]) -> subprocess.Popen[bytes]:
    """``args`` started, returned once ``port`` accepts connections; ``unavailable`` (the
    fixture's own error, which its caller turns into a skip or, with CI=true, a failure) if
    the server exits or does not listen within ``START_TIMEOUT`` seconds."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.connect(("127.0.0.1", port))
            return proc
        if proc.poll() is not None:
            raise unavailable(f"redis-server on port {port} exited at start")
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise unavailable(f"redis-server on port {port} did not start")
