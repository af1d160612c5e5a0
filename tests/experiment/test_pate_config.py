"""The [pate] section of experiment files: validation, examples, and a small run through the runner."""

from pathlib import Path

import numpy as np
import pytest

from ppml._validation import ParameterError
from ppml.experiment.config import load_config, parse_config
from ppml.experiment.runner import run_experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["mnist_pate.toml", "adas_pate.toml"])
def test_examples_parse_as_pate(name):
    cfg = load_config(EXAMPLES / name)
    assert cfg.mode == "pate" and cfg.pate is not None and cfg.fl is None


def test_mnist_example_is_the_2018_setting():
    p = load_config(EXAMPLES / "mnist_pate.toml").pate
    assert (p.n_teachers, p.threshold, p.sigma1, p.sigma2, p.n_queries, p.delta) == (
        250,
        200,
        150,
        40,
        640,
        1e-5,
    )


@pytest.mark.parametrize(
    ("pate", "fragment"),
    [
        (
            {"n_teachers": 1},
            "The 'pate.n_teachers' parameter of the experiment file must be an int in the range [2,",
        ),
        (
            {"sigma2": 0},
            "The 'pate.sigma2' parameter of the experiment file must be a float in the range (0, inf)",
        ),
        (
            {"delta": 1.0},
            "The 'pate.delta' parameter of the experiment file must be a float in the range (0, 1)",
        ),
        (
            {"epsilon": -2},
            "The 'pate.epsilon' parameter of the experiment file must be a float in the range (0,",
        ),
        ({"public_fraction": 1}, "'pate.public_fraction' parameter of the experiment file must be a float"),
        ({"aggregator": "pate"}, "The 'pate.aggregator' parameter of the experiment file must be one of"),
        ({"votes": 3}, "has no parameter 'pate.votes'; the parameters of [pate] are"),
    ],
)
def test_bad_pate_values_name_the_dotted_field(pate, fragment):
    with pytest.raises(ParameterError) as err:
        parse_config({"pate": pate})
    assert fragment in str(err.value)


def test_pate_cannot_be_combined_with_fl_or_privacy():
    with pytest.raises(ParameterError, match=r"cannot be combined with \[fl\] or \[privacy\]"):
        parse_config({"pate": {}, "privacy": {"epsilon": 1.0}})
    assert parse_config({}).mode == "central"


def test_small_pate_run_summary():
    cfg = parse_config(
        {
            "name": "digits-pate",
            "data": {"name": "digits"},
            "model": {"name": "logistic"},
            "train": {"epochs": 5},
            "pate": {
                "n_teachers": 6,
                "aggregator": "confident_gnmax",
                "threshold": 4.0,
                "sigma1": 2.0,
                "sigma2": 1.0,
                "n_queries": 80,
                "teacher_epochs": 10,
                "semi_supervised": False,
            },
            "attack": {"membership": True, "max_examples": 100},
        }
    )
    s = run_experiment(cfg)
    assert s.utility["test_accuracy"] > 0.5 and 0 < s.utility["answered_queries"] <= 80
    p = s.privacy
    assert p["mechanism"] == "PATE" and p["n_teachers"] == 6 and p["public_rows"] == 180
    assert np.isfinite(p["epsilon"]) and p["epsilon_data_dependent"] <= p["epsilon_data_independent"]
    assert s.attacks and "PATE" in s.description
