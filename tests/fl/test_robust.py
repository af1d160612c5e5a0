import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.fl.fedavg import FedAvg
from ppml.fl.robust import FedMedian, FedTrimmedAvg, coordinate_median
from ppml.fl.strategy import ClientResult, Strategy

RNG = np.random.default_rng(0)


def _poisoned(num_honest=8, num_bad=3, dim=5, seed=0):
    gen = np.random.default_rng(seed)
    honest = 1.0 + 0.01 * gen.normal(size=(num_honest, dim))
    bad = np.full((num_bad, dim), 1e4)
    ups = np.vstack([honest, bad])
    results = [ClientResult(i, 10, torch.tensor(u, dtype=torch.float32)) for i, u in enumerate(ups)]
    return results, torch.from_numpy(honest.mean(0))


@pytest.mark.parametrize("strategy", [FedMedian(1.0), FedTrimmedAvg(1.0, beta=0.3)])
def test_robust_aggregate_resists_a_poisoned_minority(strategy):
    assert isinstance(strategy, Strategy)
    results, honest_mean = _poisoned()
    g = torch.zeros(5)
    robust, metrics = strategy.aggregate(1, g, results, RNG)
    plain, _ = FedAvg(1.0).aggregate(1, g, results, RNG)
    assert metrics["clients"] == 11
    assert torch.allclose(robust.double(), honest_mean, atol=0.05)
    assert float((plain.double() - honest_mean).abs().min()) > 1000


def test_trimmed_mean_with_beta_zero_is_the_unweighted_mean():
    results = [
        ClientResult(0, 1, torch.tensor([1.0, -2.0])),
        ClientResult(1, 100, torch.tensor([3.0, 4.0])),
        ClientResult(2, 7, torch.tensor([-1.0, 7.0])),
    ]
    g = torch.tensor([0.5, 0.5], dtype=torch.float64)
    new, _ = FedTrimmedAvg(1.0, beta=0.0).aggregate(1, g, results, RNG)
    assert torch.allclose(new, g + torch.tensor([1.0, 3.0], dtype=torch.float64))
    weighted, _ = FedAvg(1.0).aggregate(1, g, results, RNG)
    assert not torch.allclose(new, weighted)


def test_median_of_an_even_number_averages_the_middle_two():
    u = torch.tensor([[1.0, 0.0], [2.0, 10.0], [4.0, 20.0], [100.0, -5.0]])
    assert torch.equal(coordinate_median(u), torch.tensor([3.0, 5.0], dtype=torch.float64))


def test_config_dict():
    assert FedMedian(1.0).config_dict()["strategy"] == "FedMedian"
    cfg = FedTrimmedAvg(1.0, beta=0.2).config_dict()
    assert cfg["strategy"] == "FedTrimmedAvg" and cfg["beta"] == 0.2


@pytest.mark.parametrize("beta", [-0.1, 0.5, 1.0])
def test_bad_beta(beta):
    with pytest.raises(ParameterError, match=r"The 'beta' parameter of FedTrimmedAvg must be .* Got"):
        FedTrimmedAvg(beta=beta)
