import pytest

from ppml import ParameterError
from ppml.experiment.config import parse_config
from ppml.experiment.runner import prepare_data, run_experiment

STRATEGIES = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg"]


@pytest.fixture(scope="module")
def digits():
    cfg = parse_config({"data": {"name": "digits"}, "partition": {"name": "iid", "num_clients": 20}})
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
