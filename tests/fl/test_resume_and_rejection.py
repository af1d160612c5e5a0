import logging

import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.dp.accounting import PrivacyAccountant
from ppml.fl import DPFedAvg, FedAdam, FedAvg, Scaffold, run_federated
from ppml.fl.strategy import ClientResult
from ppml.models import build_model, get_flat


def _clients(k=8, seed=0):
    rng = np.random.default_rng(seed)
    n = 30 * k
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 5)) + y[:, None]).astype(np.float32)
    ds = Dataset(X=X, y=y.astype(np.int64), name="toy", num_classes=3)
    return [ClientData(i, np.arange(30 * i, 30 * (i + 1)), ds) for i in range(k)]


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("make", ["fedadam", "dp-fedavg", "scaffold", "dp-fedavg-adaptive"])
def test_resume_after_a_crash_gives_the_uninterrupted_model(tmp_path, make):
    clients = _clients()

    def strategy():
        if make == "fedadam":
            return FedAdam(fraction_fit=0.5, batch_size=5, lr=0.1)
        if make == "scaffold":  # per-client control variates must survive the checkpoint
            return Scaffold(fraction_fit=0.5, batch_size=5, lr=0.1)
        adaptive = {"target_quantile": 0.5, "clipped_count_stddev": 2.0} if make.endswith("adaptive") else {}
        return DPFedAvg(
            FedAvg(fraction_fit=0.5, batch_size=5), 1.0, 1.0, PrivacyAccountant("rdp", 1e-3), **adaptive
        )

    def model():
        return build_model("mlp", (5,), 3, hidden=(8,), seed=0)

    full_strategy = strategy()
    full = run_federated(model(), clients, full_strategy, rounds=6, seed=3)

    def crash_at_4(entry):
        if entry["round"] == 4:
            raise Crash

    with pytest.raises(Crash):
        run_federated(
            model(),
            clients,
            strategy(),
            rounds=6,
            seed=3,
            checkpoint_dir=tmp_path,
            checkpoint_every=3,
            on_round=crash_at_4,
        )
    resumed_strategy = strategy()
    resumed = run_federated(
        model(), clients, resumed_strategy, rounds=6, seed=3, checkpoint_dir=tmp_path, resume=True
    )
    assert torch.equal(get_flat(resumed.model), get_flat(full.model))
    assert [h["round"] for h in resumed.history] == list(range(1, 7))
    assert np.array_equal(resumed.participation, full.participation)
    if make == "scaffold":
        assert resumed_strategy.client_controls_.keys() == full_strategy.client_controls_.keys()
        assert torch.equal(resumed_strategy.server_control_, full_strategy.server_control_)
    if make.startswith("dp-fedavg"):
        assert resumed_strategy.clip_norm_ == full_strategy.clip_norm_
        assert resumed_strategy.accountant.epsilon() == pytest.approx(full_strategy.accountant.epsilon())
        assert sum(e.count for e in resumed_strategy.accountant.ledger) == 6


@pytest.mark.parametrize("changed", [{"seed": 2}, {"seed": 1, "dropout": 0.2}])
def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, changed):
    clients = _clients()
    run_federated(
        build_model("logistic", (5,), 3), clients, FedAvg(0.5), rounds=2, seed=1, checkpoint_dir=tmp_path
    )
    with pytest.raises(ParameterError, match="different run"):
        run_federated(
            build_model("logistic", (5,), 3),
            clients,
            FedAvg(0.5),
            rounds=4,
            checkpoint_dir=tmp_path,
            resume=True,
            **changed,
        )
    with pytest.raises(ParameterError, match="no checkpoint"):
        run_federated(
            build_model("logistic", (5,), 3),
            clients,
            FedAvg(0.5),
            rounds=2,
            seed=1,
            checkpoint_dir=tmp_path / "x",
            resume=True,
        )


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda u: u.update.clone().fill_(float("nan")), "non-finite"),
        (lambda u: torch.full_like(u.update, float("inf")), "non-finite"),
        (lambda u: u.update[:-1], "shape"),
        (lambda u: u.update.double(), "dtype"),
        (lambda u: u.update * 1e6, "norm"),
    ],
)
def test_malformed_updates_are_rejected_logged_and_the_round_goes_on(corrupt, reason, caplog):
    clients = _clients()

    def bad_client_3(r, res: ClientResult) -> ClientResult:
        if res.client_id == 3:
            return ClientResult(res.client_id, res.num_examples, corrupt(res), res.metrics)
        return res

    with caplog.at_level(logging.WARNING, logger="ppml.fl"):
        res = run_federated(
            build_model("logistic", (5,), 3),
            clients,
            FedAvg(1.0, batch_size=5),
            rounds=2,
            seed=0,
            update_transform=bad_client_3,
            max_update_norm=100.0,
        )
    assert [h["rejected"] for h in res.history] == [1, 1]
    assert reason in res.history[0]["rejections"]["3"]
    assert res.history[0]["clients"] == 7
    assert bool(torch.isfinite(get_flat(res.model)).all())
    assert any("client 3" in rec.getMessage() for rec in caplog.records)
