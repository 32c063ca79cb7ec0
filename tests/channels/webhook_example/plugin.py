"""Installs the example webhook channel the way a plugin distribution is installed: an
``inboxhub.channels`` entry point in a ``*.dist-info`` directory on the import path (a real
plugin writes the same entry point in its ``pyproject.toml``)."""

from __future__ import annotations

from pathlib import Path

TYPE_NAME = "example-hook"
SECRET_ENV = "IH_TEST_HOOK_SECRET"


def install(site: Path) -> Path:
    dist = site / "inboxhub_webhook_example-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: inboxhub-webhook-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[inboxhub.channels]\n"
        f"{TYPE_NAME} = tests.channels.webhook_example.adapter:ExampleHookChannel\n")
    return site


def channel_toml(name: str, send_url: str) -> str:
    """A ``[[channels]]`` table for the example (the secret comes from ``SECRET_ENV``)."""
    return f"""
[[channels]]
name = "{name}"
type = "{TYPE_NAME}"
[channels.settings]
secret = "env:{SECRET_ENV}"
send_url = "{send_url}"
"""
