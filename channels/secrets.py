"""Secrets come from the environment or a file, never from the config text itself.

A config value ``"env:NAME"`` or ``"file:/path"`` becomes a ``Secret`` whose ``repr`` never
shows the value, so a secret cannot leak into a log line or an error message by accident.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Secret:
    """A resolved secret value; ``reveal()`` is the only way to read it."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self._source = source

    def reveal(self) -> str:
        return self._value

    def reveal_bytes(self) -> bytes:
        return self._value.encode()

    @property
    def source(self) -> str:
        return self._source

    def __repr__(self) -> str:
        return f"Secret({self._source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    @classmethod
    def parse(cls, reference: Any) -> Secret:
        """Resolve ``env:NAME`` / ``file:PATH``; raise ValueError naming what is missing."""
        if not isinstance(reference, str):
            raise ValueError("expected a secret reference string 'env:NAME' or 'file:PATH'")
        kind, sep, name = reference.partition(":")
        if not sep or kind not in ("env", "file") or not name:
            raise ValueError(
                "secrets must be given as 'env:NAME' or 'file:PATH', not as literal values"
            )
        if kind == "env":
            value = os.environ.get(name)
            if value is None or value == "":
                raise ValueError(f"environment variable {name} is not set")
            return cls(value, f"env:{name}")
        path = Path(name)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {name}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"secret file {name} is empty")
        return cls(value, f"file:{name}")


def resolve_references(settings: Any, names: Iterable[str]) -> Any:
    """``settings`` (a raw ``[channels.settings]`` table) with each of ``names`` that is an
    ``env:NAME`` / ``file:PATH`` reference replaced by what it names.

    For values that are not secrets but that operators keep out of config files anyway (a
    WhatsApp phone number id, a Twilio account SID): the adapter lists them in
    ``ChannelAdapter.referable_settings``, and either a literal or a reference works.
    ``ValueError`` names the setting and what is missing.
    """
    if not isinstance(settings, dict):
        return settings
    resolved = dict(settings)
    for name in names:
        value = resolved.get(name)
        if isinstance(value, str) and value.partition(":")[0] in ("env", "file") \
                and ":" in value:
            try:
                resolved[name] = Secret.parse(value).reveal()
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    return resolved
