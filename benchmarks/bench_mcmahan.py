"""McMahan et al. 2017, Table 2 style: communication rounds for FedSGD and FedAvg to reach a target test
accuracy on MNIST with 100 clients (IID and pathological non-IID shards), C = 0.1, the 2NN model."""

from __future__ import annotations

import time
from typing import Any

import torch

from _common import find_data_dir, table
from ppml.data import load_dataset, make_partitioner
from ppml.fl import FedAvg, run_federated
from ppml.models import build_model

TITLE = "McMahan et al. 2017 reproduction (MNIST 2NN, 100 clients, C=0.1): rounds to 97% test accuracy"

TARGET = 0.97
NUM_CLIENTS = 100
FRACTION = 0.1
SEED = 0

# (label, E, B, lr, eval_every, full cap, quick cap). Learning rates are fixed, not tuned per setting as in
# the paper: FedSGD full batch 0.5 (1.0 was slower over 150 rounds, 2.0 diverged), FedAvg B=10 0.1.
ROWS = [
    ("FedSGD", 1, None, 0.5, 2, {"iid": 800, "shards": 800}, 20),
    ("FedAvg", 1, 10, 0.1, 1, {"iid": 200, "shards": 800}, 5),
    ("FedAvg", 5, 10, 0.1, 1, {"iid": 60, "shards": 200}, 2),
]
PARTITIONS = [("IID (600 random examples each)", "iid"), ("non-IID (2 label-sorted shards of 300)", "shards")]


class _Reached(Exception):
    """Raised from on_round to stop a run once the target accuracy is reached."""


def _row(
    clients: Any, test: Any, e: int, b: int | None, lr: float, eval_every: int, cap: int
) -> dict[str, Any]:
    model = build_model("mlp", (1, 28, 28), 10, hidden=(200, 200), seed=SEED)
    strategy = FedAvg(fraction_fit=FRACTION, local_epochs=e, batch_size=b, lr=lr)
    best = {"acc": 0.0, "round": 0, "reached": None}

    def on_round(entry: dict[str, Any]) -> None:
        acc = entry.get("test_accuracy")
        if acc is None:
            return
        if acc > best["acc"]:
            best["acc"], best["round"] = float(acc), int(entry["round"])
        if acc >= TARGET:
            best["reached"] = int(entry["round"])
            raise _Reached

    t0 = time.perf_counter()
    try:
        run_federated(
            model,
            clients,
            strategy,
            rounds=cap,
            seed=SEED,
            test=test,
            eval_every=eval_every,
            backend="vectorized",
            on_round=on_round,
        )
    except _Reached:
        pass
    return {**best, "seconds": time.perf_counter() - t0}


PAPER_ROUNDS = {
    ("FedAvg", 1, 10, "iid"): "87 (Table 1)",
    ("FedAvg", 1, 10, "shards"): "664 (Table 1)",
    ("FedSGD", 1, None, "iid"): "1474 (Table 1, B = inf)",
    ("FedSGD", 1, None, "shards"): "1796 (Table 1, B = inf)",
}
"""Rounds to 97% reported by McMahan et al. 2017 for the 2NN at C = 0.1 (keys: algorithm, E, B, partition)."""


def row_cells(
    part_label: str,
    name: str,
    e: int,
    b: int | None,
    lr: float | str,
    cap: int,
    every: int,
    res: dict[str, Any],
    paper: str,
) -> list[Any]:
    """The table cells of one run: partition, algorithm, lr, cap, evaluation, rounds, best, paper, seconds."""
    return [
        part_label,
        f"{name} (E={e}, B={'inf' if b is None else b})",
        lr,
        cap,
        f"every {every}" if every > 1 else "every round",
        str(res["reached"]) if res["reached"] is not None else f"> {cap}",
        f"{100 * res['acc']:.2f}% (round {res['round']})",
        paper,
        f"{res['seconds']:.0f}",
    ]


def run(quick: bool = False) -> str:
    torch.set_num_threads(1)
    data_dir = find_data_dir("mnist")
    if data_dir is None:
        return (
            "_Skipped: the MNIST files were not found (looked in $PPML_DATA and ../shared/data relative to the "
            "repository root)._"
        )
    splits = load_dataset("mnist", data_dir=data_dir)
    train, test = splits.train, splits.test
    test_xy = (test.X, test.y)
    rows = []
    for part_label, part in PARTITIONS:
        partitioner = (
            make_partitioner("iid") if part == "iid" else make_partitioner("shards", shards_per_client=2)
        )
        clients = partitioner.partition(train, NUM_CLIENTS, SEED)
        for name, e, b, lr, eval_every, caps, quick_cap in ROWS:
            cap = quick_cap if quick else caps[part]
            res = _row(clients, test_xy, e, b, lr, eval_every, cap)
            paper = PAPER_ROUNDS.get((name, e, b, part), "not checked here")
            rows.append(row_cells(part_label, name, e, b, lr, cap, eval_every, res, paper))
    head = [
        "partition",
        "algorithm",
        "client lr",
        "round cap",
        "test evaluation",
        f"rounds to {100 * TARGET:.0f}%",
        "best test accuracy (round)",
        "paper's rounds (C = 0.1)",
        "seconds",
    ]
    notes = [
        "MNIST (60k train / 10k test), 100 clients, 10 sampled per round (C = 0.1), the paper's 2NN (MLP "
        "784-200-200-10), seed 0, vectorized backend, one torch thread. A run stops at the first evaluation "
        "at or above the target; otherwise at its round cap, and the row shows '> cap' with the best "
        "accuracy reached. FedSGD (B = inf) is evaluated every 2 rounds, so its round count is rounded up "
        "to an even number. Client learning rates are fixed per algorithm (FedSGD 0.5, FedAvg B=10 0.1), "
        "not tuned per setting as in the paper, so absolute round counts are not comparable one-to-one.",
        "",
        table(head, rows),
        "",
        "Paper's rounds: McMahan et al. 2017, Table 1 (2NN, E = 1, C = 0.1; B = 10: 87 IID, 664 pathological "
        "non-IID; B = inf, i.e. FedSGD: 1474 IID, 1796 non-IID), read in a text copy of arXiv:1602.05629v3 and "
        "cross-checked against an independent reproduction's list; the E = 5 cells (the paper's Table 4) could "
        "not be read here. The paper tuned the learning rate per "
        "setting and averaged over runs, so compare ratios, not single counts: the claim is that FedAvg (many "
        "local steps per round, B = 10) needs an order of magnitude fewer rounds than FedSGD "
        "(the paper reports 10-100x). On the pathological non-IID split the paper's FedAvg (E = 1) needs 664 "
        "rounds; a row that stops at its cap shows '> cap'.",
        "",
        "The paper's CNN (target 99%) is in the next section (bench_mcmahan_cnn).",
    ]
    if quick:
        notes.insert(0, "_Quick mode: tiny round caps (a smoke test); the rows do not reach the target._\n")
    return "\n".join(notes)
