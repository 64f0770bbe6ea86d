"""The dead-letter channel as an API: list and replay what landed there.

Dead-letter copies are kept by a durable consumer group (``mesh.dlq:<channel>``) that
every mesh declares at start, so copies are retained by the broker even when no
dead-letter handler runs. `DeadLetters.list` peeks (reads, then gives every copy
back); `DeadLetters.replay` republishes copies to their original channel and
removes them. ``mesh dlq list|replay`` in the CLI calls these.

Replayed events get a fresh id (derived from the dead-letter copy's, so a replay
retried after a crash yields the same id) and a ``meshreplayof`` extension with
the original id: brokers with a duplicate window (JetStream) would otherwise
swallow the re-drive, and the idempotency store never recorded the original
as handled anyway. Messages that were not CloudEvents (``mesh.undecodable``)
cannot be replayed and stay where they are.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from mesh.context import ID_NAMESPACE
from mesh.delivery import DL_CHANNEL, DL_EXTENSIONS, DL_ID, UNDECODABLE_TYPE
from mesh.errors import DecodeError, MeshError
from mesh.event import Event
from mesh.transport import Delivery

if TYPE_CHECKING:
    from mesh.app import Mesh

GROUP_PREFIX = "mesh.dlq"
log = logging.getLogger("mesh.dlq")


def original_of(copy: Event) -> tuple[str, Event]:
    """(channel, event) to replay for a dead-letter copy."""
    channel = str(copy.extensions.get(DL_CHANNEL) or copy.type)
    original_id = str(copy.extensions.get(DL_ID) or copy.id)
    event = copy.replace(id=str(uuid.uuid5(ID_NAMESPACE, f"replay\x1f{copy.id}")),
                         meshreplayof=original_id, **dict.fromkeys(DL_EXTENSIONS))
    return channel, event


class DeadLetters:
    """List and replay the dead-letter channel of one mesh."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    @property
    def channel(self) -> str:
        return self._mesh.config.dead_letter_channel

    @property
    def group(self) -> str:
        """The retaining group: one per dead-letter channel, so apps with their own
        dead-letter channels on one broker never share (or see) each other's copies."""
        return f"{GROUP_PREFIX}:{self.channel}"

    async def declare(self) -> None:
        """Make sure the retaining group exists (called by ``Mesh.start``)."""
        await self._mesh.transport.ensure_group(self.channel, self.group)

    async def list(self, limit: int = 100, idle: float = 1.0) -> builtins.list[Event]:
        """Up to ``limit`` dead-letter copies, left in place. Stops when none arrived for
        ``idle`` seconds."""
        return [event for event, _ in await self._visit(limit, idle, None)]

    async def replay(self, ids: Collection[str] | None = None, limit: int = 1000,
                     idle: float = 1.0) -> builtins.list[Event]:
        """Republish copies (all, or those whose copy id or original id is in ``ids``) to
        their original channels; returns the replayed events."""
        def wanted(event: Event) -> bool:
            if event.type == UNDECODABLE_TYPE:
                return False
            return ids is None or event.id in ids or event.extensions.get(DL_ID) in ids
        return [event for event, _ in await self._visit(limit, idle, wanted)]

    async def _visit(self, limit: int, idle: float, replay: Callable[[Event], bool] | None,
                     ) -> builtins.list[tuple[Event, Delivery]]:
        seen: dict[str, tuple[Event, Delivery]] = {}
        produced: set[str] = set()   # ids replayed in this pass; their new failures stay put
        arrived = asyncio.Event()
        done = asyncio.Event()
        mesh = self._mesh

        async def collect(delivery: Delivery) -> None:
            try:
                event = delivery.event
            except DecodeError:
                await delivery.nack()
                return
            if event.id in seen or len(seen) >= limit:
                await delivery.nack()
                return
            if replay is not None and event.extensions.get(DL_ID) not in produced \
                    and replay(event):
                channel, original = original_of(event)
                try:
                    await mesh.publish(original, channel=channel)
                except MeshError as exc:   # e.g. still violates its contract: leave it
                    log.warning("cannot replay %s: %s", event.id, exc)
                else:
                    produced.add(original.id)
                    await delivery.ack()
                    seen[event.id] = (original, delivery)
                    arrived.set()
                    return
            if replay is None:
                seen[event.id] = (event, delivery)
            arrived.set()
            await done.wait()   # hold it unsettled until the end, then give it back
            await delivery.nack()

        sub = await mesh.transport.subscribe(self.channel, collect, group=self.group,
                                             max_in_flight=max(1, limit))
        try:
            while len(seen) < limit:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), idle)
                except TimeoutError:
                    break
        finally:
            closing = asyncio.create_task(sub.close(timeout=5.0))
            done.set()
            await closing
        return list(seen.values())
