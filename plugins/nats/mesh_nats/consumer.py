"""Pulling JetStream consumers into a handler with ``max_in_flight`` as a hard bound.

nats-py's ``PullSubscription.fetch`` is not used: its pending pull requests are
lost on a server restart and never re-sent (nats.py#504), and a fetch that
timed out client-side can leave a request on the server whose messages arrive
later, in excess of the batch asked for. Instead each consumer gets its own
inbox and a pump keeps one pull request open on it:

* the request asks for at most the free slots (``max_in_flight`` minus running
  handlers, held-back messages and what other open requests may still bring),
  so while handlers are busy nothing is fetched and the rest waits in the stream;
* it ends when its batch arrived, on a status message sent to its reply subject
  ``<inbox>.<n>`` (408 expired, 409 conflict, 503 no responders), or a second
  after its ``pull_expires``: a request lost in an outage is replaced within
  that time, and after a reconnect at once (`reset`).

With several patterns (one consumer each) every consumer keeps at least one
request open, so up to ``patterns - 1`` messages may wait client-side for a
slot; they are held back, never run beyond ``max_in_flight``. A message that
matches an earlier pattern of the same subscription is acked and skipped: the
earlier pattern's consumer delivers it.

Every message the subscription holds (running, waiting for a slot, or about to be
given back while the subscription closes) gets ``+WPI`` once a third of ``ack_wait``
has passed since the last one, so ``ack_wait`` can be short: it is then only how long
a dead worker's messages stay locked. Settlements go through the subscription's
current client (`NatsSubscription.rebind` moves it to a fresh one after the server
closed the old connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub

from mesh import (
    Delivery,
    DeliveryError,
    DeliveryHandler,
    Dispatcher,
    Event,
    MeshError,
    Subscription,
    codec,
    pattern_matcher,
    quietly,
)
from mesh_nats import binding
from mesh_nats.config import NatsConfig

log = logging.getLogger("mesh.nats")
#: JetStream acknowledgement payloads (the ack protocol every client speaks)
ACK, NAK, PROGRESS = b"+ACK", b"-NAK", b"+WPI"


class NatsDelivery(Delivery):
    """A JetStream message; settling publishes ``+ACK`` / ``-NAK {"delay": ns}`` / ``+WPI``
    to its ack subject.

    Settlements go through the owner's *current* client, not the one the message came
    on: an ack subject is valid on any connection, so a message still being handled when
    the transport replaced a client the server had closed is acked (or kept in
    progress) instead of being redelivered. A delivery without an owner (from
    `NatsTransport.read`) is settled from the start: ack and nack do nothing.
    """

    __slots__ = ("_msg", "_owner", "_seq", "progressed")

    def __init__(self, msg: Msg, channel: str, owner: NatsSubscription | None) -> None:
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (9 tokens), or
        # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>... (11-12 tokens);
        # parsed by hand: msg.metadata costs 10x more
        tokens = msg.reply.split(".") if msg.reply.startswith("$JS.ACK.") else []
        at = 4 if len(tokens) == 9 else 6
        super().__init__(channel, max(0, int(tokens[at]) - 1))
        self._seq = tokens[at + 1]
        int(self._seq)  # not a JetStream ack subject: ValueError, as for the count
        self._msg, self._owner = msg, owner
        self.progressed = time.monotonic()
        if owner is None:
            self._settled = True

    @property
    def position(self) -> str:
        """The message's stream sequence: the same on every redelivery, unique in the stream."""
        return self._seq

    def _decode(self) -> Event:
        return codec.decode(
            binding.from_nats, binding.NATSMessage(dict(self._msg.headers or {}), self._msg.data)
        )

    def raw(self) -> tuple[dict[str, str], bytes]:
        return dict(self._msg.headers or {}), bytes(self._msg.data)

    async def _settle(self, what: str, payload: bytes) -> None:
        if self._owner is None:
            return
        try:
            await self._owner.nc.publish(self._msg.reply, payload)
        except Exception as exc:  # nats-py raises assorted types once the connection is gone
            raise DeliveryError(
                f"could not {what} a message on {self.channel!r}: {type(exc).__name__}: "
                f"{exc}; the broker redelivers it after ack_wait"
            ) from None

    async def _ack(self) -> None:
        await self._settle("ack", ACK)

    async def _nack(self, delay: float) -> None:
        if self._owner is not None:
            await self._owner.gate.wait()  # see NatsSubscription.close
        await self._settle(
            "nack",
            NAK if not delay else NAK + b' {"delay":' + str(int(delay * 1e9)).encode() + b"}",
        )

    async def in_progress(self) -> None:
        """Reset the ack_wait timer (``+WPI``); the subscription also does this by itself
        for every message it holds (waiting for a slot or running) past a third of
        ``ack_wait``, and keeps doing it while it closes."""
        if not self.settled:
            await self._settle("extend", PROGRESS)
            self.progressed = time.monotonic()  # after: a failed signal is retried next tick


@dataclass
class _Pull:
    """One JetStream consumer: its inbox and the pull requests open on it."""

    consumer: str
    pattern: str
    skip: Sequence[Callable[[str], bool]]
    inbox: str = ""
    sub: NatsSub | None = None
    token: str = ""  # reply token of the open request; "" when none is open
    left: int = 0  # messages the open request may still bring
    deadline: float = 0.0
    resume: float = 0.0  # no new request before this (after a 409/503)
    serial: int = 0

    def end(self) -> None:
        self.token, self.left = "", 0


class NatsSubscription(Subscription):
    """The pump, the handler tasks and the clean shutdown of one ``subscribe`` call."""

    def __init__(
        self,
        nc: Client,
        config: NatsConfig,
        consumers: Sequence[tuple[str, str]],
        handler: DeliveryHandler,
        max_in_flight: int,
        on_close: Callable[[NatsSubscription], None],
        recreate: Callable[[str, str], Awaitable[None]] | None,
    ) -> None:
        """``consumers`` are (name, pattern) pairs; ``on_close`` is told once the
        subscription closed. ``recreate(name, pattern)`` is given for a broadcast
        subscriber only: its consumers are recreated when the server deleted them
        (inactivity) and deleted when it closes; a group's are left alone."""
        self.nc, self._cfg = nc, config  # nc: the client it pulls and settles through
        self._max = max_in_flight
        self._on_close, self._recreate = on_close, recreate
        self._pulls = [
            _Pull(name, pattern, [pattern_matcher(p) for _, p in consumers[:i]])
            for i, (name, pattern) in enumerate(consumers)
        ]
        self._wake = asyncio.Event()
        self._pool: Dispatcher[NatsDelivery] = Dispatcher(
            handler, max_in_flight, lambda delivery: delivery, on_done=lambda _: self._wake.set()
        )
        self._pump_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self.gate = asyncio.Event()  # cleared while closing: nacks wait for the unsubscribe
        self.gate.set()
        self._returned: list[NatsDelivery] = []  # arrived while closing, given back after it
        self._tick = min(1.0, config.ack_wait / 4)
        self._noted: dict[str, float] = {}  # consumer -> when last found missing

    async def start(self) -> None:
        await self.rebind(self.nc)
        self._pump_task = asyncio.create_task(self._pump(), name="mesh-nats-pump")

    def reset(self) -> None:
        """Forget every open pull request (after a reconnect they may be gone)."""
        for pull in self._pulls:
            pull.end()
        self._wake.set()

    async def rebind(self, nc: Client) -> None:
        """Move to ``nc``, a fresh client that replaced one the server closed (or the first
        one, from `start`): new inboxes for every consumer, open requests forgotten (they
        died with the old connection), so the pump asks again at once. Messages already
        here stay in the pool; their settlements go through ``nc`` from now on (see
        `NatsDelivery`)."""
        subs = []
        for pull in self._pulls:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(f"{inbox}.*", cb=functools.partial(self._receive, pull))
            subs.append((inbox, sub))
        self.nc = nc  # no await from here: the pump never pairs the new client with old inboxes
        for pull, (inbox, sub) in zip(self._pulls, subs, strict=True):
            pull.inbox, pull.sub = inbox, sub
        self.reset()

    # --- receiving ------------------------------------------------------------------

    async def _receive(self, pull: _Pull, msg: Msg) -> None:
        if not msg.reply:  # status of a request (sent to its reply subject), not a message
            status = (msg.headers or {}).get("Status", "")
            if status != "100" and msg.subject == f"{pull.inbox}.{pull.token}":
                pull.end()  # 100 is an idle heartbeat; other statuses end the request
                if status in ("409", "503"):
                    await self._lost(pull, status, (msg.headers or {}).get("Description", ""))
                self._wake.set()
            return
        # Stream messages keep their own subject, so they count against the open request.
        pull.left -= 1
        if pull.left <= 0:
            pull.end()
            self._wake.set()
        await self._accept(pull, msg)

    async def _lost(self, pull: _Pull, status: str, description: str) -> None:
        """A 409 or 503 ended the request: pause this consumer's requests for a second
        (no tight loop while JetStream restarts), and act on a deleted consumer."""
        now = time.monotonic()
        pull.resume = now + 1.0
        gone = status == "503" or "deleted" in description.lower()
        if not gone or self._closing or now - self._noted.get(pull.consumer, -1e9) < 10:
            return
        self._noted[pull.consumer] = now
        if self._recreate is not None:
            with contextlib.suppress(MeshError):
                await self._recreate(pull.consumer, pull.pattern)
        else:
            log.warning(
                "consumer %s on stream %s answers %s %s; if it was deleted, "
                "resubscribe to recreate it",
                pull.consumer,
                self._cfg.stream,
                status,
                description,
            )

    async def _accept(self, pull: _Pull, msg: Msg) -> None:
        channel = self._cfg.channel(msg.subject)
        try:
            delivery = NatsDelivery(msg, channel, self)
        except Exception as exc:  # reply is not a JetStream ack subject: not ours to handle
            log.warning("ignoring a non-JetStream message on %s: %s", msg.subject, exc)
            return
        if self._closing:
            self._returned.append(delivery)
        elif pull.skip and any(match(channel) for match in pull.skip):
            try:
                await delivery.ack()
            except MeshError as exc:
                log.warning("%s", exc)
        else:
            self._pool.submit(delivery)

    # --- the pump -------------------------------------------------------------------

    async def _pump(self) -> None:
        expires_ns = int(self._cfg.pull_expires * 1e9)
        while not self._closing:
            self._wake.clear()
            now = time.monotonic()
            try:
                await self._heartbeat(now)
                await self._refill(now, expires_ns)
            except Exception as exc:  # disconnected or closing: retry on the next tick
                log.debug("pull request failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick)

    async def _refill(self, now: float, expires_ns: int) -> None:
        for pull in self._pulls:
            if pull.token and pull.deadline < now:
                pull.end()
        free = self._max - self._pool.load
        if free <= 0:
            return
        idle = [pull for pull in self._pulls if not pull.token and pull.resume <= now]
        available = free - sum(pull.left for pull in self._pulls)
        for pull in idle:
            if available > 0:
                batch = max(1, available // len(idle))
            elif len(self._pulls) > 1:
                batch = 1  # every pattern keeps a request open, even with the budget taken
            else:
                return
            pull.serial += 1
            pull.token, pull.left = str(pull.serial), batch
            pull.deadline = now + self._cfg.pull_expires + 1.0
            available -= batch
            request = json.dumps({"batch": batch, "expires": expires_ns}).encode()
            await self.nc.publish(
                self._next_subject(pull), request, reply=f"{pull.inbox}.{pull.token}"
            )

    async def _heartbeat(self, now: float, deliveries: Iterable[NatsDelivery] = ()) -> None:
        """Keep held messages from redelivery: ``+WPI`` once a third of ``ack_wait`` has
        passed since the last one, for every message in the pool (running, or waiting for
        a slot) and ``deliveries``. A third leaves two chances before the deadline, so a
        short ``ack_wait`` (what makes a dead worker's messages come back soon) is safe."""
        due = self._cfg.ack_wait / 3
        for delivery in (*self._pool.items(), *deliveries):
            if not delivery.settled and now - delivery.progressed > due:
                with contextlib.suppress(MeshError):
                    await delivery.in_progress()

    async def _keep_in_progress(self, held: Sequence[NatsDelivery]) -> None:
        """While closing (the pump is gone): the heartbeat for running handlers, the
        backlog and late arrivals, until they are settled (they must not reach another
        member while this one still runs them or is about to nack them)."""
        while True:
            with contextlib.suppress(Exception):
                await self._heartbeat(time.monotonic(), (*held, *self._returned))
            await asyncio.sleep(self._tick)

    # --- closing --------------------------------------------------------------------

    async def _sweep(self, pull: _Pull) -> None:
        """Have the server sweep our dead pull requests before anything is nacked.

        A 2.9 server whose waiting list holds only requests without interest pops a
        nacked message for them, finds no taker and loses it until ``ack_wait``. A 50 ms
        probe request answered (408 or a message) proves the list was swept: requests
        are served and expired in order, and the uninterested ones are dropped on the way.
        """
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def probe(msg: Msg) -> None:
            if msg.reply:  # a message after all: closing, so it joins those given back
                await self._accept(pull, msg)
            if not answered.done():
                answered.set_result(None)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=probe)
        try:
            await self.nc.publish(
                self._next_subject(pull), b'{"batch":1,"expires":50000000}', reply=inbox
            )
            await asyncio.wait_for(answered, 2.0)
        finally:
            await quietly(sub.unsubscribe())

    def _next_subject(self, pull: _Pull) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self._cfg.stream}.{pull.consumer}"

    async def close(self, timeout: float = 0.0) -> None:
        """Stop pulling, give back what is not running, let handlers finish for ``timeout``
        seconds, then cancel them (their messages are nacked, never acked).

        Nacks (ours and handlers') wait behind a gate until the inboxes are drained
        (unsubscribed, with a round trip) and `_sweep` saw the server drop our open pull
        requests: a nack sent earlier would be redelivered straight back to one of them.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.gate.clear()
        backlog = self._pool.stop()
        keeper = asyncio.create_task(self._keep_in_progress(backlog), name="mesh-nats-wpi")
        try:
            if self._pump_task is not None:
                self._pump_task.cancel()
                await asyncio.gather(self._pump_task, return_exceptions=True)
            for pull in self._pulls:
                if pull.sub is not None:
                    try:
                        await asyncio.wait_for(pull.sub.drain(), 5.0)  # type: ignore[no-untyped-call]
                    except Exception:  # disconnected: drop the interest without the round trip
                        await quietly(pull.sub.unsubscribe())
            await asyncio.gather(
                *(self._sweep(pull) for pull in self._pulls), return_exceptions=True
            )
            self.gate.set()
            for delivery in (*self._returned, *backlog):
                with contextlib.suppress(MeshError):
                    await delivery.nack()
            await self._pool.drain(timeout)
            if self._recreate is not None:  # a broadcast subscriber's consumers die with it
                js = self.nc.jetstream(timeout=self._cfg.request_timeout)
                for pull in self._pulls:
                    await quietly(js.delete_consumer(self._cfg.stream, pull.consumer))
            self._on_close(self)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            self.gate.set()
            self._closed.set()
