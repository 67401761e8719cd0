"""The daemon: config, aiohttp app factory, REST handlers, auth, CLI (the only aiohttp importer)."""

from .app import create_app
from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
