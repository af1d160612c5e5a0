"""The ``ppml`` command line.

Conventions every command keeps: ``--help`` everywhere; commands that train or attack take
``--out DIR`` and write ``DIR/report.json`` (resolved config, seed, package versions, per-round
metrics, final metrics and the privacy ledger) and ``DIR/report.md``; an existing report is never
overwritten unless ``--overwrite`` is given; bad input exits with code 2 and one line naming the
parameter and its allowed range.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from .. import __version__
from .._validation import ParameterError

app = typer.Typer(
    name="ppml",
    help="Privacy-preserving machine learning: federated learning, differential privacy, and the attacks that audit them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
out_console = Console()
err_console = Console(stderr=True)


def _user_errors(fn: F) -> F:
    """Turn errors caused by the user's input into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..attacks.base import ThreatModelError
        from ..report import OutputExistsError

        errors: tuple[type[BaseException], ...] = (ParameterError, OutputExistsError, ThreatModelError)
        try:
            from ..data.files import DatasetFormatError, DatasetNotFoundError

            errors += (DatasetNotFoundError, DatasetFormatError)
        except ImportError:  # pragma: no cover
            pass
        try:
            from ..dp.accounting import BudgetExceededError

            errors += (BudgetExceededError,)
        except ImportError:  # pragma: no cover
            pass
        try:
            return fn(*args, **kwargs)
        except errors as err:
            err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"ppml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ppml: train models without pooling data, and measure what they leak."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    warnings.showwarning = show


OutOpt = Annotated[Path, typer.Option("--out", help="Directory for report.json and report.md.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a report already in --out.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@app.command()
@_user_errors
def demo(
    out: OutOpt = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of everything random in the demo.")] = 0,
    vehicles: Annotated[int, typer.Option(help="Vehicles in the synthetic ADAS fleet (>= 20).")] = 500,
    rounds: Annotated[int, typer.Option(help="Federated rounds for FedAvg and DP-FedAvg.")] = 30,
    epsilon: Annotated[
        float, typer.Option(help="Target user-level epsilon of DP-FedAvg (delta = 1e-5).")
    ] = 4.0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Tell the ADAS fleet story: central vs FedAvg vs DP-FedAvg, what each leaks, one table."""
    from ..experiment.demo import run_demo
    from ..report import prepare_out_dir

    prepare_out_dir(out, overwrite=overwrite)  # refuse before spending minutes training
    report = run_demo(vehicles=vehicles, rounds=rounds, epsilon=epsilon, seed=seed, progress=not quiet)
    paths = report.write(out, overwrite=overwrite)
    out_console.print(report.rich_table())
    risk = report.findings.get("central_collection_risk", {})
    if "text" in risk:
        out_console.print(f"Central-collection risk: {risk['text']}")
    out_console.print(f"Wrote {paths['json']} and {paths['markdown']}")


@app.command()
@_user_errors
def run(
    file: Annotated[Path, typer.Argument(help="Experiment file (TOML), e.g. examples/adas_fedavg.toml.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field: key=value, dotted keys for sections (fl.rounds=10)."),
    ] = None,
    out: OutOpt = Path("runs/experiment"),
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder with real datasets (default: $PPML_DATA).")
    ] = None,
    overwrite: OverwriteOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a federated run from the checkpoint in --out.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run an experiment file and write its report (federated runs checkpoint into --out)."""
    from ..experiment.config import load_config
    from ..experiment.runner import run_experiment
    from ..report import Report, prepare_out_dir

    overrides = list(set_ or [])
    if data_dir is not None:
        overrides.append(f"data.data_dir={str(data_dir)!r}")
    cfg = load_config(file, overrides)
    prepare_out_dir(out, overwrite=overwrite)
    summary = run_experiment(
        cfg, progress=not quiet, checkpoint_dir=out / "checkpoint" if cfg.fl else None, resume=resume
    )
    report = Report(
        title=f"ppml run: {cfg.name}",
        runs=(summary,),
        config=cfg.model_dump(mode="json"),
        seed=cfg.seed,
        findings={"experiment_file": {"path": str(file), "overrides": overrides}},
    )
    paths = report.write(out, overwrite=overwrite)
    out_console.print(report.rich_table())
    out_console.print(f"Wrote {paths['json']} and {paths['markdown']}")


@app.command()
@_user_errors
def pate(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Experiment file with a [pate] section (e.g. examples/mnist_pate.toml); optional."
        ),
    ] = None,
    data: Annotated[str | None, typer.Option(help="Dataset name (overrides data.name), e.g. digits.")] = None,
    teachers: Annotated[int | None, typer.Option(help="Number of teachers (pate.n_teachers).")] = None,
    aggregator: Annotated[
        str | None,
        typer.Option(help="lnmax, gnmax, confident_gnmax or interactive_gnmax (pate.aggregator)."),
    ] = None,
    queries: Annotated[int | None, typer.Option(help="Queries to the teachers (pate.n_queries).")] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Budget on the data-independent epsilon (pate.epsilon).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field: key=value, dotted keys (pate.threshold=150)."),
    ] = None,
    out: OutOpt = Path("runs/pate"),
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder with real datasets (default: $PPML_DATA).")
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """PATE: teachers on private data, noisy votes, a student on public data; report accuracy and epsilon."""
    from ..experiment.config import apply_overrides, load_config, parse_config
    from ..experiment.runner import run_experiment
    from ..report import Report, prepare_out_dir

    overrides = list(set_ or [])
    for key, value in (
        ("data.name", data),
        ("pate.n_teachers", teachers),
        ("pate.aggregator", aggregator),
        ("pate.n_queries", queries),
        ("pate.epsilon", epsilon),
    ):
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    if data_dir is not None:
        overrides.append(f"data.data_dir={str(data_dir)!r}")
    if file is not None:
        cfg = load_config(file, overrides)
    else:
        cfg = parse_config(apply_overrides({"name": "pate", "pate": {}}, overrides))
    if cfg.pate is None:
        raise ParameterError(
            f"The experiment file {str(file)!r} has no [pate] section; add one or use 'ppml run'.",
            param="FILE",
        )
    prepare_out_dir(out, overwrite=overwrite)
    summary = run_experiment(cfg, progress=not quiet)
    report = Report(
        title=f"ppml pate: {cfg.name}",
        runs=(summary,),
        config=cfg.model_dump(mode="json"),
        seed=cfg.seed,
        findings={"experiment_file": {"path": None if file is None else str(file), "overrides": overrides}},
    )
    paths = report.write(out, overwrite=overwrite)
    out_console.print(report.rich_table())
    priv = summary.privacy or {}
    released = priv.get("epsilon_data_dependent_released")
    out_console.print(
        f"{summary.description}. Data-dependent epsilon released with smooth sensitivity: "
        f"{'-' if released is None else f'{released:.3g}'}."
    )
    out_console.print(f"Wrote {paths['json']} and {paths['markdown']}")


@app.command()
@_user_errors
def datasets(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder with real datasets (default: $PPML_DATA).")
    ] = None,
) -> None:
    """List the datasets ppml can load, and where each comes from."""
    from rich.table import Table

    from ..data.registry import available_datasets

    infos = available_datasets(data_dir)
    table = Table(title="Datasets", show_lines=False)
    for col in ("name", "kind", "examples (train/test)", "shape", "classes", "available", "origin"):
        table.add_column(col, overflow="fold")
    for info in infos:
        sizes = "/".join("-" if n is None else f"{n:,}" for n in (info.n_train, info.n_test))
        shape = "x".join(str(d) for d in info.input_shape) if info.input_shape else "-"
        status = "yes" if info.available else f"no: {info.reason}"
        table.add_row(info.name, info.kind, sizes, shape, str(info.num_classes or "-"), status, info.origin)
    out_console.print(table)
    where = data_dir or os.environ.get("PPML_DATA")
    out_console.print(
        f"Data directory: {where}"
        if where
        else "No data directory given (--data-dir or PPML_DATA): file datasets are unavailable."
    )


def main() -> None:
    """Entry point of the ``ppml`` script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
