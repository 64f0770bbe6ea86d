"""The one signature rule every kind of handler follows, checked once at registration.

A handler (``@mesh.on``), a batch handler and a capability handler are all ``async def``
functions taking one argument (the event, the list of events, the request) and
optionally a second one (the context, the contexts). Each kind then reads its own
annotations; this module only holds the shared part, so the three give the same
errors for the same mistakes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mesh.errors import ConfigError


def handler_params(func: Callable[..., Any], label: str, takes: str) -> list[inspect.Parameter]:
    """The parameters of ``func``, which must be an ``async def`` taking one or two
    arguments; otherwise a `ConfigError` naming ``label`` (e.g. ``"handler work"``) and
    saying what it should take (``takes``, e.g. ``"(event) or (event, ctx)"``)."""
    if not inspect.iscoroutinefunction(func):
        raise ConfigError(
            f"{label} must be 'async def' taking {takes} "
            "(run blocking work with asyncio.to_thread inside it)"
        )
    params = list(inspect.signature(func).parameters.values())
    if not 1 <= len(params) <= 2:
        raise ConfigError(f"{label} must take {takes}")
    return params
