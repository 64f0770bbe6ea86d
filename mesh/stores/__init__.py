"""Idempotency stores: remember which (group, source, id) a consumer group handled.

The mesh checks the store before running a handler and records the key after the
handler succeeded and its emitted events were confirmed, so a redelivered or
duplicated event is acked without running the handler twice. The check is not a
lock: two copies of one event delivered at the same moment to two members may
both run (at-least-once); deterministic emitted ids make that harmless downstream.

Stores are chosen by URL (``memory://``, ``sqlite:///var/lib/app/idem.db``) and
registered through the ``mesh_register_stores`` hook like any plugin.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from mesh.errors import ConfigError
from mesh.hookspecs import hookimpl

_monotonic = time.monotonic


@runtime_checkable
class IdempotencyStore(Protocol):
    """What the mesh needs from an idempotency store. ``close()`` is idempotent."""

    async def seen(self, key: str) -> bool: ...

    async def mark(self, key: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class SyncIdempotencyStore(IdempotencyStore, Protocol):
    """A store whose checks need no I/O (in-process) may also offer them synchronously;
    the mesh then calls ``seen_nowait``/``mark_nowait`` instead of awaiting
    ``seen``/``mark`` (no coroutine per delivery). Both pairs must behave the same."""

    def seen_nowait(self, key: str) -> bool: ...

    def mark_nowait(self, key: str) -> None: ...


class MemoryIdempotencyStore:
    """Bounded in-process store: the newest ``max_entries`` keys, each for ``ttl`` seconds.
    A `SyncIdempotencyStore`: the mesh uses ``seen_nowait``/``mark_nowait``."""

    def __init__(self, max_entries: int = 100_000, ttl: float = 24 * 3600) -> None:
        self._keys: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl

    def seen_nowait(self, key: str) -> bool:
        stamp = self._keys.get(key)
        if stamp is None:
            return False
        if _monotonic() - stamp > self._ttl:
            del self._keys[key]
            return False
        return True

    def mark_nowait(self, key: str) -> None:
        keys = self._keys
        if key in keys:
            keys.move_to_end(key)
        keys[key] = _monotonic()
        if len(keys) > self._max:
            keys.popitem(last=False)

    async def seen(self, key: str) -> bool:
        return self.seen_nowait(key)

    async def mark(self, key: str) -> None:
        self.mark_nowait(key)

    async def close(self) -> None:
        self._keys.clear()


class SQLiteIdempotencyStore:
    """Durable store in one SQLite file; survives restarts. Calls run off the event loop."""

    def __init__(self, path: str | Path, ttl: float = 7 * 24 * 3600) -> None:
        self._path = str(path)
        self._ttl = ttl
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS mesh_handled (key TEXT PRIMARY KEY, at REAL NOT NULL)"
            )
            self._db = db
        return self._db

    def _seen(self, key: str) -> bool:
        row = (
            self._connect().execute("SELECT at FROM mesh_handled WHERE key = ?", (key,)).fetchone()
        )
        return row is not None and time.time() - row[0] <= self._ttl

    def _mark(self, key: str) -> None:
        db = self._connect()
        now = time.time()
        db.execute("INSERT OR REPLACE INTO mesh_handled (key, at) VALUES (?, ?)", (key, now))

    async def seen(self, key: str) -> bool:
        async with self._lock:
            return await asyncio.to_thread(self._seen, key)

    async def mark(self, key: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._mark, key)

    async def purge(self) -> int:
        """Delete expired keys; returns how many."""

        def run() -> int:
            cur = self._connect().execute(
                "DELETE FROM mesh_handled WHERE at < ?", (time.time() - self._ttl,)
            )
            return cur.rowcount

        async with self._lock:
            return await asyncio.to_thread(run)

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await asyncio.to_thread(db.close)


StoreFactory = Callable[[str], IdempotencyStore]


class StoreRegistry:
    """Maps store URL schemes to factories; handed to ``mesh_register_stores``."""

    def __init__(self) -> None:
        self._factories: dict[str, StoreFactory] = {}

    def register(self, scheme: str, factory: StoreFactory) -> None:
        if scheme in self._factories:
            raise ConfigError(f"idempotency store scheme {scheme!r} is registered twice")
        self._factories[scheme] = factory

    @property
    def schemes(self) -> list[str]:
        return sorted(self._factories)

    def create(self, url: str) -> IdempotencyStore:
        scheme, sep, _ = url.partition("://")
        factory = self._factories.get(scheme)
        if not sep or factory is None:
            raise ConfigError(
                f"idempotency.store {url!r} is not a known store URL; use one of "
                f"{', '.join(s + '://' for s in self.schemes)} "
                "(e.g. sqlite:///var/lib/myapp/idempotency.db)"
            )
        return factory(url)


def _sqlite_from_url(url: str) -> IdempotencyStore:
    path = url.partition("://")[2]
    if not path:
        raise ConfigError("sqlite idempotency store needs a path: sqlite:///path/to/file.db")
    return SQLiteIdempotencyStore(path)  # sqlite:///abs/path.db or sqlite://relative.db


@hookimpl
def mesh_register_stores(registry: StoreRegistry) -> None:
    registry.register("memory", lambda url: MemoryIdempotencyStore())
    registry.register("sqlite", _sqlite_from_url)
