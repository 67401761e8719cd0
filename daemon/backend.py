"""The blob store the configuration asks for: this directory, an S5 portal or a bridge.

Keys derive from the seed phrase here and go straight into the store; they are never
logged (their reprs are masked) and never leave the process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from s5vec.storage import BlobStore, RemoteStore, RootMirror
from s5vec.storage.datadir import DataDir
from s5vec.storage.s5 import Identity

from .config import Config, read_seed_phrase

log = logging.getLogger(__name__)

CACHE_DIR: Final = "s5-cache"  # under the data directory: read cache and upload journal


def build_remote(config: Config) -> RemoteStore:
    """An unopened portal or bridge store for ``config.storage`` (mode portal or bridge).
    Raises ConfigError if the seed phrase file went bad since start-up."""
    from s5vec.storage.bridge import BridgeBlobStore
    from s5vec.storage.portal import PortalBlobStore

    storage = config.storage
    phrase = read_seed_phrase(storage)
    identity = Identity.from_phrase(phrase) if phrase else None
    cache_dir = config.data_dir / CACHE_DIR
    if storage.mode == "portal":
        assert storage.portal_url is not None and identity is not None  # validate_storage checked both
        return PortalBlobStore(storage.portal_url, identity, cache_dir=cache_dir, encrypt=storage.encrypt,
                               auth_token=storage.auth_token, timeout=storage.timeout_s,
                               connect_timeout=storage.connect_timeout_s,
                               max_concurrency=storage.max_concurrency, retries=storage.retries)
    if storage.mode == "bridge":
        assert storage.bridge_url is not None
        return BridgeBlobStore(storage.bridge_url, identity, encrypt=storage.encrypt, cache_dir=cache_dir,
                               prefix=storage.bridge_prefix, auth_token=storage.auth_token,
                               timeout=storage.timeout_s, connect_timeout=storage.connect_timeout_s,
                               max_concurrency=storage.max_concurrency, retries=storage.retries)
    raise ValueError(f"storage mode {storage.mode!r} has no remote store")


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[BlobStore | None]:
    """The opened store for the database, closed on exit; None in local mode (the
    database keeps its blobs and ROOT file in the data directory itself)."""
    if config.storage.mode == "local":
        yield None
        return
    config.data_dir.mkdir(parents=True, exist_ok=True)
    remote = build_remote(config)
    if not config.storage.encrypt:
        log.warning("storage.encrypt = false: blobs are uploaded in plain text, and anyone who learns "
                    "a blob's hash can read it")
    store = RootMirror(remote, DataDir(config.data_dir).root_file)  # the last root the backend acknowledged
    await store.open()
    try:
        log.info("storage: %s", config.storage.summary())
        yield store
    finally:
        await store.close()
