import numpy as np
import pytest

from ppml import ParameterError
from ppml.experiment.config import parse_config
from ppml.experiment.runner import prepare_data, run_experiment

STRATEGIES = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg"]


@pytest.fixture(scope="module")
def digits():
    cfg = parse_config(
        {"data": {"name": "digits"}, "partition": {"name": "iid", "num_clients": 20}, "fl": {}}
    )
    return prepare_data(cfg)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_from_an_experiment_file(strategy, digits):
    cfg = parse_config(
        {
            "data": {"name": "digits"},
            "partition": {"name": "iid", "num_clients": 20},
            "fl": {"strategy": strategy, "rounds": 2, "fraction_fit": 0.5, "eval_every": 1},
            "attack": {"membership": False},
        }
    )
    summary = run_experiment(cfg, digits)
    assert summary.config["fl"]["strategy"] == strategy
    assert len(summary.history) == 2 and summary.history[-1]["selected"] == 10
    assert 0.0 <= summary.utility["test_accuracy"] <= 1.0


def test_dp_refuses_strategies_it_would_silently_replace(digits):
    cfg = parse_config(
        {
            "data": {"name": "digits"},
            "partition": {"name": "iid", "num_clients": 20},
            "fl": {"strategy": "fedadam", "rounds": 1},
            "privacy": {"noise_multiplier": 1.0, "delta": 1e-3},
        }
    )
    with pytest.raises(
        ParameterError, match="'fl.strategy' parameter of the experiment file must be 'fedavg' or"
    ):
        run_experiment(cfg, digits)


def test_dp_refuses_delta_at_or_above_one_over_clients(digits):
    cfg = parse_config(
        {
            "data": {"name": "digits"},
            "partition": {"name": "iid", "num_clients": 20},
            "fl": {"rounds": 1},
            "privacy": {"epsilon": 1.0, "delta": 0.1},
        }
    )
    with pytest.raises(ParameterError, match="'privacy.delta' parameter .* below 1/number of clients"):
        run_experiment(cfg, digits)


def test_central_dp_sgd_on_a_cnn_takes_ghost_clipping():
    from ppml.data.bundled import load_digits
    from ppml.experiment.runner import PreparedData

    images = load_digits(as_images=True)
    order = np.random.default_rng(0).permutation(len(images.y))
    data = PreparedData(images.subset(order[:1400]), images.subset(order[1400:]), [], None, None, 0.0)
    cfg = parse_config(
        {
            "data": {"name": "digits"},
            "model": {"name": "cnn"},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.5, "momentum": 0.0},
            "privacy": {"epsilon": 3.0, "delta": 1e-4},
            "attack": {"membership": False},
        }
    )
    priv = run_experiment(cfg, data).privacy
    assert priv["clipping"] == "ghost" and priv["ledger"][0]["count"] > 0


def test_central_dp_sgd_from_an_experiment_file_reports_the_accountants_epsilon():
    import dp_accounting

    cfg = parse_config(
        {
            "data": {"name": "digits"},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.5, "momentum": 0.0},
            "privacy": {"epsilon": 3.0, "delta": 1e-4},
            "attack": {"membership": False},
        }
    )
    summary = run_experiment(cfg)
    priv = summary.privacy
    assert priv["unit"] == "example" and priv["clipping"] == "ghost"
    (entry,) = priv["ledger"]
    q, z = entry["params"]["sampling_rate"], entry["params"]["noise_multiplier"]
    n_train = round(64 / q)
    assert entry["count"] == 2 * int(np.ceil(n_train / 64)) and entry["params"]["sampling"] == "poisson"
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), entry["count"])
    assert priv["epsilon"] == pytest.approx(acc.get_epsilon(1e-4), rel=1e-6)
    assert priv["epsilon"] <= 3.0
    assert summary.utility["test_accuracy"] > 0.5


@pytest.mark.parametrize("strategy", [*STRATEGIES, "scaffold"])
def test_every_strategy_gets_the_files_lr_decay(strategy):
    from ppml.experiment.runner import _strategy

    cfg = parse_config({"fl": {"strategy": strategy, "lr": 0.2, "lr_decay": 0.5}})
    built = _strategy(cfg.fl)
    assert built.round_train_config(3).lr == pytest.approx(0.05)
    assert parse_config({"fl": {"strategy": strategy}}).fl.lr_decay == 1.0
