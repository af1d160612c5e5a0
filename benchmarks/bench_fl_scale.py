"""Scale: FedAvg over a fleet of 10,000 ADAS vehicles (one client per vehicle) on one machine.

The run happens in a fresh subprocess, so that its peak memory (``resource.getrusage(...).ru_maxrss``,
the largest resident set the process ever had) is its own and not that of benchmarks that ran before
it in the same process. The worker records the clock and the peak after each stage: imports, fleet
generation (:func:`ppml.data.adas.make_fleet`), the supervised dataset and its by-owner partition, and
the federated run (FedAvg, McMahan et al. 2017, on the ``vectorized`` backend).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import table

TITLE = "Scale: FedAvg over 10,000 ADAS vehicles on one machine"

HERE = Path(__file__).resolve().parent
_GIB = 1024.0**3
_TRAIN_HOUR = 2  # rounds run at 2 a.m., one simulated day after another: parked, charging cars train


def _maxrss() -> float:
    """Peak resident set size of this process so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    t_all = time.perf_counter()

    def stage(name: str, t0: float, **extra: Any) -> None:
        stages.append({"stage": name, "seconds": time.perf_counter() - t0, "peak_rss": _maxrss(), **extra})

    t0 = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ppml.data import make_partitioner
    from ppml.data.adas import make_fleet
    from ppml.fl import FedAvg, run_federated
    from ppml.models import build_model
    from ppml.train import evaluate

    stage("imports (python, torch, ppml)", t0)

    t0 = time.perf_counter()
    fleet = make_fleet(spec["vehicles"], seed=spec["seed"])
    stage(
        f"make_fleet({spec['vehicles']:,}, seed={spec['seed']})",
        t0,
        records=fleet.n_records,
        nbytes=fleet.records.nbytes,
    )

    t0 = time.perf_counter()
    data = fleet.to_dataset()
    clients = make_partitioner("by_owner").partition(data, None, spec["seed"])
    owners = np.array([c.owner for c in clients], dtype=np.int64)
    test_fleet = make_fleet(spec["test_vehicles"], seed=spec["seed"] + 1)
    test = test_fleet.to_dataset()
    stage("dataset, by-owner partition, held-out test fleet", t0, clients=len(clients))

    t0 = time.perf_counter()
    model = build_model(spec["model"], data.input_shape, data.num_classes, hidden=(64, 64), seed=spec["seed"])
    before = evaluate(model, test.X, test.y)["accuracy"]
    strategy = FedAvg(
        fraction_fit=spec["per_round"] / len(clients),
        local_epochs=spec["local_epochs"],
        batch_size=spec["batch_size"],
        lr=spec["lr"],
    )

    def availability(r: int) -> np.ndarray:
        return fleet.availability[owners, (r - 1) % 7, _TRAIN_HOUR]

    result = run_federated(
        model,
        clients,
        strategy,
        rounds=spec["rounds"],
        seed=spec["seed"],
        backend="vectorized",
        availability=availability,
        test=(test.X, test.y),
        eval_every=spec["rounds"],
    )
    hist = result.history
    stage(
        f"{spec['rounds']} FedAvg rounds, vectorized",
        t0,
        updates=int(sum(h["clients"] for h in hist)),
        examples=int(sum(h.get("examples", 0) for h in hist)),
        available=[int(h["available"]) for h in hist],
        accuracy_before=float(before),
        accuracy_after=float(hist[-1]["test_accuracy"]),
        majority=float(np.bincount(test.y).max() / len(test.y)),
        round_seconds=[float(h["seconds"]) for h in hist],
    )
    return {"stages": stages, "total_s": time.perf_counter() - t_all, "peak_rss": _maxrss()}


def _spec(quick: bool) -> dict[str, Any]:
    return {
        "vehicles": 1_000 if quick else 10_000,
        "test_vehicles": 200 if quick else 1_000,
        "per_round": 100,
        "rounds": 3 if quick else 20,
        "model": "mlp",
        "local_epochs": 1,
        "batch_size": 16,
        "lr": 0.1,
        "seed": 0,
    }


def run(quick: bool = False) -> str:
    spec = _spec(quick)
    with tempfile.TemporaryDirectory(prefix="ppml_fl_scale_") as d:
        out = Path(d) / "scale.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, str(HERE / "bench_fl_scale.py"), "--worker", json.dumps(spec), str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"scale worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
        res = json.loads(out.read_text())
    rows = []
    for s in res["stages"]:
        rows.append([s["stage"], s["seconds"], s["peak_rss"] / _GIB])
    fleet, train = res["stages"][1], res["stages"][-1]
    peak = res["peak_rss"] / _GIB
    rounds = spec["rounds"]
    steady = train["round_seconds"]
    avail = train["available"]
    lines = [
        f"{spec['vehicles']:,} vehicles of the synthetic ADAS fleet (`make_fleet({spec['vehicles']:,}, seed=0)`, "
        f"28 days, {fleet['records']:,} records, {fleet['nbytes'] / 1e6:,.0f} MB of logs), one client per "
        f"vehicle (by owner), {spec['per_round']} sampled per round among the vehicles parked and connected at "
        f"2 a.m. of that round's simulated day ({min(avail):,}-{max(avail):,} of them), {rounds} rounds of "
        f"FedAvg (E={spec['local_epochs']}, B={spec['batch_size']}, lr={spec['lr']}), MLP 64-64 on the "
        "sensor features, `backend='vectorized'`, one torch thread. Measured in a fresh subprocess; "
        "'peak RSS' is `ru_maxrss` after each stage (it only grows), so each row's peak includes the stages "
        "before it.",
        "",
        table(["stage", "seconds", "peak RSS GiB (so far)"], rows),
        "",
        table(
            ["measure", "value"],
            [
                ["peak memory of the whole run (GiB)", f"{peak:.2f}"],
                ["under the 4 GiB goal", "yes" if peak < 4.0 else "no"],
                ["wall time of the subprocess, s", f"{wall:.1f}"],
                ["fleet generation, s", f"{fleet['seconds']:.1f}"],
                [
                    "fleet generation, extra peak GiB",
                    f"{(fleet['peak_rss'] - res['stages'][0]['peak_rss']) / _GIB:.2f}",
                ],
                ["client updates", f"{train['updates']:,}"],
                ["training examples processed", f"{train['examples']:,}"],
                ["median round, s", f"{sorted(steady)[len(steady) // 2]:.3f}"],
                ["client updates/s (whole federated run)", f"{train['updates'] / train['seconds']:.0f}"],
                [
                    "held-out accuracy before / after (majority class)",
                    f"{train['accuracy_before']:.3f} / {train['accuracy_after']:.3f} ({train['majority']:.3f})",
                ],
            ],
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        i = sys.argv.index("--worker")
        result = _worker(json.loads(sys.argv[i + 1]))
        Path(sys.argv[i + 2]).write_text(json.dumps(result))
    else:
        print(run(quick="--quick" in sys.argv))
