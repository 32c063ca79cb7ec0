"""A Telegram-like channel for tests: the generic API channel's transport, with the per-chat and
per-bot rate limits of a chat provider declared in its capabilities (rates set in its settings,
so a test runs at 2 sends/s, not 1, and finishes in seconds).

Registered as channel type ``paced-api``: in-process through ``channels.registry.BUILTIN``
(``register``), in child hub processes through an ``inboxhub.channels`` entry point written
into a directory on their PYTHONPATH (``entry_point_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import Capabilities
from channels.services.limits import RateLimit
from tests.channels.plugin_dist import install_entry_point

TYPE = "paced-api"
TARGET = "tests.plugins.paced:PacedApiChannel"


class PacedSettings(ApiChannelSettings, frozen=True, forbid_unknown_fields=True):
    per_chat_rate: float = 2.0
    per_account_rate: float | None = None
    per_account_burst: int = 1


class PacedApiChannel(ApiChannel):
    type_name: ClassVar[str] = TYPE
    settings_type: ClassVar[type[PacedSettings]] = PacedSettings  # type: ignore[assignment]
    settings: PacedSettings

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        limits = [RateLimit("recipient", self.settings.per_chat_rate)]
        if self.settings.per_account_rate is not None:
            limits.append(RateLimit("account", self.settings.per_account_rate,
                                    self.settings.per_account_burst))
        caps = self.capabilities
        self.capabilities = Capabilities(
            max_text_length=caps.max_text_length,
            reply_window_seconds=caps.reply_window_seconds, threading=caps.threading,
            rate_limits=tuple(limits))


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    from channels import registry

    monkeypatch.setitem(registry.BUILTIN, TYPE, TARGET)


def entry_point_dir(root: Path) -> Path:
    """A directory that, on PYTHONPATH, makes ``importlib.metadata`` see the plugin."""
    return install_entry_point(root, distribution="inboxhub-paced-test", type_name=TYPE,
                               target=TARGET)
