"""Installs the example webhook channel the way a plugin distribution is installed: an
``inboxhub.channels`` entry point in a ``*.dist-info`` directory on the import path (a real
plugin writes the same entry point in its ``pyproject.toml``)."""

from __future__ import annotations

from pathlib import Path

from tests.channels.plugin_dist import install_entry_point

TYPE_NAME = "example-hook"
SECRET_ENV = "IH_TEST_HOOK_SECRET"


def install(site: Path) -> Path:
    return install_entry_point(site, distribution="inboxhub-webhook-example", type_name=TYPE_NAME,
                               target="tests.channels.webhook_example.adapter:ExampleHookChannel")


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
