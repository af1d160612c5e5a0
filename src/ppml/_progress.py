"""Progress bars (rich) that cost nothing when switched off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["Ticker", "progress_bar"]


class Ticker(Protocol):
    def __call__(self, advance: float = 1, **fields: Any) -> None: ...


@contextmanager
def progress_bar(description: str, total: float, *, enabled: bool = True) -> Iterator[Ticker]:
    """Yield ``tick(advance=1, **fields)``; fields (e.g. ``acc=0.91``) show beside the bar."""
    if not enabled:
        yield lambda advance=1, **fields: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def tick(advance: float = 1, **fields: Any) -> None:
            info = "  ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()
            )
            if fields:
                progress.update(task, advance=advance, info=info)
            else:
                progress.update(task, advance=advance)

        yield tick
