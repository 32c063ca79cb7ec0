"""Configuration: TOML validated into msgspec Structs at start-up.

Errors name the file, the key path and what was expected (``config.toml: hub.port: Expected
`int`, got `str```). Plain values may use ``${NAME}`` or ``${NAME:-default}`` to read the
environment (ports, URLs, paths); secrets must be ``env:NAME`` or ``file:PATH`` (see
``hub.secrets``). Each channel's ``settings`` table is validated by its adapter's own schema.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from hub.secrets import Secret
from routing.config import RoutingConfig, validate_routing

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PATH_PATTERN = re.compile(r" - at `\$(.*)`$")


class ConfigError(Exception):
    """A configuration problem, phrased for the operator who has to fix it."""


class HubSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    shutdown_timeout_seconds: float = 10.0
    max_body_bytes: int = 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # An online agent whose inbox sent no heartbeat for this long is treated as offline and
    # their conversations go back to the queue; 0 disables the check.
    agent_heartbeat_grace_seconds: float = 0.0


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    redis_url: str | None = None
    redis_password: Secret | None = None
    partitions: int = 1
    dedupe_ttl_seconds: int = 7 * 86400
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    claim_idle_seconds: float = 30.0
    socket_timeout_seconds: float = 10.0
    max_connections: int = 64
    pool_timeout_seconds: float = 5.0


class OutboxSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_attempts: int = 6
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    send_timeout_seconds: float = 15.0


class TokenSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    role: Literal["agent", "supervisor", "admin"] = "agent"
    token: Secret | None = None
    token_sha256: str | None = None


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tokens: list[TokenSettings] = []
    # What an agent token sees and acts on (hub/scope.py): "own" = conversations assigned to
    # them; "pools" = also those waiting in queues they are eligible for; "all" = everything.
    # Supervisors and admins always see everything.
    agent_scope: Literal["own", "pools", "all"] = "pools"


class ChannelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    type: str
    enabled: bool = True
    settings: dict[str, Any] = {}


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    hub: HubSettings = HubSettings()
    storage: StorageSettings = StorageSettings()
    outbox: OutboxSettings = OutboxSettings()
    api: ApiSettings = ApiSettings()
    routing: RoutingConfig = RoutingConfig()
    channels: list[ChannelConfig] = []

    @property
    def data_dir(self) -> Path:
        return Path(self.hub.data_dir)


class LoadedConfig(msgspec.Struct, frozen=True):
    """The validated config plus each channel's validated settings object."""

    path: Path
    config: Config
    channel_settings: dict[str, Any]


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret:
        return Secret.parse(obj)
    raise NotImplementedError(f"unsupported config type {type_!r}")


def _interpolate(value: Any) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found:
                return found
            if default is None:
                raise ConfigError(f"environment variable {name} is not set (no default given)")
            return default
        return _ENV_PATTERN.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    return value


def _describe(exc: msgspec.ValidationError, prefix: str = "") -> str:
    text = str(exc)
    match = _PATH_PATTERN.search(text)
    where = prefix
    if match:
        where = prefix + match.group(1)
        text = text[: match.start()]
    where = where.lstrip(".") or "(top level)"
    return f"{where}: {text}"


def convert(data: Any, type_: type[Any], where: str) -> Any:
    """Validate ``data`` into ``type_``; errors carry the key path under ``where``."""
    try:
        return msgspec.convert(data, type_, dec_hook=_dec_hook, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read, interpolate and validate a config file, including every channel's settings."""
    from channels.registry import ChannelRegistryError, load_adapter_class

    file = Path(path)
    try:
        raw_text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(raw_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    try:
        data = _interpolate(data)
        config: Config = convert(data, Config, "")
        channel_settings: dict[str, Any] = {}
        seen: set[str] = set()
        for i, channel in enumerate(config.channels):
            where = f"channels[{i}]"
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", channel.name):
                raise ConfigError(
                    f"{where}.name: expected 1-64 characters of A-Z a-z 0-9 _ -, "
                    f"got {channel.name!r}"
                )
            if channel.name in seen:
                raise ConfigError(f"{where}.name: duplicate channel name {channel.name!r}")
            seen.add(channel.name)
            try:
                adapter_cls = load_adapter_class(channel.type)
            except ChannelRegistryError as exc:
                raise ConfigError(f"{where}.type: {exc}") from None
            channel_settings[channel.name] = convert(
                channel.settings, adapter_cls.settings_type, f"{where}.settings"
            )
        _check_ranges(config)
        _check_routing(config.routing)
        for i, token in enumerate(config.api.tokens):
            if (token.token is None) == (token.token_sha256 is None):
                raise ConfigError(
                    f"api.tokens[{i}]: expected exactly one of 'token' or 'token_sha256'"
                )
            if token.token_sha256 is not None and not re.fullmatch(
                r"[0-9a-f]{64}", token.token_sha256
            ):
                raise ConfigError(f"api.tokens[{i}].token_sha256: expected 64 lowercase hex digits")
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return LoadedConfig(path=file, config=config, channel_settings=channel_settings)


def _check_routing(routing: RoutingConfig) -> None:
    """Everything routing builds at start-up, built once here so errors surface in ``check``."""
    from routing.business_hours import parse_business_hours
    from routing.classify.skill import SkillClassifier

    try:
        validate_routing(routing)
        if routing.business_hours is not None:
            parse_business_hours(msgspec.to_builtins(routing.business_hours),
                                 "routing.business_hours")
        for i, agent in enumerate(routing.agents):
            if agent.working_hours is not None:
                parse_business_hours({"timezone": agent.timezone,
                                      "weekly": msgspec.to_builtins(agent.working_hours)},
                                     f"routing.agents[{i}].working_hours")
        if routing.skills is not None:
            SkillClassifier.from_config(routing.skills, path="routing.skills")
        unknown = [lang for lang in routing.languages if not re.fullmatch(r"[a-z]{2}", lang)]
        if unknown:
            raise ValueError(f"routing.languages: expected ISO 639-1 codes, got {unknown}")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_ranges(config: Config) -> None:
    checks: list[tuple[bool, str]] = [
        (1 <= config.hub.port <= 65535, "hub.port: expected 1..65535"),
        (config.hub.max_body_bytes >= 1024, "hub.max_body_bytes: expected >= 1024"),
        (1 <= config.storage.partitions <= 1024, "storage.partitions: expected 1..1024"),
        (config.storage.dedupe_ttl_seconds >= 60, "storage.dedupe_ttl_seconds: expected >= 60"),
        (config.storage.claim_idle_seconds > 0, "storage.claim_idle_seconds: expected > 0"),
        (config.outbox.max_attempts >= 1, "outbox.max_attempts: expected >= 1"),
        (config.outbox.backoff_base_seconds > 0, "outbox.backoff_base_seconds: expected > 0"),
        (
            config.outbox.backoff_max_seconds >= config.outbox.backoff_base_seconds,
            "outbox.backoff_max_seconds: expected >= backoff_base_seconds",
        ),
        (config.outbox.send_timeout_seconds > 0, "outbox.send_timeout_seconds: expected > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if config.storage.redis_url is not None and "@" in config.storage.redis_url:
        raise ConfigError(
            "storage.redis_url: put the password in storage.redis_password "
            "(env:NAME or file:PATH), not in the URL"
        )
