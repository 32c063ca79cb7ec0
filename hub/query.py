"""Query parameters: parsed strictly, refused with a 400 that names the parameter, documented
from the same declaration (``hub.openapi``), so what is validated and what is published
cannot differ.

Strict means: an unknown parameter, a repeated one, ``limit=1_0``, ``before=nan`` or a value
outside its documented range is a 400 with a message saying what was expected; nothing reaches
Redis or Python's lenient ``int()``/``float()`` unchecked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hub.errors import ApiError

_INTEGER = re.compile(r"[0-9]{1,9}")
_NUMBER = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?")


@dataclass(frozen=True)
class QueryParam:
    """One query parameter: how to read it (``parse`` raises ValueError with the reason) and
    how it is documented."""

    name: str
    description: str
    schema: dict[str, Any]
    parse: Callable[[str], Any]


@dataclass(frozen=True)
class Query:
    """The query parameters one endpoint accepts."""

    params: tuple[QueryParam, ...]

    def parse(self, request: web.Request) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        seen: set[str] = set()
        for name in request.query:
            if name not in known:
                allowed = ", ".join(known) or "none"
                raise ApiError(400, f"unknown query parameter {name[:40]!r} (accepted: "
                                    f"{allowed})", "invalid_parameter")
            if len(request.query.getall(name)) > 1:
                raise ApiError(400, f"query parameter {name!r} is given more than once",
                               "invalid_parameter")
            seen.add(name)
        values: dict[str, Any] = {}
        for name in seen:
            try:
                values[name] = known[name].parse(request.query[name])
            except ValueError as exc:
                raise ApiError(400, f"{name}: {exc}", "invalid_parameter") from None
        return values

    def openapi(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "in": "query", "required": False,
                 "description": p.description, "schema": p.schema} for p in self.params]


def integer(name: str, description: str, low: int, high: int, default: int) -> QueryParam:
    def parse(raw: str) -> int:
        if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
            raise ValueError(f"expected an integer in {low}..{high}, got {raw[:40]!r}")
        return int(raw)

    return QueryParam(name, f"{description} ({low}..{high}, default {default})",
                      {"type": "integer", "minimum": low, "maximum": high, "default": default},
                      parse)


def timestamp(name: str, description: str) -> QueryParam:
    def parse(raw: str) -> float:
        if not _NUMBER.fullmatch(raw):
            raise ValueError(f"expected a UNIX timestamp in seconds, got {raw[:40]!r}")
        value = float(raw)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected a finite, non-negative UNIX timestamp, got {raw[:40]!r}")
        return value

    return QueryParam(name, description, {"type": "number", "minimum": 0}, parse)


def boolean(name: str, description: str) -> QueryParam:
    def parse(raw: str) -> bool:
        if raw not in ("true", "false"):
            raise ValueError(f"expected true or false, got {raw[:40]!r}")
        return raw == "true"

    return QueryParam(name, description, {"type": "boolean"}, parse)


def choice(name: str, description: str, values: tuple[str, ...]) -> QueryParam:
    def parse(raw: str) -> str:
        if raw not in values:
            raise ValueError(f"expected one of {', '.join(values)}, got {raw[:40]!r}")
        return raw

    return QueryParam(name, description, {"type": "string", "enum": list(values)}, parse)


def text(name: str, description: str, max_length: int) -> QueryParam:
    def parse(raw: str) -> str:
        if not 1 <= len(raw) <= max_length:
            raise ValueError(f"expected 1..{max_length} characters")
        return raw

    return QueryParam(name, description,
                      {"type": "string", "minLength": 1, "maxLength": max_length}, parse)


def value_list(name: str, description: str, item: str, *, fold: Callable[[str], str] = str,
               max_items: int = 20) -> QueryParam:
    """Comma-separated values, each matching the regular expression ``item`` (OR)."""
    one = re.compile(item)
    pattern = f"^{item}(,{item})*$"

    def parse(raw: str) -> tuple[str, ...]:
        parts = raw.split(",")
        if len(parts) > max_items:
            raise ValueError(f"at most {max_items} comma-separated values")
        bad = [p for p in parts if not one.fullmatch(p)]
        if bad:
            raise ValueError(f"{bad[0][:40]!r} is not a valid value")
        return tuple(dict.fromkeys(fold(p) for p in parts))

    return QueryParam(name, f"{description}; comma-separated values match any of them",
                      {"type": "string", "pattern": pattern}, parse)


def matching(name: str, description: str, pattern: str) -> QueryParam:
    """One value matching the regular expression ``pattern`` (a name, an id)."""
    one = re.compile(pattern)

    def parse(raw: str) -> str:
        if not one.fullmatch(raw):
            raise ValueError(f"{raw[:40]!r} is not a valid value")
        return raw

    return QueryParam(name, description, {"type": "string", "pattern": f"^{pattern}$"}, parse)
