"""Installs the example channel the way a plugin distribution is installed: an
``inboxhub.channels`` entry point in a ``*.dist-info`` directory on the import path.

So the hub processes of the tests load it through the real plugin mechanism
(``channels.registry``) and no test-only way to name an adapter class exists in the hub.
"""

from __future__ import annotations

from pathlib import Path

from tests.channels.plugin_dist import install_entry_point

TYPE_NAME = "example-poll"
TOKEN_ENV = "IH_TEST_POLL_TOKEN"


def install(site: Path) -> Path:
    """Write the distribution's metadata under ``site`` (put ``site`` on sys.path or
    PYTHONPATH, with the repository root for the ``tests`` package)."""
    return install_entry_point(site, distribution="inboxhub-polling-example", type_name=TYPE_NAME,
                               target="tests.channels.polling_example.adapter:ExampleChannel")


def channel_toml(name: str, url: str, *, interval: float = 0.05, lease_seconds: float = 2.0,
                 ) -> str:
    """A ``[[channels]]`` table for the example (the token comes from ``TOKEN_ENV``)."""
    return f"""
[[channels]]
name = "{name}"
type = "{TYPE_NAME}"
[channels.settings]
url = "{url}"
token = "env:{TOKEN_ENV}"
poll_interval_seconds = {interval}
lease_seconds = {lease_seconds}
"""
