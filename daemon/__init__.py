"""The daemon: config, aiohttp app factory, REST handlers, auth, CLI (the only aiohttp importer).

The public names load on first use, so ``s5vec`` client commands start without the engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .app import create_app
    from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
_LAZY: Final = {"create_app": ".app", "Config": ".config", "ConfigError": ".config", "load_config": ".config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)
