"""Idempotency stores: memory bounds/TTL, SQLite durability."""

from __future__ import annotations

from pathlib import Path

from mesh import MemoryIdempotencyStore, SQLiteIdempotencyStore


async def test_memory_store_bounds_and_ttl() -> None:
    store = MemoryIdempotencyStore(max_entries=2, ttl=3600)
    for key in ("a", "b", "c"):
        await store.mark(key)
    assert not await store.seen("a") and await store.seen("b") and await store.seen("c")
    expired = MemoryIdempotencyStore(ttl=0)
    await expired.mark("x")
    assert not await expired.seen("x")


async def test_sqlite_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "idem.db"
    store = SQLiteIdempotencyStore(path)
    assert not await store.seen("g\x1f/s\x1f1")
    await store.mark("g\x1f/s\x1f1")
    await store.close()
    await store.close()  # idempotent
    again = SQLiteIdempotencyStore(path)
    assert await again.seen("g\x1f/s\x1f1")
    assert await again.purge() == 0
    await again.close()
    short = SQLiteIdempotencyStore(path, ttl=-1)
    assert not await short.seen("g\x1f/s\x1f1")
    assert await short.purge() == 1
    await short.close()
