"""The agent inbox's benchmark (issue 18): both halves in one command.

    python -m bench.inbox [--conversations N]

1. ``bench.inbox_events``: webhook accepted -> event on the SSE stream, p50/p99 at 200
   messages/s with 50 connected agents and supervisors (target p99 < 250 ms);
2. ``bench.inbox_lists``: the conversation list's and search's first page with N
   conversations (default 100,000) next to a bare Redis PING in the same run.

Each half runs in its own process (its own hub or Redis), one after the other, so neither
measures the other's load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()
    if args.conversations < 1:
        parser.error("--conversations must be positive")
    code = subprocess.call([sys.executable, "-m", "bench.inbox_events"])
    return code or subprocess.call([sys.executable, "-m", "bench.inbox_lists",
                                    "--conversations", str(args.conversations)])


if __name__ == "__main__":
    raise SystemExit(main())
