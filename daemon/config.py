"""One frozen config tree from a TOML file plus ``S5VEC_*`` environment overrides.

Environment: ``S5VEC_HOST``, ``S5VEC_PORT``, ``S5VEC_DATA_DIR``, ``S5VEC_LOG_LEVEL``, ``S5VEC_LOG_FORMAT``,
``S5VEC_API_KEYS`` (``key:read,write;key2:admin``), ``S5VEC_CORS_ORIGINS`` (comma-separated
origins, or ``*``) and, for any key,
``S5VEC_<SECTION>__<KEY>`` (e.g. ``S5VEC_ENGINE__CHECKPOINT_INTERVAL_S=60``). Storage also
reads ``S5_MODE``, ``S5_PORTAL_URL``, ``S5_BRIDGE_URL``, ``S5_SEED_PHRASE``,
``S5_SEED_PHRASE_FILE`` and ``S5_AUTH_TOKEN``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import stat
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from s5vec.engine import EngineConfig
from s5vec.engine.config import ReplicationConfig
from s5vec.ops import HealthThresholds
from s5vec.ops.backup import BackupConfig
from s5vec.ops.jobs import JobsConfig, QuietHours
from s5vec.storage.s5 import InvalidSeedPhrase, phrase_to_entropy

EX_CONFIG: Final = 78
SCOPES: Final = ("read", "write", "admin")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
STORAGE_MODES: Final = ("local", "portal", "bridge")
STORAGE_MODE_ALIASES: Final = {"mock": "local", "real": "portal"}  # the seed project's names
SECRET_SETTINGS: Final = ("key", "seed_phrase", "auth_token")  # values never quoted in an error
STORAGE_ENV: Final = {"S5_MODE": "mode", "S5_PORTAL_URL": "portal_url", "S5_BRIDGE_URL": "bridge_url",
                      "S5_SEED_PHRASE": "seed_phrase", "S5_SEED_PHRASE_FILE": "seed_phrase_file",
                      "S5_AUTH_TOKEN": "auth_token"}


class ConfigError(Exception):
    """A configuration value is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    scopes: tuple[str, ...] = ("read", "write")
    name: str = ""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 7533
    max_body_bytes: int = 64 << 20
    access_log: bool = False
    query_cache_entries: int = 1024


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: tuple[ApiKey, ...] = ()


@dataclass(frozen=True, slots=True)
class DefaultCollectionConfig:
    metric: str = "cosine"
    schema: str | None = None


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Live feeds (SSE, WebSocket subscriptions): the retained window and backpressure."""

    window_events: int = 100_000      # events kept for resume (Last-Event-ID / since)
    window_bytes: int = 64 << 20      # ... and at most this much of their vectors
    queue_events: int = 1_000         # per subscriber: past this it gets `lagged` and catches up from the window
    max_lag_events: int = 100_000     # per subscriber: further behind the head than this, it is disconnected
    heartbeat_s: float = 15.0         # SSE comment / WebSocket ping interval when idle
    flush_ms: float = 0.0             # > 0: events reach a subscriber at most this often, in one frame


@dataclass(frozen=True, slots=True)
class WsConfig:
    """Limits of one WebSocket connection."""

    max_message_bytes: int = 4 << 20  # a larger frame closes the socket with 1009
    max_messages_per_s: int = 1_000   # beyond: `rate_limited` errors; a further second's worth closes with 1008
    max_subscriptions: int = 100      # subscribe + subscribe_query per connection
    max_inflight: int = 64            # requests of one connection processed concurrently
    auth_timeout_s: float = 10.0      # without a bearer header, the `auth` message must come this soon


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where checkpoints go: this directory, an S5 portal or an s5.js bridge. Secrets are
    kept out of repr; the seed phrase file is read (and checked) at start-up and again when
    the store is built, never kept in the config."""

    mode: str = "local"                 # local | portal | bridge (mock = local, real = portal)
    portal_url: str | None = None
    bridge_url: str | None = None
    bridge_prefix: str = "s5vec"
    seed_phrase: str | None = field(default=None, repr=False)
    seed_phrase_file: Path | None = None  # mode 0600; preferred over seed_phrase
    auth_token: str | None = field(default=None, repr=False)  # optional: the phrase's account logs in
    encrypt: bool = True                # client-side encryption of every uploaded blob
    timeout_s: float = 60.0             # per request
    connect_timeout_s: float = 10.0
    max_concurrency: int = 8
    retries: int = 4                    # per request, with exponential backoff and jitter

    def __post_init__(self) -> None:
        mode = self.mode.strip().lower()
        object.__setattr__(self, "mode", STORAGE_MODE_ALIASES.get(mode, mode))

    def summary(self) -> str:
        """``mode(url, ...)`` with every secret as ``***``."""
        if self.mode == "local":
            return "local"
        url = self.portal_url if self.mode == "portal" else self.bridge_url
        phrase = "***" if self.seed_phrase else "none"
        if self.seed_phrase_file is not None:
            phrase = f"*** (from {self.seed_phrase_file})"
        token = "***" if self.auth_token else "none"
        return (f"{self.mode}({_public_url(url or '')}, encrypt={str(self.encrypt).lower()}, "
                f"seed_phrase={phrase}, auth_token={token})")


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """Cross-origin requests from web pages (``[cors]``). Off unless ``allow_origins`` lists
    origins (``https://app.example.com``) or is ``["*"]``; see :mod:`s5vec.daemon.cors`."""

    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False     # Access-Control-Allow-Credentials (not with "*")
    max_age_s: int = 600                # how long a browser may cache a preflight answer


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``GET /metrics`` (Prometheus). ``require_auth`` unset: public on a loopback address,
    the ``read`` scope beyond it; true or false decides explicitly."""

    require_auth: bool | None = None


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("./data")
    log_level: str = "info"
    log_format: str = "text"            # text | json (one JSON object a line, for journald / log shippers)
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    default_collection: DefaultCollectionConfig = field(default_factory=DefaultCollectionConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    ws: WsConfig = field(default_factory=WsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    health: HealthThresholds = field(default_factory=HealthThresholds)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)

    @property
    def ships_wal(self) -> bool:
        """Whether the writer ships its WAL: ``replication.ship_wal``, by default on with remote storage."""
        if self.replication.role == "follower":
            return False
        if self.replication.ship_wal is not None:
            return self.replication.ship_wal
        return self.storage.mode != "local"

    @property
    def metrics_need_auth(self) -> bool:
        """Whether ``/metrics`` needs an API key with the read scope (see MetricsConfig)."""
        if self.metrics.require_auth is not None:
            return self.metrics.require_auth
        return not _is_loopback(self.http.host)

    def summary(self) -> str:
        """One start-up line; secrets are masked."""
        keys = ", ".join(f"***({'+'.join(k.scopes)})" for k in self.auth.keys) or "none (loopback only)"
        return (f"s5vec config: data_dir={self.data_dir} listen={self.http.host}:{self.http.port} "
                f"storage={self.storage.summary()} api_keys=[{keys}] "
                f"checkpoint_interval={self.engine.checkpoint_interval_s}s "
                f"log_level={self.log_level}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        return _coerce(value, options[0], key)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {'an integer' if hint is int else 'a number'}, got {value!r}") from None
        if hint is int and isinstance(value, float) and value != number:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            secret = key.rsplit(".", 1)[-1] in SECRET_SETTINGS  # a mistyped secret is still a secret
            raise ConfigError(f"{key}: expected a string" + (" (value not shown)" if secret else f", got {value!r}"))
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table")
        return _build(hint, value, key + ".")
    if origin is tuple:
        (inner, *_rest) = get_args(hint)
        if isinstance(value, str) and inner is str:  # from the environment: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected an array")
        return tuple(_coerce(item, inner, f"{key}[{i}]") for i, item in enumerate(value))
    raise ConfigError(f"{key}: unsupported setting type")


def _build(cls: Any, raw: Mapping[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown setting")
    values = {name: _coerce(raw[name], hints[name], prefix + name) for name in names if name in raw}
    return cls(**values)


def _parse_keys(text: str) -> list[dict[str, Any]]:
    keys = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, scopes = part.partition(":")
        keys.append({"key": key, "scopes": [s for s in scopes.split(",") if s] or ["read", "write"]})
    return keys


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    aliases = {"S5VEC_HOST": ("http", "host"), "S5VEC_PORT": ("http", "port"),
               "S5VEC_DATA_DIR": ("data_dir",), "S5VEC_LOG_LEVEL": ("log_level",),
               "S5VEC_LOG_FORMAT": ("log_format",),
               **{name: ("storage", key) for name, key in STORAGE_ENV.items()}}
    for name, value in env.items():
        if name in aliases:
            path = aliases[name]
        elif name == "S5VEC_API_KEYS":
            raw.setdefault("auth", {})["keys"] = _parse_keys(value)
            continue
        elif name == "S5VEC_CORS_ORIGINS":
            raw.setdefault("cors", {})["allow_origins"] = [o.strip() for o in value.split(",") if o.strip()]
            continue
        elif name.startswith("S5VEC_") and "__" in name:
            path = tuple(p.lower() for p in name[len("S5VEC_"):].split("__"))
        else:
            continue
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return raw


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def validate(config: Config) -> None:
    """Cross-field rules; raises ConfigError naming the key."""
    problem = config.replication.problem()
    if problem:
        raise ConfigError(problem)
    if config.replication.role == "follower" and config.storage.mode == "local":
        raise ConfigError("replication.role: a follower reads the writer's storage: set storage.mode = portal "
                          "(or bridge) with the writer's seed phrase")
    if config.replication.role == "writer" and config.replication.durability == "replicated" \
            and not config.ships_wal:
        raise ConfigError("replication.durability: \"replicated\" needs WAL shipping (storage.mode portal or "
                          "bridge, or replication.ship_wal = true)")
    if not 0 <= config.http.port <= 65535:
        raise ConfigError(f"http.port: {config.http.port} is not a TCP port")
    if config.http.query_cache_entries < 0:
        raise ConfigError("http.query_cache_entries: must be 0 (off) or more")
    if config.http.max_body_bytes < 1024:
        raise ConfigError("http.max_body_bytes: must be at least 1024")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}")
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format: must be one of {', '.join(LOG_FORMATS)}")
    for name in ("checkpoint_max_age_s", "wal_max_bytes", "memory_max_bytes", "storage_max_failures"):
        if getattr(config.health, name) < 0:
            raise ConfigError(f"health.{name}: must be 0 (off) or more")
    if config.health.check_interval_s <= 0:
        raise ConfigError("health.check_interval_s: must be positive")
    for i, key in enumerate(config.auth.keys):
        if len(key.key) < 16:
            raise ConfigError(f"auth.keys[{i}].key: must be at least 16 characters")
        for scope in key.scopes:
            if scope not in SCOPES:
                raise ConfigError(f"auth.keys[{i}].scopes: unknown scope {scope!r} (use {', '.join(SCOPES)})")
    if not config.auth.keys and not _is_loopback(config.http.host):
        raise ConfigError(f"http.host: binding {config.http.host} needs auth.keys (refusing to serve "
                          "an unauthenticated database beyond loopback)")
    engine = config.engine
    if engine.search_batches < 0:
        raise ConfigError("engine.search_batches: must be 0 (no coalescing) or more")
    for name in ("checkpoint_interval_s", "checkpoint_wal_bytes", "max_pending", "drain_batch", "graph_chunk",
                 "index_threads", "search_threads", "wal_segment_bytes", "keep_manifests",
                 "migrate_interval_s", "migrate_max_records", "storage_probe_s", "checkpoint_retry_max_s",
                 "search_timeout_s", "filter_max_nodes", "filter_max_in_values", "filter_max_bytes"):
        if getattr(engine, name) <= 0:
            raise ConfigError(f"engine.{name}: must be positive")
    for section, names in (("events", ("window_events", "window_bytes", "queue_events", "max_lag_events",
                                       "heartbeat_s")),
                           ("ws", ("max_message_bytes", "max_messages_per_s", "max_subscriptions",
                                   "max_inflight", "auth_timeout_s"))):
        for name in names:
            if getattr(getattr(config, section), name) <= 0:
                raise ConfigError(f"{section}.{name}: must be positive")
    if not 0 <= engine.index_linger_s <= 10:
        raise ConfigError("engine.index_linger_s: must be 0 (index at once) to 10 seconds")
    if not 0 <= engine.background_nice <= 19:
        raise ConfigError("engine.background_nice: must be 0 (normal priority) to 19")
    if not 0 <= config.events.flush_ms <= 1000:
        raise ConfigError("events.flush_ms: must be 0 (push at once) to 1000")
    if config.events.max_lag_events < config.events.queue_events:
        raise ConfigError("events.max_lag_events: must be at least events.queue_events")
    if config.ws.max_message_bytes < 1024:
        raise ConfigError("ws.max_message_bytes: must be at least 1024")
    validate_cors(config.cors, bool(config.auth.keys))
    validate_storage(config.storage)
    validate_jobs(config.jobs, config.backup)
    from s5vec.index import METRICS, SCHEMAS
    if config.default_collection.metric not in METRICS:
        raise ConfigError(f"default_collection.metric: must be one of {', '.join(METRICS)}")
    schema = config.default_collection.schema
    if schema is not None and schema not in SCHEMAS:
        raise ConfigError(f"default_collection.schema: unknown schema {schema!r}")


def validate_cors(cors: CorsConfig, has_keys: bool) -> None:
    """Rules of the ``[cors]`` section. Raises ConfigError."""
    for i, origin in enumerate(cors.allow_origins):
        if origin == "*":
            if len(cors.allow_origins) > 1:
                raise ConfigError("cors.allow_origins: \"*\" allows every origin; list no others with it")
            if cors.allow_credentials:
                raise ConfigError("cors.allow_credentials: cannot be true with cors.allow_origins = [\"*\"] "
                                  "(that would hand every web page the browser's credentials)")
            if not has_keys:
                raise ConfigError("cors.allow_origins: \"*\" on a daemon without auth.keys would let every web "
                                  "page read and write the database; list the origins or configure API keys")
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query \
                or parts.fragment or parts.username is not None or origin != origin.strip().rstrip("/"):
            raise ConfigError(f"cors.allow_origins[{i}]: expected an origin such as https://app.example.com "
                              f"(scheme, host and optional port, no path), got {origin!r}")
    if cors.max_age_s < 0:
        raise ConfigError("cors.max_age_s: must be 0 or more")


def validate_jobs(jobs: JobsConfig, backup: BackupConfig) -> None:
    """Rules of the ``[jobs]`` and ``[backup]`` sections. Raises ConfigError."""
    try:
        QuietHours.parse(jobs.quiet_hours)
    except ValueError as exc:
        raise ConfigError(f"jobs.quiet_hours: {exc}") from None
    for section, obj, names in (
            ("jobs", jobs, ("rebalance_interval_s", "compact_interval_s", "scrub_interval_s", "gc_grace_s")),
            ("backup", backup, ("interval_s", "keep_daily", "keep_weekly"))):
        for name in names:
            if getattr(obj, name) < 0:
                raise ConfigError(f"{section}.{name}: must be 0 (off) or more")
    for name in ("migrate_batch_records", "scrub_sample", "retry_first_s", "retry_max_s"):
        if getattr(jobs, name) <= 0:
            raise ConfigError(f"jobs.{name}: must be positive")
    if jobs.retry_attempts < 0:
        raise ConfigError("jobs.retry_attempts: must be 0 (no retries) or more")
    if jobs.retry_max_s < jobs.retry_first_s:
        raise ConfigError("jobs.retry_max_s: must be at least jobs.retry_first_s")
    if jobs.rebalance_skew <= 1.0:
        raise ConfigError("jobs.rebalance_skew: must be above 1 (1 = perfectly even lists)")
    for name in ("tombstone_ratio", "segment_tombstone_ratio"):
        if not 0.0 < getattr(jobs, name) <= 1.0:
            raise ConfigError(f"jobs.{name}: must be in (0, 1]")
    if backup.keep_last < 1:
        raise ConfigError("backup.keep_last: must be at least 1 (the newest backup is always kept)")


def phrase_problem(phrase: str) -> str | None:
    """Why ``phrase`` is not a valid S5 seed phrase, or None. The reason never quotes a
    word of the phrase (the codec's messages do; the words are the secret)."""
    try:
        phrase_to_entropy(phrase)
    except InvalidSeedPhrase as exc:
        return re.sub(r""" ('[^']*'|"[^"]*")""", "", str(exc))
    return None


def read_seed_phrase(storage: StorageConfig) -> str | None:
    """The seed phrase from ``storage.seed_phrase`` or its file (which must not be readable
    by group or others). Raises ConfigError naming the key; never quotes the phrase."""
    if storage.seed_phrase is not None and storage.seed_phrase_file is not None:
        raise ConfigError("storage.seed_phrase_file: set storage.seed_phrase (S5_SEED_PHRASE) or "
                          "storage.seed_phrase_file (S5_SEED_PHRASE_FILE), not both")
    key, phrase = "storage.seed_phrase", storage.seed_phrase
    path = storage.seed_phrase_file
    if path is not None:
        key = "storage.seed_phrase_file"
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{key}: {path} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(f"{key}: {path} has mode {mode:04o}, so others can read the seed phrase; "
                                  f"allow only its owner: chmod 600 {path}")
            phrase = path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{key}: {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if phrase is None:
        return None
    problem = phrase_problem(phrase)
    if problem is not None:
        where = f"{path} does not hold" if path is not None else "not"
        raise ConfigError(f"{key}: {where} a valid S5 seed phrase: {problem}")
    return " ".join(phrase.split())


def _public_url(url: str) -> str:
    """``url`` without user info, query or fragment (they may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _check_url(key: str, url: str | None, mode: str, env: str) -> None:
    if not url:
        raise ConfigError(f"{key}: required when storage.mode = {mode} (or set {env})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = "" if "@" in url else f", got {url[:120]!r}"
        raise ConfigError(f"{key}: expected an http(s) URL with a host, such as https://s5.example.com{shown}")


def validate_storage(storage: StorageConfig) -> None:
    """Rules of the ``[storage]`` section; reads the seed phrase file. Raises ConfigError."""
    if storage.mode not in STORAGE_MODES:
        raise ConfigError(f"storage.mode: must be one of {', '.join(STORAGE_MODES)} "
                          f"(or mock = local, real = portal), got {storage.mode!r}")
    for name in ("timeout_s", "connect_timeout_s", "max_concurrency"):
        if getattr(storage, name) <= 0:
            raise ConfigError(f"storage.{name}: must be positive")
    if storage.retries < 0:
        raise ConfigError("storage.retries: must be 0 or more")
    phrase = read_seed_phrase(storage)
    if storage.mode == "local":
        return
    if storage.mode == "portal":
        _check_url("storage.portal_url", storage.portal_url, "portal", "S5_PORTAL_URL")
    else:
        _check_url("storage.bridge_url", storage.bridge_url, "bridge", "S5_BRIDGE_URL")
        if not storage.bridge_prefix.strip("/"):
            raise ConfigError("storage.bridge_prefix: must name a directory")
    if phrase is None and (storage.mode == "portal" or storage.encrypt):
        why = "signs the root pointer and encrypts blobs" if storage.mode == "portal" else "encrypts blobs"
        raise ConfigError(f"storage.seed_phrase: storage.mode = {storage.mode} needs a seed phrase (it {why}): "
                          "put one in a file with mode 0600 and set S5_SEED_PHRASE_FILE (or "
                          "storage.seed_phrase_file); `s5vec keys new` makes one")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """TOML file, then environment, then explicit overrides (CLI flags). Raises ConfigError."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    raw = _merge(raw, _env_overrides(env or {}))
    raw = _merge(raw, overrides or {})
    config: Config = _build(Config, raw)
    validate(config)
    return config
