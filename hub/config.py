"""Configuration: TOML validated into msgspec Structs at start-up.

Errors name the file, the key path and what was expected (``config.toml: hub.port: Expected
`int`, got `str```). Plain values may use ``${NAME}`` or ``${NAME:-default}`` to read the
environment (ports, URLs, paths); secrets must be ``env:NAME`` or ``file:PATH`` (see
``channels.secrets``). Each channel's ``settings`` table is validated by its adapter's own schema.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from channels.secrets import Secret, resolve_references
from routing.config import RoutingConfig, validate_routing
from storage.cluster import SCHEMES as CLUSTER_SCHEMES
from storage.cluster import ClusterUrlError, parse_cluster_url
from storage.sentinel import FORMAT as SENTINEL_FORMAT
from storage.sentinel import SCHEMES as SENTINEL_SCHEMES
from storage.sentinel import SentinelUrlError, parse_sentinel_url

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
    # Slow clients (hub/http_guard.py): a request head must arrive within header_timeout (also
    # the idle limit of a kept-alive connection), a body within body_timeout; past
    # max_connections open connections a new one gets a 503.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 512
    # The hub's address as providers see it (https://hub.example.com, or with the path prefix
    # a reverse proxy strips): Twilio and Shopee sign the URL they called, which behind a
    # proxy is not request.url. Adapters get it as AdapterContext.public_url.
    public_url: str | None = None
    # Channel health (hub/channel_health.py): each process flushes its counts to Redis this
    # often (a crash loses at most this much), and evaluates the alerts this often.
    health_flush_seconds: float = 2.0
    health_evaluate_seconds: float = 30.0


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    redis_url: str | None = None
    redis_password: Secret | None = None
    # With a redis+sentinel:// redis_url: the password the sentinels themselves require (their
    # requirepass), when it is not the master's; redis_password is the master's.
    sentinel_password: Secret | None = None
    partitions: int = 1
    dedupe_ttl_seconds: int = 7 * 86400
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    claim_idle_seconds: float = 30.0
    socket_timeout_seconds: float = 10.0
    max_connections: int = 64
    pool_timeout_seconds: float = 5.0
    # Quarantine bounds (storage/quarantine.py): the oldest entries go first past either.
    quarantine_max_entries: int = 100_000
    quarantine_max_bytes: int = 512 * 1024 * 1024
    # Resolved conversations (and their messages) untouched for this many days are deleted by
    # the retention sweep (storage/lifecycle.py); 0 keeps them forever.
    resolved_retention_days: float = 0.0
    # A webhook or poll batch is acknowledged only once this many replicas confirmed it
    # (Redis WAIT, storage/replication.py), so a failover cannot lose an acknowledged message;
    # fewer within replica_ack_timeout_ms and the batch fails (webhook 503, provider retries).
    # 0 = acknowledge once the primary has it.
    replica_acks: int = 0
    replica_ack_timeout_ms: int = 1000


class OutboxSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_attempts: int = 6
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    send_timeout_seconds: float = 15.0
    # Replies in flight at once per hub process; a slow provider holds one slot, not a batch.
    concurrency: int = 16


class FetchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Fetch after notify (hub/fetcher.py): fetches in flight at once per hub process; failed
    # attempts (the first included) before a fetch is kept as failed; backoff between them
    # (exponential, full jitter, a provider's Retry-After as a floor); the limit on one
    # provider call; how long a notification's dedupe key is remembered.
    concurrency: int = 8
    max_attempts: int = 10
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 600.0
    timeout_seconds: float = 30.0
    dedupe_ttl_seconds: int = 7 * 86400
    # How long a failed fetch waits for an operator's retry before its record expires.
    failed_retention_days: int = 14


class TokenSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    role: Literal["agent", "supervisor", "admin"] = "agent"
    token: Secret | None = None
    token_sha256: str | None = None


class AttachmentSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Content-addressed files (storage/attachments.py); default <data_dir>/attachments.
    dir: str | None = None
    # The hub's cap on one attachment, over every channel's own limit (uploads too).
    max_bytes: int = 25 * 1024 * 1024
    # A file stored but not yet referenced (a crash before its message was stored, an upload
    # never sent) is deleted after this long; an agent's upload can be sent for this long.
    orphan_grace_seconds: float = 3600.0
    upload_ttl_seconds: int = 86400


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tokens: list[TokenSettings] = []
    # What an agent token sees and acts on (hub/scope.py): "own" = conversations assigned to
    # them; "pools" = also those waiting in queues they are eligible for; "all" = everything.
    # Supervisors and admins always see everything.
    agent_scope: Literal["own", "pools", "all"] = "pools"
    # Password sign-in (hub/accounts_api.py): a session ends after this long unused, and
    # this long after sign-in whatever happens.
    session_idle_minutes: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 60)] = 8 * 60
    session_max_hours: Annotated[int, msgspec.Meta(ge=1, le=90 * 24)] = 7 * 24
    # Failed sign-ins allowed per account and per client address within the window (429).
    login_failures_per_account: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    login_failures_per_ip: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20
    login_window_minutes: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] = 15


class EventsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The live event log and stream (storage/events.py, hub/events_api.py)."""

    # Entries kept (approximately: Redis trims whole nodes); a client resuming from an id
    # older than that gets a "reset" event and reloads.
    retention_entries: Annotated[int, msgspec.Meta(ge=100)] = 100_000
    # A comment line this often keeps proxies from closing an idle stream.
    heartbeat_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 15.0
    # Events waiting for one slow client; past it the client is dropped (it resumes with
    # Last-Event-ID, nothing lost) instead of growing the hub's memory.
    client_buffer: Annotated[int, msgspec.Meta(ge=10, le=100_000)] = 1000
    # At most one viewing/typing event per agent, conversation and state this often.
    presence_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    # How long a viewing / typing mark lasts without being renewed.
    viewing_ttl_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    typing_ttl_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 8.0


class ChannelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    type: str
    enabled: bool = True
    settings: dict[str, Any] = {}
    # Alert (metric inboxhub_channel_silent, one log line) when nothing came in for this long.
    alert_after_silence_minutes: Annotated[int, msgspec.Meta(ge=1)] | None = None


class ReportsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The KPI hour buckets (storage/kpis.py) and their aggregator (hub/kpis.py)."""

    # Hour buckets older than this expire; a report cannot reach further back.
    retention_days: Annotated[float, msgspec.Meta(ge=1, le=3650)] = 400.0
    # How often an idle aggregator looks for new events (it keeps going while there are).
    aggregate_every_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # Whether this hub folds the event log into the buckets at all. Off: reports serve what
    # is there and nothing new is counted (the events stay in the log, within its retention,
    # for a hub that aggregates). For measuring the aggregator's cost (bench/reports.py), or
    # a process that should leave the work to others.
    aggregate: bool = True


class CsatSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The satisfaction survey sent after a conversation is resolved (hub/csat.py)."""

    enabled: bool = False
    scale: Literal["five", "thumbs"] = "five"
    # Channel instances and routing queues that survey; empty: every one.
    channels: list[str] = []
    queues: list[str] = []
    # How long after the survey the buyer's next message is read as an answer.
    answer_hours: Annotated[float, msgspec.Meta(gt=0, le=720)] = 72.0
    # Channel instance -> approved template to survey with when its reply window is closed;
    # without one, a closed window means no survey.
    templates: dict[str, str] = {}
    # Language -> the question (defaults for en, es, pt, zh; English for the rest).
    wording: dict[str, Annotated[str, msgspec.Meta(min_length=1, max_length=500)]] = {}
    # Conversations the channel cannot answer (no-reply senders, unreachable buyers) get a
    # signed link to a survey page the hub serves (hub/survey_links.py): the HMAC key, as
    # env:NAME (or file:PATH), and the hub's address as buyers' browsers reach it (default:
    # hub.public_url). Without both, such conversations are skipped (no_reply_path).
    link_secret: Secret | None = None
    public_url: str | None = None

    def link_base(self, hub_public_url: str | None) -> str | None:
        """The base URL survey links start with, or None when links are not configured."""
        base = self.public_url or hub_public_url
        return None if self.link_secret is None or not base else base.rstrip("/")


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    hub: HubSettings = HubSettings()
    storage: StorageSettings = StorageSettings()
    outbox: OutboxSettings = OutboxSettings()
    fetches: FetchSettings = FetchSettings()
    api: ApiSettings = ApiSettings()
    attachments: AttachmentSettings = AttachmentSettings()
    events: EventsSettings = EventsSettings()
    reports: ReportsSettings = ReportsSettings()
    csat: CsatSettings = CsatSettings()
    routing: RoutingConfig = RoutingConfig()
    channels: list[ChannelConfig] = []

    @property
    def data_dir(self) -> Path:
        return Path(self.hub.data_dir)

    @property
    def attachments_dir(self) -> Path:
        return Path(self.attachments.dir) if self.attachments.dir else self.data_dir / \
            "attachments"


class LoadedConfig(msgspec.Struct, frozen=True):
    """The validated config plus each channel's validated settings object."""

    path: Path
    config: Config
    channel_settings: dict[str, Any]


class UnresolvedSecret(Secret):
    """A secret reference a read-only command does not need: checked for form, never read.

    Revealing it raises, so a config loaded for an operator view can never authenticate or
    sign anything by accident (an empty value would match an empty token).
    """

    __slots__ = ()

    def reveal(self) -> str:
        raise RuntimeError(f"{self.source} was not resolved: the config was loaded read-only")

    def reveal_bytes(self) -> bytes:
        return self.reveal().encode()


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret:
        return Secret.parse(obj)
    raise NotImplementedError(f"unsupported config type {type_!r}")


def _unresolved_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret:
        kind, sep, name = obj.partition(":") if isinstance(obj, str) else ("", "", "")
        if not sep or kind not in ("env", "file") or not name:
            return Secret.parse(obj)  # raises the same error a full load gives
        return UnresolvedSecret("", f"{kind}:{name}")
    raise NotImplementedError(f"unsupported config type {type_!r}")


def _interpolate(value: Any, where: str = "") -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}``; an unset variable names its key path."""
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found:
                return found
            if default is None:
                raise ConfigError(f"{where or '(top level)'}: environment variable {name} is "
                                  f"not set (no default given)")
            return default
        return _ENV_PATTERN.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


# Keys that are parsed by older configs or documented once but do nothing: rejected with the
# reason rather than accepted and ignored (an operator who sets them expects an effect).
_NOT_IMPLEMENTED: dict[tuple[str, ...], str] = {
    ("routing", "mode"): "not implemented: routing always assigns (remove the key); to keep "
                         "conversations in a queue without automatic assignment give agents "
                         "weight = 0 (transfers only)",
}
_RULE_CONDITIONS_NOT_IMPLEMENTED: dict[str, str] = {
    "tags": "not supported: contacts carry no tags, so the condition could never hold",
    "min_order_value": "not supported: channels do not report an order value (only an "
                       "order id), so the condition could never hold",
}


def _reject_not_implemented(data: Any) -> None:
    if not isinstance(data, dict):
        return
    for path, reason in _NOT_IMPLEMENTED.items():
        node: Any = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            raise ConfigError(f"{'.'.join(path)}: {reason}")
    routing = data.get("routing")
    rules = routing.get("rules") if isinstance(routing, dict) else None
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        when = rule.get("when") if isinstance(rule, dict) else None
        for key, reason in _RULE_CONDITIONS_NOT_IMPLEMENTED.items():
            if isinstance(when, dict) and key in when:
                raise ConfigError(f"routing.rules[{i}].when.{key}: {reason}")


def _describe(exc: msgspec.ValidationError, prefix: str = "") -> str:
    text = str(exc)
    match = _PATH_PATTERN.search(text)
    where = prefix
    if match:
        where = prefix + match.group(1)
        text = text[: match.start()]
    where = where.lstrip(".") or "(top level)"
    return f"{where}: {text}"


def convert(data: Any, type_: type[Any], where: str,
            hook: Callable[[type, Any], Any] = _dec_hook) -> Any:
    """Validate ``data`` into ``type_``; errors carry the key path under ``where``."""
    try:
        return msgspec.convert(data, type_, dec_hook=hook, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None


def load_config(path: str | os.PathLike[str], *, read_only: bool = False) -> LoadedConfig:
    """Read, interpolate and validate a config file: every check ``serve`` makes at start-up.

    That includes each channel's settings and building the routing engine's parts (the
    language identifier, skill rules, calendars), so ``inboxhub check`` accepts exactly what
    ``serve`` accepts. ``read_only`` is for operator views that only read Redis (``quarantine
    list``, ``dlq list``, ``routing explain``): secrets other than ``storage.redis_password``
    are checked for form but not read, and the engine is not built.
    """
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
    hook = _unresolved_hook if read_only else _dec_hook
    try:
        data = _interpolate(data)
        _reject_not_implemented(data)
        config: Config = convert(data, Config, "", hook)
        if read_only:  # the views still connect to Redis: its password is resolved
            config = msgspec.structs.replace(
                config, storage=convert(data.get("storage", {}), StorageSettings, "storage"))
        channel_settings: dict[str, Any] = {}
        seen: set[str] = set()
        unique: dict[tuple[str, str, Any], str] = {}  # (type, setting, value) -> instance
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
            try:
                raw = resolve_references(channel.settings, adapter_cls.referable_settings)
            except ValueError as exc:
                raise ConfigError(f"{where}.settings.{exc}") from None
            settings = convert(raw, adapter_cls.settings_type, f"{where}.settings", hook)
            _check_channel_settings(settings, f"{where}.settings")
            for name in adapter_cls.unique_settings:
                key = (channel.type, name, getattr(settings, name, None))
                if key[2] is not None and key in unique:
                    raise ConfigError(
                        f"{where}.settings.{name}: channel {unique[key]} already has this "
                        f"{name}; one instance per {name}")
                unique[key] = channel.name
            channel_settings[channel.name] = settings
        _check_ranges(config)
        _check_csat(config)
        _check_public_url(config.hub.public_url)
        _check_redis_url(config.storage.redis_url)
        _check_sentinel_password(config.storage)
        _check_routing(config.routing, {c.name: c.type for c in config.channels},
                       build=not read_only, labels=_hint_labels(channel_settings))
        for i, token in enumerate(config.api.tokens):
            if (token.token is None) == (token.token_sha256 is None):
                raise ConfigError(
                    f"api.tokens[{i}]: expected exactly one of 'token' or 'token_sha256'"
                )
            if token.token is not None:
                _check_secret_length(token.token, f"api.tokens[{i}].token")
            if token.token_sha256 is not None and not re.fullmatch(
                r"[0-9a-f]{64}", token.token_sha256
            ):
                raise ConfigError(f"api.tokens[{i}].token_sha256: expected 64 lowercase hex digits")
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return LoadedConfig(path=file, config=config, channel_settings=channel_settings)


MIN_SECRET_LENGTH = 16
# Setting names whose Secret authenticates requests (webhook signing secrets, bearer and
# verify tokens): short ones can be guessed. Passwords for upstream accounts (SMTP, IMAP) are
# the provider's business and are not judged here.
_AUTH_SECRET = re.compile(r"(?:.*_)?(?:secret|token)")
_URL_KEY = re.compile(r"(?:.*_)?url")


def _check_secret_length(secret: Secret, where: str) -> None:
    if isinstance(secret, UnresolvedSecret):
        return
    if len(secret.reveal()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{where}: {secret.source} is shorter than {MIN_SECRET_LENGTH} "
                          f"characters; use a long random value (e.g. openssl rand -hex 32)")


def _check_url(value: str, where: str, schemes: tuple[str, ...]) -> urllib.parse.SplitResult:
    expected = f"expected a URL such as {schemes[0]}://host:port/path"
    if any(char.isspace() for char in value):
        raise ConfigError(f"{where}: malformed URL {value!r} (contains whitespace); {expected}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(f"{where}: malformed URL {value!r}: scheme must be "
                          f"{' or '.join(schemes)}; {expected}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not 0..65535
    except ValueError:
        raise ConfigError(f"{where}: malformed URL {value!r}: bad port; {expected}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: credentials in a URL are refused: give secrets as "
                          f"env:NAME or file:PATH settings")
    return parts


def _check_channel_settings(settings: Any, where: str) -> None:
    """Checks every channel gets whatever its adapter: URLs well formed, auth secrets long."""
    if not isinstance(settings, msgspec.Struct):
        return
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if isinstance(value, Secret) and _AUTH_SECRET.fullmatch(name):
            _check_secret_length(value, f"{where}.{name}")
        elif isinstance(value, str) and value and _URL_KEY.fullmatch(name):
            # An empty URL is "unset": the adapter picks its default (Lazada: the country's host).
            parts = _check_url(value, f"{where}.{name}", ("https", "http"))
            if not parts.hostname:
                raise ConfigError(f"{where}.{name}: malformed URL {value!r}: no host")


def _check_public_url(url: str | None, where: str = "hub.public_url") -> None:
    if url is None:
        return
    parts = _check_url(url, where, ("https", "http"))
    if not parts.hostname:
        raise ConfigError(f"{where}: malformed URL {url!r}: no host")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"{where}: {url!r} must not carry a query or fragment; give the "
                          "address providers call, e.g. https://hub.example.com")


def _check_redis_url(url: str | None) -> None:
    if url is None:
        return
    where = "storage.redis_url"
    if "@" in url:
        raise ConfigError(
            f"{where}: put the password in storage.redis_password "
            "(env:NAME or file:PATH), not in the URL"
        )
    # Lower-cased to choose the parser: "REDIS+SENTINEL://" must reach the strict parser (and
    # its "scheme must be" error), not pass as a plain redis:// URL urlsplit lower-cases.
    scheme = url.split("://", 1)[0].lower()
    if scheme in CLUSTER_SCHEMES:
        try:
            parse_cluster_url(url)
        except ClusterUrlError as exc:
            raise ConfigError(f"{where}: malformed URL {url!r}: {exc}; expected "
                              "redis+cluster://host:port,host:port") from None
        return
    if scheme in SENTINEL_SCHEMES:
        try:
            parse_sentinel_url(url)
        except SentinelUrlError as exc:
            raise ConfigError(f"{where}: malformed URL {url!r}: {exc}; expected "
                              f"{SENTINEL_FORMAT} (password in storage.redis_password)"
                              ) from None
        return
    parts = _check_url(url, where, ("redis", "rediss", "unix", *CLUSTER_SCHEMES,
                                    *SENTINEL_SCHEMES))
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{where}: malformed URL {url!r}: expected unix:///path/to/socket")
        return
    if not parts.hostname:
        raise ConfigError(f"{where}: malformed URL {url!r}: no host; expected "
                          f"redis://host:6379/0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"{where}: malformed URL {url!r}: the path must be a database "
                          f"number such as /0")


def _check_sentinel_password(storage: StorageSettings) -> None:
    """A sentinel password with no sentinel to give it to is a config mistake (a
    half-finished move to Sentinel), not something to ignore."""
    url = storage.redis_url or ""
    if storage.sentinel_password is not None and url.split("://", 1)[0] not in SENTINEL_SCHEMES:
        raise ConfigError("storage.sentinel_password: only used with a redis+sentinel:// or "
                          "rediss+sentinel:// storage.redis_url")


def _hint_labels(channel_settings: dict[str, Any]) -> set[str]:
    """Labels channels put on conversations themselves (``hint_labels()`` on settings)."""
    found: set[str] = set()
    for settings in channel_settings.values():
        offered = getattr(settings, "hint_labels", None)
        if callable(offered):
            found.update(offered())
    return found


def _check_routing(routing: RoutingConfig, channels: dict[str, str], *, build: bool,
                   labels: Collection[str] = ()) -> None:
    """Everything routing builds at start-up, built here so errors surface in ``check``."""
    from routing.classify.skill import SkillClassifier
    from routing.runtime import build_parts, parse_calendars, skill_names

    try:
        skills = (SkillClassifier.from_config(routing.skills, path="routing.skills")
                  if routing.skills is not None else SkillClassifier.default())
        validate_routing(routing, channels=channels, skills=skill_names(skills), labels=labels)
        if build:
            build_parts(routing)
        else:  # still cheap: calendars are parsed, only the language models are not loaded
            parse_calendars(routing)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_csat(config: Config) -> None:
    csat = config.csat
    instances = {c.name for c in config.channels}
    queues = {q.name for q in config.routing.effective_queues()}
    for i, name in enumerate(csat.channels):
        if name not in instances:
            raise ConfigError(f"csat.channels[{i}]: no channel instance named {name!r}")
    for i, name in enumerate(csat.queues):
        if name not in queues:
            raise ConfigError(f"csat.queues[{i}]: no routing queue named {name!r}")
    for name in csat.templates:
        if name not in instances:
            raise ConfigError(f"csat.templates.{name}: no channel instance named {name!r}")
    for language in csat.wording:
        if not re.fullmatch(r"[a-z]{2}", language):
            raise ConfigError(f"csat.wording.{language}: expected an ISO 639-1 code such "
                              "as 'es'")
    if csat.link_secret is not None:
        _check_secret_length(csat.link_secret, "csat.link_secret")
    if csat.public_url is not None:
        _check_public_url(csat.public_url, "csat.public_url")


#: More replicas than any deployment runs: a typo (say 10 for 1) is refused, not waited for.
MAX_REPLICA_ACKS = 16


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
        (1 <= config.outbox.concurrency <= 1000, "outbox.concurrency: expected 1..1000"),
        (config.hub.header_timeout_seconds > 0, "hub.header_timeout_seconds: expected > 0"),
        (config.hub.body_timeout_seconds > 0, "hub.body_timeout_seconds: expected > 0"),
        (config.hub.max_connections >= 1, "hub.max_connections: expected >= 1"),
        (config.storage.quarantine_max_entries >= 1,
         "storage.quarantine_max_entries: expected >= 1"),
        (config.storage.quarantine_max_bytes >= 65536,
         "storage.quarantine_max_bytes: expected >= 65536"),
        (config.attachments.max_bytes >= 1, "attachments.max_bytes: expected >= 1"),
        (config.attachments.orphan_grace_seconds >= 60,
         "attachments.orphan_grace_seconds: expected >= 60"),
        (config.attachments.upload_ttl_seconds >= 60,
         "attachments.upload_ttl_seconds: expected >= 60"),
        (1 <= config.fetches.concurrency <= 1000, "fetches.concurrency: expected 1..1000"),
        (config.fetches.max_attempts >= 1, "fetches.max_attempts: expected >= 1"),
        (config.fetches.backoff_base_seconds > 0, "fetches.backoff_base_seconds: expected > 0"),
        (config.fetches.backoff_max_seconds >= config.fetches.backoff_base_seconds,
         "fetches.backoff_max_seconds: expected >= backoff_base_seconds"),
        (config.fetches.timeout_seconds > 0, "fetches.timeout_seconds: expected > 0"),
        (config.fetches.dedupe_ttl_seconds >= 60, "fetches.dedupe_ttl_seconds: expected >= 60"),
        (config.fetches.failed_retention_days >= 1,
         "fetches.failed_retention_days: expected >= 1"),
        (0 < config.hub.health_flush_seconds <= 60,
         "hub.health_flush_seconds: expected > 0 and <= 60"),
        (0 < config.hub.health_evaluate_seconds <= 3600,
         "hub.health_evaluate_seconds: expected > 0 and <= 3600"),
        (config.storage.resolved_retention_days >= 0,
         "storage.resolved_retention_days: expected >= 0 (0 keeps them forever)"),
        (0 <= config.storage.replica_acks <= MAX_REPLICA_ACKS,
         f"storage.replica_acks: expected 0..{MAX_REPLICA_ACKS} (replicas that must confirm "
         "a write; 0 = off)"),
        (10 <= config.storage.replica_ack_timeout_ms <= 60_000,
         "storage.replica_ack_timeout_ms: expected 10..60000"),
        (config.storage.replica_acks == 0 or
         config.storage.replica_ack_timeout_ms < config.storage.socket_timeout_seconds * 1000,
         "storage.replica_ack_timeout_ms: expected below storage.socket_timeout_seconds (WAIT "
         "holds the connection that long; the socket must not time out first)"),
        (config.storage.replica_acks == 0 or config.storage.redis_url is not None,
         "storage.replica_acks: needs storage.redis_url (the embedded Redis has no replicas, "
         "so every write would wait and fail)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
