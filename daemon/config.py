"""One frozen config tree from a TOML file plus ``S5VEC_*`` environment overrides.

Environment: ``S5VEC_HOST``, ``S5VEC_PORT``, ``S5VEC_DATA_DIR``, ``S5VEC_LOG_LEVEL``,
``S5VEC_API_KEYS`` (``key:read,write;key2:admin``) and, for any key,
``S5VEC_<SECTION>__<KEY>`` (e.g. ``S5VEC_ENGINE__CHECKPOINT_INTERVAL_S=60``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Union, get_args, get_origin, get_type_hints

from s5vec.ops import EngineConfig

EX_CONFIG: Final = 78
SCOPES: Final = ("read", "write", "admin")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


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
class Config:
    data_dir: Path = Path("./data")
    log_level: str = "info"
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    default_collection: DefaultCollectionConfig = field(default_factory=DefaultCollectionConfig)

    def summary(self) -> str:
        """One start-up line; secrets are masked."""
        keys = ", ".join(f"***({'+'.join(k.scopes)})" for k in self.auth.keys) or "none (loopback only)"
        return (f"s5vec config: data_dir={self.data_dir} listen={self.http.host}:{self.http.port} "
                f"storage=local api_keys=[{keys}] checkpoint_interval={self.engine.checkpoint_interval_s}s "
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
            raise ConfigError(f"{key}: expected a string, got {value!r}")
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
               "S5VEC_DATA_DIR": ("data_dir",), "S5VEC_LOG_LEVEL": ("log_level",)}
    for name, value in env.items():
        if name in aliases:
            path = aliases[name]
        elif name == "S5VEC_API_KEYS":
            raw.setdefault("auth", {})["keys"] = _parse_keys(value)
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
    if not 0 <= config.http.port <= 65535:
        raise ConfigError(f"http.port: {config.http.port} is not a TCP port")
    if config.http.query_cache_entries < 0:
        raise ConfigError("http.query_cache_entries: must be 0 (off) or more")
    if config.http.max_body_bytes < 1024:
        raise ConfigError("http.max_body_bytes: must be at least 1024")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}")
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
    for name in ("checkpoint_interval_s", "checkpoint_wal_bytes", "max_pending", "drain_batch",
                 "index_threads", "search_threads", "wal_segment_bytes", "keep_manifests",
                 "migrate_interval_s", "migrate_max_records"):
        if getattr(engine, name) <= 0:
            raise ConfigError(f"engine.{name}: must be positive")
    from s5vec.index import METRICS, SCHEMAS
    if config.default_collection.metric not in METRICS:
        raise ConfigError(f"default_collection.metric: must be one of {', '.join(METRICS)}")
    schema = config.default_collection.schema
    if schema is not None and schema not in SCHEMAS:
        raise ConfigError(f"default_collection.schema: unknown schema {schema!r}")


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
