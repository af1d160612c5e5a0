"""The ADAS demo at its default settings: the three ways to train, side by side, in one run."""

from __future__ import annotations

import time

from _common import table
from ppml.experiment.demo import run_demo

TITLE = "ADAS fleet demo (`ppml demo` defaults)"


def run(quick: bool = False) -> str:
    vehicles, rounds = (100, 5) if quick else (500, 30)
    t0 = time.perf_counter()
    report = run_demo(vehicles=vehicles, rounds=rounds, epsilon=4.0, seed=0, progress=False)
    total = time.perf_counter() - t0
    rows = [list(r) for r in report.rows()]
    risk = report.findings["central_collection_risk"]
    text = [
        f"{vehicles} vehicles (80% train / 20% held-out vehicles), {rounds} rounds, seed 0, 1 torch thread; "
        f"the whole demo took {total:.0f} s.",
        "",
        table(report.COLUMNS, rows),
        "",
        f"Central-collection risk: {risk['text']}",
        "",
        "Membership inference is the loss-threshold attack (Yeom et al. 2018): 'MIA AUC' and 'TPR@1%FPR' "
        "on 2,000 records of training vehicles against 2,000 records of held-out vehicles; 'AUC/owner' "
        "scores each vehicle by the mean loss of its records (every training vehicle against every "
        "held-out one: was this car in training?), the unit that user-level DP-FedAvg protects. "
        + "; ".join(_cis(report))
        + ". Epsilon is user-level (one vehicle), from dp-accounting's RDP accountant for Poisson sampling "
        "at the logged rate, noise multiplier and rounds.",
    ]
    return "\n".join(text)


def _cis(report) -> list[str]:
    """The per-owner AUCs with their 95% bootstrap intervals, as the report holds them."""
    out = []
    for r in report.runs:
        for a in r.attacks:
            if a.get("attack", "").endswith("(per owner)"):
                m = a["metrics"]
                out.append(
                    f"{r.name} AUC/owner {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]"
                )
    return out
