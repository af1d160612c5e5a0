"""Federated simulation speed: the same FedAvg workload with ppml's sequential and vectorized backends,
beside the compute floor (the same samples trained as one central model)."""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import table
from ppml.data import load_dataset, make_partitioner
from ppml.fl import FedAvg, run_federated
from ppml.models import build_model
from ppml.train import TrainConfig, train_epochs

TITLE = "Federated simulation speed (FedAvg, MLP 64-64-10 on digits, E=1, B=10)"


def _workload(num_clients: int, per_round: int, rounds: int, backend: str, seed: int = 0) -> dict[str, float]:
    train = load_dataset("digits", seed=seed).train
    # More clients than digits examples allow: tile the data so every client holds at least 10 examples.
    reps = max(1, int(np.ceil(num_clients * 10 / len(train))))
    if reps > 1:
        train = train.subset(np.tile(np.arange(len(train)), reps))
    clients = make_partitioner("iid").partition(train, num_clients, seed)
    model = build_model("mlp", train.input_shape, 10, hidden=(64, 64), seed=seed)
    strategy = FedAvg(fraction_fit=per_round / num_clients, local_epochs=1, batch_size=10, lr=0.05)
    first: list[float] = []
    t0 = time.perf_counter()
    result = run_federated(
        model,
        clients,
        strategy,
        rounds=rounds,
        seed=seed,
        backend=backend,
        on_round=lambda e: first.append(time.perf_counter() - t0) if not first else None,
    )
    total = time.perf_counter() - t0
    updates = float(result.participation.sum())
    examples = float(sum(len(clients[i]) * c for i, c in enumerate(result.participation)))
    return {
        "updates_per_s": updates / total,
        "first_round_s": first[0],
        "examples": examples,
        "seconds": total,
    }


def _central_floor(examples: int, seed: int = 0) -> float:
    """Examples per second of plain SGD (B=10) on one central model: the compute floor."""
    train = load_dataset("digits", seed=seed).train
    model = build_model("mlp", train.input_shape, 10, hidden=(64, 64), seed=seed)
    epochs = max(1, int(round(examples / len(train))))
    t0 = time.perf_counter()
    train_epochs(model, train.X, train.y, TrainConfig(epochs, 10, 0.05), np.random.default_rng(seed))
    return epochs * len(train) / (time.perf_counter() - t0)


def run(quick: bool = False) -> str:
    torch.set_num_threads(1)
    settings = [
        (100, 100, 3 if quick else 10),
        (1000, 10, 5 if quick else 30),
        (1000, 1000, 1 if quick else 3),
    ]
    rows = []
    for k, m, rounds in settings:
        seq = _workload(k, m, rounds, "sequential")
        vec = _workload(k, m, rounds, "vectorized")
        floor = _central_floor(int(vec["examples"]))
        vec_examples_per_s = vec["examples"] / vec["seconds"]
        rows.append(
            [
                f"{k} clients, {m} per round, {rounds} rounds",
                seq["updates_per_s"],
                vec["updates_per_s"],
                vec["updates_per_s"] / seq["updates_per_s"],
                f"{seq['first_round_s']:.2f} / {vec['first_round_s']:.2f}",
                vec_examples_per_s / floor,
            ]
        )
    head = [
        "workload",
        "sequential updates/s",
        "vectorized updates/s",
        "vectorized / sequential",
        "first round s (seq / vec)",
        "vectorized / central floor (examples/s)",
    ]
    return "\n".join(
        [
            "One torch thread (small models run several times slower with 2 threads on this 2-core machine). "
            "Each client holds about 10-18 digits examples (IID). 'Central floor' trains the same number of "
            "examples as one central model with B=10: the per-example compute cost with no federation at all.",
            "",
            table(head, rows),
            "",
            "Flower's simulation engine on the same workload is not measured yet (it needs its own virtual "
            "environment with Ray); before the project began it managed about 100-200 client updates per second "
            "here with a 10-115 s first round.",
        ]
    )
