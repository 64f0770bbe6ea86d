"""click's exceptions, from wherever the installed typer keeps click: its own copy
(``typer._click``, typer 0.2x) or the click distribution (earlier typer). The CLI catches
them to print its own one-line errors instead of typer's panels."""

from __future__ import annotations

try:
    from typer._click.exceptions import ClickException, NoSuchOption
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - typer before it carried click
    from click.exceptions import (  # type: ignore[assignment, no-redef, unused-ignore]
        ClickException,
        NoSuchOption,
    )
    from click.exceptions import (  # type: ignore[assignment, no-redef, unused-ignore]
        UsageError as ClickUsageError,
    )

__all__ = ["ClickException", "ClickUsageError", "NoSuchOption"]
