"""The Flower side of the simulation-speed benchmark (run with the Flower environment's python).

``bench_fl_speed.py`` writes the clients' data to an ``.npz`` file (the same IID shards of digits that
ppml's backends train) and runs this script in a subprocess with ``.venv-flower/bin/python`` (or
``$PPML_FLOWER_PYTHON``): Flower cannot live in ppml's environment (it pins older typer and rich). The
script imports neither ppml nor anything outside the Flower environment.

The workload is FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS) exactly as ppml runs it: MLP 64-64-10 (ReLU), cross-entropy, plain SGD with
learning rate ``--lr``, ``--epochs`` local epochs of mini-batches of ``--batch-size`` over a fresh
permutation, size-weighted averaging of the clients' models. It runs on Flower's Simulation Runtime
(``flwr.simulation.run_simulation``, a ``ClientApp`` and a ``ServerApp`` with the message-API
``FedAvg``, Ray backend, client resources 1 CPU, one torch thread in every client). Federated
evaluation is off (``fraction_evaluate=0``), as in ppml's rows; the server-side ``evaluate_fn``, which
Flower calls before the first round and after every round, only records the time.

Output: one JSON object written to ``--out`` with ``start_s`` (engine start: from the call to
``run_simulation`` until the server app is ready), ``round_end_s`` (seconds from that call to the end
of every round), ``updates`` per round and ``final_checksum`` (sum of the final parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np


def _mlp(in_features: int, num_classes: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="npz with X, y and client offsets")
    parser.add_argument("--per-round", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    torch.set_num_threads(1)
    with np.load(args.data) as f:
        num_clients = int(len(f["offsets"]) - 1)
        in_features = int(np.prod(f["X"].shape[1:]))
        num_classes = int(f["num_classes"])
    data_path = os.path.abspath(args.data)
    epochs, batch_size, lr, seed = args.epochs, args.batch_size, args.lr, args.seed
    cache: dict[str, Any] = {}

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        # Runs in a Ray actor: load the shards once per actor process, one torch thread.
        torch.set_num_threads(1)
        if "X" not in cache:
            with np.load(data_path) as f:
                cache["X"] = torch.from_numpy(f["X"].reshape(len(f["X"]), -1).astype(np.float32))
                cache["y"] = torch.from_numpy(f["y"].astype(np.int64))
                cache["offsets"] = f["offsets"].copy()
        pid = int(context.node_config["partition-id"])
        lo, hi = int(cache["offsets"][pid]), int(cache["offsets"][pid + 1])
        X, y = cache["X"][lo:hi], cache["y"][lo:hi]
        model = _mlp(in_features, num_classes)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        rnd = int(msg.content["config"]["server-round"])
        rng = np.random.default_rng([seed, rnd, pid])
        n = hi - lo
        total = 0.0
        for _ in range(epochs):
            perm = torch.from_numpy(rng.permutation(n))
            total = 0.0
            for s in range(0, n, batch_size):
                idx = perm[s : s + batch_size]
                loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"train_loss": total / max(n, 1), "num-examples": n}),
            }
        )
        return Message(content=content, reply_to=msg)

    t0 = time.perf_counter()
    marks: dict[int, float] = {}
    sampled: dict[int, int] = {}
    final: dict[str, float] = {}

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            replies = list(replies)
            sampled[server_round] = sum(1 for r in replies if not r.has_error())
            return super().aggregate_train(server_round, replies)

    server_app = ServerApp()

    @server_app.main()
    def server_main(grid: Grid, context: Context) -> None:
        torch.manual_seed(seed)
        model = _mlp(in_features, num_classes)

        def mark(server_round: int, arrays: ArrayRecord) -> None:
            marks[server_round] = time.perf_counter() - t0
            if server_round == args.rounds:
                state = arrays.to_torch_state_dict()
                final["checksum"] = float(sum(float(v.double().sum()) for v in state.values()))
            return None

        strategy = TimedFedAvg(
            fraction_train=args.per_round / num_clients,
            fraction_evaluate=0.0,
            min_train_nodes=args.per_round,
            min_available_nodes=num_clients,
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=args.rounds,
            evaluate_fn=mark,
        )

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"log_to_driver": False},
        },
    )
    total_s = time.perf_counter() - t0
    result = {
        "flwr_version": __import__("flwr").__version__,
        "num_clients": num_clients,
        "start_s": marks.get(0, float("nan")),
        "round_end_s": [marks[r] for r in sorted(marks) if r > 0],
        "updates": [sampled[r] for r in sorted(sampled)],
        "total_s": total_s,
        "final_checksum": final.get("checksum", float("nan")),
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
