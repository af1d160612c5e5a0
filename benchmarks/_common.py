"""Shared helpers for the benchmarks: machine facts, data location, timing, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()} logical CPUs ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def with_threads(fn: Callable[..., Any], threads: int) -> Callable[..., Any]:
    """``fn`` run with ``threads`` torch threads, the benchmarks' default of one restored afterwards (so
    that methods taking turns in one process each get their own thread count)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        torch.set_num_threads(threads)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(1)

    return call


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def find_data_dir(name: str = "mnist") -> Path | None:
    """The data directory holding ``name/``: ``$PPML_DATA`` first, then ``../shared/data`` beside the
    repository; ``None`` when neither has it (the benchmark then says so or uses bundled data)."""
    for candidate in (
        os.environ.get("PPML_DATA"),
        str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    ):
        if candidate and (Path(candidate) / name).is_dir():
            return Path(candidate)
    return None
