"""Small helpers shared by the conformance suite and transport test modules."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable

import pytest

from mesh.event import Event
from mesh.transport import Delivery

__all__ = ["SHORT", "Collector", "chain_text", "scaled", "uid", "wait_until"]

SHORT = os.environ.get("MESH_TEST_SHORT", "").lower() in ("1", "true", "yes")


def scaled(full: int, short: int) -> int:
    """``full`` normally, ``short`` with MESH_TEST_SHORT=1."""
    return short if SHORT else full


def uid() -> str:
    return uuid.uuid4().hex[:10]


class Collector:
    """A delivery handler that records events and acks them; awaitable counts."""

    def __init__(self, settle: bool = True) -> None:
        self.events: list[Event] = []
        self.deliveries: list[Delivery] = []
        self.settle = settle
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.events.append(delivery.event)
        if self.settle:
            await delivery.ack()
        self._changed.set()

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    async def wait_for(self, count: int, timeout: float) -> None:
        """Wait until ``count`` events arrived; fail with what did arrive."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"expected {count} events within {timeout:g}s, got {len(self.events)}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def chain_text(exc: BaseException) -> str:
    """Everything an error reporter may print of ``exc``: the str, repr and args of it
    and of every exception in its ``__cause__``/``__context__`` chain (and in exception
    groups), even where ``__suppress_context__`` hides them from a plain traceback.
    Search it for a secret canary."""
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), *(repr(arg) for arg in current.args)]
        parts += (
            [repr(value) for value in vars(current).values()]
            if hasattr(current, "__dict__")
            else []
        )
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
    return "\n".join(parts)
