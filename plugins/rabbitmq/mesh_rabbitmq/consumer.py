"""Deliveries and subscriptions: one robust channel and one consumer per subscription.

Flow control is the channel's prefetch (``basic.qos`` = ``max_in_flight``): the
broker stops sending while that many messages are unacked, so events wait in
RabbitMQ, not in memory. A `mesh.Dispatcher` bounds concurrent handler calls to the
same number even across a reconnect, when handlers of the old channel may still run.

Settling maps onto AMQP 0-9-1 like this (RabbitMQ >= 4.3 counts only *failed*
deliveries in ``x-delivery-count`` and against ``x-delivery-limit``):

* ``ack()`` -> ``basic.ack``;
* ``nack(delay)`` -> ``basic.nack(requeue)`` after ``delay`` seconds, not a failure
  (RetryLater, giving a message back). RabbitMQ has no delayed requeue, so the
  message is held unacked meanwhile and counts against the prefetch;
* a handler that raised or returned without settling -> ``basic.reject(requeue)``,
  a failed delivery;
* cancellation by ``close()`` -> ``basic.nack(requeue)``.

After a reconnect the deliveries of the old channel cannot be settled any more
(their channel is gone): the broker already requeued them and redelivers them,
so a failed settle is logged, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

from mesh import Delivery, DeliveryHandler, Dispatcher, Event, Subscription, codec

log = logging.getLogger("mesh_rabbitmq")

Settle = Literal["ack", "nack", "reject"]
#: bound on broker round trips while closing (the broker may be unreachable)
OP_TIMEOUT = 5.0


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")  # strict: a bad header makes a DecodeError
    return str(value)


def _from_incoming(message: AbstractIncomingMessage, fmt: Any, factory: Any) -> Any:
    """The SDK binding's ``from_rabbitmq`` in one pass over the headers, leaving ``time``
    to the mesh's stdlib parser (the SDK's dateutil ``isoparse`` costs more than the rest)."""
    content_type = message.content_type
    if content_type and content_type.lower().startswith("application/cloudevents"):
        return fmt.read(factory, message.body)   # structured mode
    attributes = {name[3:]: _text(value) for key, value in (message.headers or {}).items()
                  if (name := str(key).lower()).startswith("ce-")}
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return factory(attributes, fmt.read_data(message.body, content_type))


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
        log.info("could not %s a message from %s (%s); RabbitMQ redelivers it",
                 how, message.routing_key, type(exc).__name__)


class RabbitMQDelivery(Delivery):
    """A message from a queue; ``redeliveries`` from ``x-delivery-count`` (quorum
    queues), at least 1 when the broker flags the message as redelivered."""

    __slots__ = ("_message", "_sub")

    def __init__(self, message: AbstractIncomingMessage, sub: RabbitMQSubscription) -> None:
        count = (message.headers or {}).get("x-delivery-count")
        redeliveries = count if isinstance(count, int) and count > 0 else 0
        if message.redelivered and not redeliveries:
            redeliveries = 1
        super().__init__(message.routing_key or "", redeliveries)
        self._message, self._sub = message, sub

    def _decode(self) -> Event:
        return codec.decode(_from_incoming, self._message)

    def raw(self) -> tuple[Mapping[str, str], bytes]:
        headers = {str(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                   for k, v in (self._message.headers or {}).items()}
        if self._message.content_type:
            headers["content-type"] = self._message.content_type
        return headers, bytes(self._message.body)

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


class RabbitMQSubscription(Subscription):
    """A consumer on ``queue`` over its own robust ``channel`` (see module docstring)."""

    def __init__(self, channel: AbstractRobustChannel, queue: AbstractQueue,
                 handler: DeliveryHandler, max_in_flight: int, *, exclusive: bool) -> None:
        self.channel, self.queue, self.exclusive = channel, queue, exclusive
        self._pool: Dispatcher[AbstractIncomingMessage] = Dispatcher(
            handler, max_in_flight, lambda message: RabbitMQDelivery(message, self))
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
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wait):
                    await self.queue.cancel(self._tag)
        await asyncio.gather(*(settle(message, "nack") for message in waiting))
        await self._pool.drain(timeout)
        timers = list(self._timers)
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        wait = 0.05 if self.channel.is_closed else OP_TIMEOUT
        if self.exclusive:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wait):
                    await self.queue.delete(if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):   # also ends aio-pika's restoring of it
            async with asyncio.timeout(wait):
                await self.channel.close()
        if self.on_closed is not None:
            self.on_closed(self)
