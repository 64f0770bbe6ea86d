"""``mesh run APP``: import an app and run its Mesh until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mesh.app import Mesh
from mesh.cli.app import (
    EXIT_ERROR,
    EXIT_OK,
    AppArgument,
    ConfigOption,
    LogFormatOption,
    LogLevelOption,
    TransportOption,
    UsageError,
    app,
    common,
)
from mesh.cli.loading import import_app, prepare_environment
from mesh.cli.output import say

if TYPE_CHECKING:
    from mesh.metrics import Metrics


async def run_app(app: Mesh, on_ready: Callable[[], None] | None = None) -> None:
    """Start ``app``, report readiness, then ``app.run()`` until SIGINT/SIGTERM.

    Starting first (``start`` is idempotent, so ``run`` does not start twice) lets the
    CLI say "ready" only once every handler is subscribed.
    """
    try:
        await app.start()
        if on_ready is not None:
            on_ready()
        await app.run()
    finally:
        await app.stop()


def run_bounded(main: Coroutine[Any, Any, Any], grace: float = 2.0) -> Any:
    """``asyncio.run(main)``, except that tasks still alive when ``main`` returned get
    ``grace`` seconds after their cancellation instead of forever: `Mesh.stop` abandons
    a handler that ignores cancellation (and says so), and ``asyncio.run`` would then
    wait for it at exit, so ``mesh run`` would never end."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@app.command(
    "run",
    short_help="run an app until Ctrl-C",
    help="Import an app and run its Mesh until Ctrl-C or SIGTERM; in-flight handlers get "
    "shutdown_timeout seconds to finish.\n\n--transport and --config reach the app "
    "through MESH_* variables set before the import, so the app must not pass a "
    "transport to Mesh() itself.",
)
def run_command(
    ctx: typer.Context,
    target: AppArgument,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            min=0,
            max=65535,
            help="serve Prometheus /metrics on PORT while the app runs (needs the "
            "prometheus extra; 0: any free port)",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="the address the metrics server binds")
    ] = "0.0.0.0",
) -> int:
    options = common(ctx, transport, config, log_level, default_level="info", log_format=log_format)
    expected = prepare_environment(options)
    mesh = import_app(target)
    if mesh is None:
        return EXIT_ERROR
    if (options.transport or options.config) and mesh.config.transport != expected.transport:
        raise UsageError(
            f"{target} builds its Mesh with an explicit transport "
            f"({mesh.config.redacted_transport}), which outranks --transport/--config; drop "
            "the argument (use Mesh() or Mesh.from_config()) so the command line can choose"
        )
    metrics: Metrics | None = None
    if metrics_port is not None:
        from mesh.metrics import Metrics  # a ConfigError naming the extra if missing

        served = [m for m in mesh.middleware if isinstance(m, Metrics) and m.port is not None]
        metrics = served[0] if served else Metrics(port=metrics_port, host=metrics_host)
        if not served:
            mesh.use(metrics)

    def ready() -> None:
        served = "" if metrics is None else f", metrics on port {metrics.port}"
        say(
            f"running {target} on {mesh.config.redacted_transport} with "
            f"{len(mesh.handlers)} handler(s){served}; press Ctrl-C to stop",
            label="mesh:",
            style="bold green",
        )

    run_bounded(run_app(mesh, ready))
    say("stopped", label="mesh:", style="bold")
    return EXIT_OK
