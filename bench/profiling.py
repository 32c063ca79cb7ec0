"""Sampling a bench target with py-spy while it is under load, and the summary that goes in a
closing note: where the hub's time goes, by inclusive and by self time.

py-spy attaches from outside (no instrumentation in the hub, so the profile is of the code as
shipped); it is a test extra, not a dependency, and the benches run without it unless asked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

PY_SPY_TIMEOUT_GRACE = 30.0


async def record(pid: int, seconds: float, out: Path, rate: int = 200) -> Path:
    """Collapsed stacks (py-spy's ``raw`` format: one ``frame;frame;... count`` line per stack)
    of process ``pid`` for ``seconds``. Idle time is not sampled (``--idle`` off), so the
    shares are of the time the process was on a CPU."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
        "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + PY_SPY_TIMEOUT_GRACE)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("py-spy did not finish") from None
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-400:]}")
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds process ``pid`` has used (Linux ``/proc``), None elsewhere."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def frame_name(frame: str) -> str:
    """``handle (hub/app.py:120)`` -> ``hub/app.py:handle``: the line number would split one
    function's samples over its lines."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        for top in ("hub/", "storage/", "routing/", "channels/", "bench/"):
            if f"/{top}" in path:
                path = top + path.split(f"/{top}", 1)[1]
                break
    return f"{path}:{name}"


def summarise(collapsed: Path, top: int = 15) -> str:
    """The ``top`` functions by inclusive share and by self share of all samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame_name(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return "profile: no samples"
    lines = [f"profile: {total} samples"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"  top {top} by {title} time:")
        lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in table.most_common(top)]
    return "\n".join(lines)
