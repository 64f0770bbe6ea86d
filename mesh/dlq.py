"""The dead-letter channel as an API: list and replay what landed there.

Every mesh asks its transport at start to *retain* its dead-letter channel
(`Transport.retain`): a log that is read without being consumed
(`Transport.read`). The entries are the copies in that log that no removal
notice names. So:

* `DeadLetters.list` reads the log and removes, hides or reorders nothing for
  anyone: two operators listing at once both see everything, and dead-letter
  handlers (``on_dead_letter``) are not affected.
* `DeadLetters.replay` republishes the chosen copies to their original channel and
  then appends a removal notice (type ``mesh.dlq.removed``, on the dead-letter
  channel itself) naming them, so they are no longer listed. A replayed event
  reaches only the group that failed (the ``meshreplayto`` extension; consumers of
  other groups ack it unseen) unless ``all_groups=True``.

Replayed events get a fresh id (derived from the dead-letter copy's, so a replay
retried after a crash yields the same id and is deduplicated downstream) and a
``meshreplayof`` extension with the original id: brokers with a duplicate window
(JetStream) would otherwise swallow the re-drive. Copies that cannot be replayed
stay listed: messages that were not CloudEvents (``mesh.undecodable``) and copies
written reduced because the body was too large (``meshdlreduced``).

Entries are filtered by the group that failed, the event type (a channel pattern
such as ``orders.*``), the source and the time they were dead-lettered
(``meshdltime``). Apps that want their dead letters apart from other apps on the
same broker set their own ``dead_letter_channel``; the tools take it from the
config (``mesh dlq --dead-letter-channel``).
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mesh.context import ID_NAMESPACE
from mesh.delivery import (
    DL_CHANNEL,
    DL_EXTENSIONS,
    DL_GROUP,
    DL_HEADERS,
    DL_ID,
    DL_REDUCED,
    DL_TIME,
    REMOVED_TYPE,
    REPLAY_TO,
    UNDECODABLE_TYPE,
)
from mesh.errors import DecodeError, MeshError
from mesh.event import Event
from mesh.transport import pattern_matcher

if TYPE_CHECKING:
    from mesh.app import Mesh

log = logging.getLogger("mesh.dlq")


def original_of(copy: Event, *, group: str | None) -> tuple[str, Event]:
    """(channel, event) to replay for a dead-letter copy; ``group`` (None: every group)
    is the one group that will run it."""
    channel = str(copy.extensions.get(DL_CHANNEL) or copy.type)
    original_id = str(copy.extensions.get(DL_ID) or copy.id)
    cleared = dict.fromkeys((*DL_EXTENSIONS, DL_HEADERS, DL_REDUCED, DL_TIME, REPLAY_TO))
    event = copy.replace(id=replay_id(copy.id), meshreplayof=original_id, **cleared)
    if group is not None:
        event = event.replace(**{REPLAY_TO: group})
    return channel, event


def replay_id(copy_id: str) -> str:
    """The id a copy's replayed event gets (stable, so a retried replay deduplicates)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"replay\x1f{copy_id}"))


def replayable(copy: Event) -> bool:
    return copy.type != UNDECODABLE_TYPE and copy.extensions.get(DL_REDUCED) is not True


@dataclass(frozen=True, slots=True)
class Selection:
    """Which entries a listing or replay takes (every criterion given must match)."""

    group: str | None = None  # the group that failed ('' = broadcast handlers)
    type: str | None = None  # an event type or channel pattern ('orders.*')
    source: str | None = None
    since: datetime | None = None  # dead-lettered at or after

    def __call__(self, copy: Event) -> bool:
        if self.group is not None and str(copy.extensions.get(DL_GROUP, "")) != self.group:
            return False
        if self.type is not None and not pattern_matcher(self.type)(copy.type):
            return False
        if self.source is not None and copy.source != self.source:
            return False
        if self.since is not None:
            when = dead_lettered_at(copy)
            if when is None or when < self.since:
                return False
        return True


def dead_lettered_at(copy: Event) -> datetime | None:
    """When the copy was written (``meshdltime``), else the event's own time."""
    value = copy.extensions.get(DL_TIME)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            value = None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return copy.time


class DeadLetters:
    """List and replay the dead-letter channel of one mesh (see the module docstring)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    @property
    def channel(self) -> str:
        return self._mesh.config.dead_letter_channel

    async def declare(self) -> None:
        """Have the broker retain the channel (called by ``Mesh.start``). Transports that
        cannot retain channels are left alone: the dead-letter tools then say so."""
        transport = self._mesh.transport
        if transport.features.retained_reads:
            await transport.retain(self.channel)

    async def entries(self, *, idle: float = 1.0) -> builtins.list[Event]:
        """Every live entry (decodable copies no removal notice names), oldest first."""
        copies: builtins.list[Event] = []
        removed: set[str] = set()
        foreign = 0
        async for delivery in self._mesh.transport.read(self.channel, idle=idle):
            try:
                event = delivery.event
            except DecodeError:
                foreign += 1
                continue
            if event.type == REMOVED_TYPE:
                ids = event.data.get("ids") if isinstance(event.data, dict) else None
                removed.update(str(i) for i in ids or ())
            else:
                copies.append(event)
        if foreign:
            log.warning(
                "%d message(s) on %s are not CloudEvents (not written by a mesh); skipped",
                foreign,
                self.channel,
            )
        seen: set[str] = set()
        live = []
        for copy in copies:  # the same copy written twice (a retried write) is one entry
            if copy.id not in removed and copy.id not in seen:
                seen.add(copy.id)
                live.append(copy)
        return live

    async def list(
        self,
        limit: int = 100,
        idle: float = 1.0,
        *,
        group: str | None = None,
        type: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
    ) -> builtins.list[Event]:
        """Up to ``limit`` entries matching the filters, oldest first; nothing is
        consumed. ``idle`` bounds the wait for more on brokers that cannot tell where the
        channel ends."""
        wanted = Selection(group, type, source, since)
        return [copy for copy in await self.entries(idle=idle) if wanted(copy)][:limit]

    async def replay(
        self,
        ids: Collection[str] | None = None,
        limit: int = 1000,
        idle: float = 1.0,
        *,
        all_groups: bool = False,
        group: str | None = None,
        type: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
    ) -> builtins.list[Event]:
        """Republish entries (all matching the filters, or those whose copy id or original
        id is in ``ids``) to their original channels, for the group that failed only
        unless ``all_groups``; then remove them. Returns the replayed events. An entry
        whose republish fails (it still violates its contract, say) stays listed."""
        wanted = Selection(group, type, source, since)
        chosen = [
            copy
            for copy in await self.entries(idle=idle)
            if wanted(copy)
            and replayable(copy)
            and (ids is None or copy.id in ids or copy.extensions.get(DL_ID) in ids)
        ][:limit]
        replayed: builtins.list[Event] = []
        done: builtins.list[str] = []
        try:
            for copy in chosen:
                target = None if all_groups else str(copy.extensions.get(DL_GROUP, ""))
                channel, original = original_of(copy, group=target)
                try:
                    await self._mesh.publish(original, channel=channel)
                except MeshError as exc:
                    log.warning("cannot replay %s: %s", copy.id, exc)
                    continue
                replayed.append(original)
                done.append(copy.id)
        finally:
            if done:  # written after the replays were confirmed: at worst replayed twice
                await self._mesh.transport.publish(
                    self.channel,
                    Event(REMOVED_TYPE, self._mesh.source, {"ids": done, "reason": "replayed"}),
                )
        return replayed
