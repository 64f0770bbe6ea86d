"""Two agents, one event each way, on the in-process memory transport: python examples/hello.py"""

import asyncio

from mesh import Context, Event, Mesh

alice = Mesh("memory://hello", source="/alice")  # memory://NAME: one broker per process
bob = Mesh("memory://hello", source="/bob")  # the same code runs on nats://, kafka://, amqp://
answered = asyncio.Event()


@bob.on("greeting.sent")
async def greet_back(event: Event, ctx: Context) -> None:
    print(f"bob got {event.data['text']!r} from {event.source}")
    await ctx.emit("greeting.returned", {"text": "hello alice"})  # correlated with the greeting


@alice.on("greeting.returned")
async def read_reply(event: Event) -> None:
    print(f"alice got {event.data['text']!r} from {event.source} (reply to {event.causationid})")
    answered.set()


async def main() -> None:
    async with alice, bob:  # start both (connect, subscribe); stop both at the end
        greeting = await alice.emit("greeting.sent", {"text": "hello bob"})
        print(f"alice sent {greeting.id}")
        await asyncio.wait_for(answered.wait(), timeout=5)


if __name__ == "__main__":
    asyncio.run(main())
