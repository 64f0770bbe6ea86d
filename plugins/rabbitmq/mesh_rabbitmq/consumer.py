"""Deliveries and subscriptions: one robust channel and one consumer per subscription.

Flow control is the channel's prefetch (``basic.qos`` = ``max_in_flight``): the
broker stops sending while that many messages are unacked, so events wait in
RabbitMQ, not in memory. A `mesh.Dispatcher` bounds concurrent handler calls to the
same number even across a reconnect, when handlers of the old channel may still run.

Settling maps onto AMQP 0-9-1 like this:

* ``ack()`` -> ``basic.ack``;
* ``nack(delay)`` -> ``basic.nack(requeue)`` after ``delay`` seconds, not a failure
  (RetryLater, giving a message back). RabbitMQ has no delayed requeue, so the
  message is held unacked meanwhile and counts against the prefetch;
* a handler that raised or returned without settling -> ``basic.reject(requeue)``,
  a failed delivery;
* cancellation by ``close()`` -> ``basic.nack(requeue)``.

What the quorum queue counts (``x-delivery-count``, and against ``x-delivery-limit``)
depends on the version. RabbitMQ 3.10 to 4.2 count every return: nack, reject, and the
unacked messages of a channel or connection that closed (a consumer process that was
killed counts too, for every message it held). RabbitMQ 4.3 counts only *failed*
deliveries there (reject, a closed channel; not nack) and every return in the new
``x-acquired-count``. ``redeliveries`` is the larger of the two headers, so it counts
every earlier delivery on every version, like the other transports.

After a reconnect the deliveries of the old channel cannot be settled any more
(their channel is gone): the broker already requeued them and redelivers them,
so a failed settle is logged, not raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from mesh import Delivery, DeliveryHandler, Dispatcher, Event, Subscription, codec, quietly
from mesh_rabbitmq import binding

log = logging.getLogger("mesh.rabbitmq")

Settle = Literal["ack", "nack", "reject"]
#: bound on broker round trips while closing (the broker may be unreachable)
OP_TIMEOUT = 5.0


def _from_incoming(message: AbstractIncomingMessage, fmt: Any, factory: Any) -> Any:
    """`binding.decode` in the shape of an SDK ``from_*`` function, for `codec.decode`."""
    return binding.decode(message.headers, message.content_type, message.body, fmt, factory)


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def earlier_deliveries(message: AbstractIncomingMessage) -> int:
    """Earlier deliveries of ``message``: the larger of the quorum queue's
    ``x-delivery-count`` and (RabbitMQ 4.3+) ``x-acquired-count``, and at least 1 when
    the broker flags the message redelivered (a classic queue counts nothing)."""
    headers = message.headers or {}
    count = max(_count(headers.get("x-delivery-count")), _count(headers.get("x-acquired-count")))
    return 1 if message.redelivered and not count else count


async def settle(message: AbstractIncomingMessage, how: Settle) -> None:
    """Ack, nack or reject (both requeueing); a lost channel means "redelivered"."""
    try:
        if how == "ack":
            await message.ack()
        elif how == "nack":
            await message.nack(requeue=True)
        else:
            await message.reject(requeue=True)
    except Exception as exc:  # channel gone after a reconnect, or closing
        log.info(
            "could not %s a message from %s (%s); RabbitMQ redelivers it",
            how,
            message.routing_key,
            type(exc).__name__,
        )


class RabbitMQDelivery(Delivery):
    """A message from a queue; ``redeliveries`` from `earlier_deliveries`. ``position``
    stays None: a quorum queue gives a message no identity that survives a redelivery
    (delivery tags are per channel and per delivery)."""

    __slots__ = ("_message", "_sub")

    def __init__(self, message: AbstractIncomingMessage, sub: RabbitMQSubscription) -> None:
        super().__init__(message.routing_key or "", earlier_deliveries(message))
        self._message, self._sub = message, sub

    def _decode(self) -> Event:
        return codec.decode(_from_incoming, self._message)

    def raw(self) -> tuple[Mapping[str, str], bytes]:
        message = self._message
        return binding.raw_headers(message.headers, message.content_type), bytes(message.body)

    async def _ack(self) -> None:
        await settle(self._message, "ack")

    async def _nack(self, delay: float) -> None:
        if delay > 0:
            self._sub.requeue_later(self._message, delay)
        else:
            await settle(self._message, "nack")

    async def _unhandled(self, cancelled: bool) -> None:
        """Cancelled: nack (redeliver, never ack). A handler that failed or forgot to
        settle: reject, which RabbitMQ 4.3+ counts toward the delivery limit."""
        if not self._settled:
            self._settled = True
            await settle(self._message, "nack" if cancelled else "reject")


class RetainedDelivery(RabbitMQDelivery):
    """A message read from a retained channel's stream (`RabbitMQTransport.read`):
    settled from the start (ack and nack do nothing: reading never consumes, so there is
    no subscription to settle through), no redeliveries, and ``position`` the stream
    offset (stable, unique in the stream)."""

    __slots__ = ("_offset",)

    def __init__(self, message: AbstractIncomingMessage, offset: int) -> None:
        Delivery.__init__(self, message.routing_key or "", 0)
        self._message, self._offset = message, offset
        self._settled = True

    @property
    def position(self) -> str:
        return str(self._offset)


class RabbitMQSubscription(Subscription):
    """A consumer on ``queue`` over its own robust ``channel`` (see module docstring)."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: AbstractQueue,
        handler: DeliveryHandler,
        max_in_flight: int,
    ) -> None:
        self.channel, self.queue = channel, queue
        self._pool: Dispatcher[AbstractIncomingMessage] = Dispatcher(
            handler, max_in_flight, lambda message: RabbitMQDelivery(message, self)
        )
        self._timers: set[asyncio.Task[None]] = set()
        self._tag: str | None = None
        self._closing: asyncio.Task[None] | None = None
        self.on_closed: Callable[[RabbitMQSubscription], None] | None = None

    async def start(self) -> None:
        """Start consuming; returns once the broker confirmed the consumer."""
        self._tag = await self.queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._pool.stopped:
            await settle(message, "nack")
        else:
            self._pool.submit(message)

    def requeue_later(self, message: AbstractIncomingMessage, delay: float) -> None:
        """Hold ``message`` unacked for ``delay`` seconds, then give it back."""

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
            finally:  # also when closing: give it back now
                await settle(message, "nack")

        timer = asyncio.create_task(later())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def close(self, timeout: float = 0.0) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(timeout))
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float) -> None:
        waiting = self._pool.stop()
        # cancelling also stops aio-pika restoring the consumer after a reconnect; while
        # the connection is down it cannot reach the broker, so do not wait for that
        wait = 0.05 if self.channel.is_closed else OP_TIMEOUT
        if self._tag is not None:
            await quietly(self.queue.cancel(self._tag), wait)
        await asyncio.gather(*(settle(message, "nack") for message in waiting))
        await self._pool.drain(timeout)
        timers = list(self._timers)
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        wait = 0.05 if self.channel.is_closed else OP_TIMEOUT
        if self.queue.exclusive:  # a broadcast subscriber's own queue
            await quietly(self.queue.delete(if_unused=False, if_empty=False), wait)
        await quietly(self.channel.close(), wait)  # also ends aio-pika's restoring of it
        if self.on_closed is not None:
            self.on_closed(self)
