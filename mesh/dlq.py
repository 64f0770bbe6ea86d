"""The dead-letter channel: its vocabulary, and an API to list and replay what landed there.

**The vocabulary** (public for plugin and tool authors: ``from mesh import dlq``). A
dead-letter copy keeps the original's type, source and data, gets a fresh id, and says
why in ``meshdl*`` extensions (CloudEvents names: lower-case, at most 20 characters):

* ``DL_ERROR`` = ``meshdlerror``: the exception type (``ValueError``, ...)
* ``DL_REASON`` = ``meshdlreason``: its message (at most 2000 characters)
* ``DL_ATTEMPTS`` = ``meshdlattempts``: handler attempts made (int)
* ``DL_GROUP`` = ``meshdlgroup``: the consumer group (``""``: broadcast)
* ``DL_CHANNEL`` = ``meshdlchannel``: the channel the event was consumed from
* ``DL_ID`` = ``meshdlid``: the original event's id
* ``DL_HEADERS`` = ``meshdlheaders``: an undecodable message's headers, as JSON
* ``DL_REDUCED`` = ``meshdlreduced``: true when the body was too large to keep
* ``DL_TIME`` = ``meshdltime``: when the copy was written (datetime)

``REPLAY_TO`` (``meshreplayto``) on a replayed event names the one group that runs it;
``UNDECODABLE_TYPE`` (``mesh.undecodable``) is the type of a copy of a message that was
not a CloudEvent (its body is the raw bytes); ``REMOVED_TYPE`` (``mesh.dlq.removed``)
is a removal notice on the channel itself. `dead_letter_event`, `undecodable_event`
and `reduced_copy` build copies exactly as the mesh does, so a bridge or a tool that
dead-letters on its own writes entries `DeadLetters` and ``mesh dlq`` understand.

**The API.** Every mesh asks its transport at start to *retain* its dead-letter channel
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
import hashlib
import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mesh import codec
from mesh.context import ID_NAMESPACE
from mesh.errors import DecodeError, MeshError
from mesh.event import Event
from mesh.transport import Delivery, pattern_matcher

if TYPE_CHECKING:
    from mesh.app import Mesh

__all__ = [
    "DL_ATTEMPTS",
    "DL_CHANNEL",
    "DL_ERROR",
    "DL_EXTENSIONS",
    "DL_GROUP",
    "DL_HEADERS",
    "DL_ID",
    "DL_REASON",
    "DL_REDUCED",
    "DL_TIME",
    "REMOVED_TYPE",
    "REPLAY_TO",
    "UNDECODABLE_TYPE",
    "DeadLetters",
    "Selection",
    "dead_letter_event",
    "dead_lettered_at",
    "original_of",
    "reason_of",
    "reduced_copy",
    "replay_id",
    "replayable",
    "undecodable_event",
]

log = logging.getLogger("mesh.dlq")

#: Extensions a dead-letter copy carries (see the module docstring).
DL_ERROR = "meshdlerror"  # exception type
DL_REASON = "meshdlreason"  # exception message
DL_ATTEMPTS = "meshdlattempts"  # handler attempts made
DL_GROUP = "meshdlgroup"  # consumer group ('' for broadcast)
DL_CHANNEL = "meshdlchannel"  # channel the event was consumed from
DL_ID = "meshdlid"  # the original event id (the copy gets a fresh id)
DL_HEADERS = "meshdlheaders"  # an undecodable message's headers, as JSON
DL_REDUCED = "meshdlreduced"  # true: the body was too large to keep (size + digest only)
DL_TIME = "meshdltime"  # when the copy was written
#: The extensions every dead-letter copy of an event carries (a replay clears them).
DL_EXTENSIONS = (DL_ERROR, DL_REASON, DL_ATTEMPTS, DL_GROUP, DL_CHANNEL, DL_ID)
#: Set on a replayed event: only the named group (``""``: broadcast subscribers) runs it.
REPLAY_TO = "meshreplayto"
#: The type of the copy of a message that was not a CloudEvent.
UNDECODABLE_TYPE = "mesh.undecodable"
#: Notices on the dead-letter channel that remove entries (see `DeadLetters.replay`).
REMOVED_TYPE = "mesh.dlq.removed"
_MAX_REASON = 2000
_REDUCED_TEXT = 256  # reason and headers kept in a reduced copy


def reason_of(error: BaseException) -> str:
    """Why an event was dead-lettered, as its copy's ``meshdlreason`` says (untruncated):
    the error's message, or its type's name when it has none."""
    return str(error) or type(error).__name__


def dead_letter_event(
    event: Event, error: BaseException, *, attempts: int, group: str | None, channel: str
) -> Event:
    """The copy of ``event`` that goes to the dead-letter channel.

    It keeps type, source and data, records why in ``meshdl*`` extensions, and
    gets a fresh id derived from (group, original id) so re-dead-lettering the same
    delivery yields the same id (brokers with native dedup keep one copy) while a
    broker's duplicate window never confuses it with the original.
    """
    reason = reason_of(error)
    return event.replace(
        id=str(uuid.uuid5(ID_NAMESPACE, f"dl\x1f{group or ''}\x1f{event.source}\x1f{event.id}")),
        **{
            DL_ERROR: type(error).__name__,
            DL_REASON: reason[:_MAX_REASON],
            DL_ATTEMPTS: attempts,
            DL_GROUP: group or "",
            DL_CHANNEL: channel,
            DL_ID: event.id,
            DL_TIME: datetime.now(UTC),
            REPLAY_TO: None,
        },
    )


def undecodable_event(
    delivery: Delivery, error: DecodeError, *, source: str, group: str | None
) -> Event:
    """Wrap a message that is not a CloudEvent so it can travel to the dead-letter channel.

    Its id is derived from everything that tells messages apart (body, headers, channel,
    group and the broker's `Delivery.position`), so a redelivery of the same message
    gets the same id while two different ones never share it. Without a position two
    byte-identical messages cannot be told from a redelivery, so the id is random then:
    a redelivery may leave a second entry, but no message is ever merged into another.
    """
    raw = delivery.raw()
    headers, body = raw if raw is not None else ({}, b"")
    position = delivery.position
    if position is None:
        event_id = str(uuid.uuid4())
    else:
        digest = hashlib.sha256()
        for part in (
            delivery.channel,
            group or "",
            position,
            json.dumps(sorted(headers.items()), default=str),
        ):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\x1f")
        digest.update(body)
        event_id = str(uuid.uuid5(ID_NAMESPACE, digest.hexdigest()))
    return Event(
        UNDECODABLE_TYPE,
        source,
        bytes(body),
        id=event_id,
        extensions={
            DL_ERROR: "DecodeError",
            DL_REASON: str(error)[:_MAX_REASON],
            DL_ATTEMPTS: 0,
            DL_GROUP: group or "",
            DL_CHANNEL: delivery.channel,
            DL_TIME: datetime.now(UTC),
            DL_HEADERS: json.dumps(dict(headers), default=str)[:_MAX_REASON],
        },
    )


def reduced_copy(copy: Event) -> Event:
    """A dead-letter copy the broker can hold: the original's context attributes (a long
    subject cut), the correlation and the ``meshdl*`` extensions (reason and headers
    shortened; other extensions dropped), and as data only the size and SHA-256 of the
    body it could not hold (``meshdlreduced``)."""
    try:
        body = (
            copy.data
            if isinstance(copy.data, bytes)
            else codec.encode_data(copy.data, copy.datacontenttype)
        )
    except MeshError:
        body = repr(copy.data).encode("utf-8", "replace")
    keep = (
        *DL_EXTENSIONS,
        DL_HEADERS,
        DL_TIME,
        "correlationid",
        "causationid",
        "traceparent",
        "tracestate",
    )
    ext: dict[str, object] = {k: copy.extensions[k] for k in keep if k in copy.extensions}
    for name in (DL_REASON, DL_HEADERS):
        if isinstance(ext.get(name), str):
            ext[name] = str(ext[name])[:_REDUCED_TEXT]
    ext[DL_REDUCED] = True
    subject = (
        copy.subject
        if copy.subject is None or len(copy.subject) <= _REDUCED_TEXT
        else copy.subject[:_REDUCED_TEXT]
    )  # a huge subject alone can exceed the limit
    return Event(
        copy.type,
        copy.source,
        {
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "datacontenttype": copy.datacontenttype,
        },
        id=copy.id,
        subject=subject,
        time=copy.time,
        extensions=ext,
    )


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
