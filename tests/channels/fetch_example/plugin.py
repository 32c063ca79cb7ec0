"""Installs the example fetching channel the way a plugin distribution is installed: an
``inboxhub.channels`` entry point in a ``*.dist-info`` directory on the import path, so hub
processes in the tests load it through the real plugin mechanism (``channels.registry``)."""

from __future__ import annotations

from pathlib import Path

from tests.channels.plugin_dist import install_entry_point

TYPE_NAME = "example-fetch"
TOKEN_ENV = "IH_TEST_FETCH_TOKEN"
SECRET_ENV = "IH_TEST_FETCH_SECRET"


def install(site: Path) -> Path:
    """Write the distribution's metadata under ``site`` (put ``site`` on PYTHONPATH, with the
    repository root for the ``tests`` package)."""
    return install_entry_point(site, distribution="inboxhub-fetch-example", type_name=TYPE_NAME,
                               target="tests.channels.fetch_example.adapter:ExampleFetchChannel")


def channel_toml(name: str, url: str) -> str:
    """A ``[[channels]]`` table for the example (token and secret from the environment)."""
    return f"""
[[channels]]
name = "{name}"
type = "{TYPE_NAME}"
[channels.settings]
url = "{url}"
token = "env:{TOKEN_ENV}"
secret = "env:{SECRET_ENV}"
"""
