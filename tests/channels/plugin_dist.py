"""A plugin distribution on disk, as pip would leave it: a ``*.dist-info`` directory with an
``inboxhub.channels`` entry point. The example channels install themselves with it, so hub
processes in the tests load them through the real plugin mechanism (``channels.registry``)
and the hub has no test-only way to name an adapter class."""

from __future__ import annotations

from pathlib import Path


def install_entry_point(site: Path, *, distribution: str, type_name: str, target: str) -> Path:
    """Write ``distribution``'s metadata under ``site`` declaring ``type_name = target``
    (``module:Class``); put ``site`` on PYTHONPATH (or sys.path) with the repository root."""
    dist = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[inboxhub.channels]\n{type_name} = {target}\n")
    return site
