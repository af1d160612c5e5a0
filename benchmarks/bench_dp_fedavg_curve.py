"""User-level DP-FedAvg on the ADAS fleet: test accuracy against epsilon (the demo's setting)."""

from __future__ import annotations

import time
from pathlib import Path

from _common import table
from ppml.experiment.config import parse_config
from ppml.experiment.demo import demo_configs
from ppml.experiment.runner import prepare_data, run_experiment

TITLE = "DP-FedAvg accuracy against epsilon (ADAS fleet)"
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "dp_fedavg_adas.png"


def run(quick: bool = False) -> str:
    vehicles, rounds = (100, 5) if quick else (500, 30)
    epsilons = [1.0, 8.0] if quick else [0.5, 1.0, 2.0, 4.0, 8.0]
    cfgs = demo_configs(vehicles=vehicles, rounds=rounds, epsilon=1.0, seed=0)
    data = prepare_data(cfgs["central"])
    rows, points = [], []
    for eps in [*epsilons, None]:
        raw = cfgs["dp-fedavg" if eps is not None else "fedavg"].model_dump()
        raw["attack"]["membership"] = False
        if eps is not None:
            raw["privacy"]["epsilon"] = eps
        t0 = time.perf_counter()
        summary = run_experiment(parse_config(raw), data)
        acc = summary.utility["test_accuracy"]
        if summary.privacy is None:
            rows.append(["none (FedAvg)", "-", "inf", acc, time.perf_counter() - t0])
        else:
            p = summary.privacy
            rows.append([eps, p["noise_multiplier"], p["epsilon"], acc, time.perf_counter() - t0])
            points.append((p["epsilon"], acc))
    nondp = rows[-1][3]
    if not quick:
        _plot(points, nondp)
    return "\n".join(
        [
            f"{vehicles} vehicles (one client each, 80% train), {rounds} rounds, Poisson client sampling q = 0.2, "
            "clip norm 1.0, delta = 1e-5, RDP accountant; the noise multiplier is calibrated to each target and "
            "the epsilon column is the accountant's value over the rounds that ran. Same model, data and seed as "
            "`ppml demo`.",
            "",
            table(["target epsilon", "noise multiplier", "epsilon spent", "test accuracy", "seconds"], rows),
            "",
            "" if quick else f"![DP-FedAvg accuracy against epsilon](figures/{FIGURE.name})",
        ]
    )


def _plot(points: list[tuple[float, float]], nondp: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    eps, acc = zip(*points, strict=True)
    ax.plot(eps, acc, "o-", label="DP-FedAvg (user level)")
    ax.axhline(nondp, color="grey", linestyle="--", label="FedAvg, no DP")
    ax.set_xscale("log")
    ax.set_xticks(list(eps), [f"{e:.2f}" for e in eps])
    ax.minorticks_off()
    ax.set_xlabel("epsilon (delta = 1e-5)")
    ax.set_ylabel("test accuracy (held-out vehicles)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
