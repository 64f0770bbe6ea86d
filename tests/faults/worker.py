"""A worker process for the fault suite: one Mesh with one group handler, killed at will.

Run as ``python tests/faults/worker.py CONFIG_JSON``. CONFIG_JSON holds the transport
URL and options, the channel, the group, the output file and how the handler behaves.
Every line the worker writes to the output file is flushed at once, so a SIGKILL
loses nothing already written:

* ``R <time>`` once subscribed (ready);
* ``S <event id> <time>`` when the handler starts an event, ``D <event id> <time>``
  when it finished (the ack follows);
* an event whose data has ``"poison": true`` makes the process exit at once
  (``os._exit``), as a handler that crashes its interpreter would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any, TextIO

from mesh import Context, Event, Mesh


async def main(config: dict[str, Any], out: TextIO) -> None:
    def line(text: str) -> None:
        out.write(f"{text} {time.time():.6f}\n")
        out.flush()

    mesh = Mesh(
        config["url"],
        transport_options=config.get("options", {}),
        source="/faults",
        capabilities={"enabled": False},
        shutdown_timeout=1.0,
        retry={
            "max_attempts": 2,
            "initial_backoff": 0.01,
            "max_backoff": 0.05,
            "max_deliveries": config.get("max_deliveries", 10),
        },
        dead_letter_channel=config.get("dead_letter_channel", "mesh.deadletter"),
    )
    work = float(config.get("work", 0.0))

    @mesh.on(
        config["channel"], group=config["group"], max_in_flight=int(config.get("max_in_flight", 8))
    )
    async def handle(event: Event, ctx: Context) -> None:
        line(f"S {event.id}")
        if isinstance(event.data, dict) and event.data.get("poison"):
            os._exit(137)  # the handler takes its process down
        if work:
            await asyncio.sleep(work)
        line(f"D {event.id}")

    async with mesh:
        line("R -")
        await asyncio.Event().wait()


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    with open(settings["out"], "a", buffering=1, encoding="utf-8") as log_file:
        asyncio.run(main(settings, log_file))
