import dp_accounting
import numpy as np
import pytest
import torch
from scipy import stats

from ppml import ParameterError
from ppml.dp.accounting import BudgetExceededError, PrivacyAccountant
from ppml.fl.dp_fedavg import DPFedAvg, clip_update
from ppml.fl.fedavg import FedAvg
from ppml.fl.strategy import ClientResult


def _dp(q=0.5, z=1.0, clip=1.0, budget=None):
    return DPFedAvg(FedAvg(fraction_fit=q), clip, z, PrivacyAccountant("rdp", 1e-5, budget_epsilon=budget))


def test_clip_bounds_norm_and_keeps_small_updates():
    big, norm = clip_update(torch.tensor([3.0, 4.0]), 1.0)
    assert norm == pytest.approx(5.0)
    assert torch.allclose(big, torch.tensor([0.6, 0.8]))
    small, _ = clip_update(torch.tensor([0.3, 0.4]), 1.0)
    assert torch.equal(small, torch.tensor([0.3, 0.4]))


def test_poisson_sampling_rate_matches_the_accountants():
    s = _dp(q=0.3)
    counts = [len(s.configure_round(r, 1000, np.arange(1000), np.random.default_rng(r))) for r in range(50)]
    # Binomial(1000, 0.3): mean 300, sd 14.5; the mean of 50 rounds has sd ~2.
    assert abs(np.mean(counts) - 300) < 8
    assert np.std(counts) > 5  # sizes vary: Poisson sampling, not a fixed-size sample


def test_noise_is_z_times_clip_on_the_sum_divided_by_expected_clients():
    """KS test: with zero updates the new parameters are N(0, (z S / (q K))^2); 2/3 and 3/2 of that scale are rejected."""
    q, z, clip, k = 0.5, 1.3, 2.0, 40
    s = _dp(q=q, z=z, clip=clip)
    s.configure_round(1, k, np.arange(k), np.random.default_rng(0))
    results = [ClientResult(i, 10, torch.zeros(5000)) for i in range(20)]
    new, _ = s.aggregate(1, torch.zeros(5000), results, np.random.default_rng(1))
    sample = new.double().numpy()
    sd = z * clip / (q * k)
    assert stats.kstest(sample, "norm", args=(0, sd)).pvalue > 0.01
    assert stats.kstest(sample, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(sample, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


def test_one_client_changes_the_release_by_at_most_clip_over_expected():
    q, k = 0.5, 10
    s = _dp(q=q, z=0.0)
    s.configure_round(1, k, np.arange(k), np.random.default_rng(0))
    huge = ClientResult(0, 1000, torch.full((10,), 100.0))
    new, metrics = s.aggregate(1, torch.zeros(10), [huge], np.random.default_rng(0))
    assert float(torch.linalg.vector_norm(new)) == pytest.approx(1.0 / (q * k), rel=1e-5)
    assert metrics["clipped_fraction"] == 1.0


def test_each_round_spends_one_poisson_gaussian_event_matching_an_independent_accountant():
    q, z, rounds = 0.2, 1.1, 7
    s = _dp(q=q, z=z)
    for r in range(1, rounds + 1):
        s.configure_round(r, 50, np.arange(50), np.random.default_rng(r))
        s.aggregate(r, torch.zeros(3), [], np.random.default_rng(r))
    ref = dp_accounting.rdp.RdpAccountant()
    ref.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    assert s.accountant.epsilon() == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)


def test_budget_stops_a_round_before_it_starts_and_keeps_the_ledger():
    s = _dp(q=0.1, z=2.0, budget=2.0)
    rounds_run = 0
    with pytest.raises(BudgetExceededError):
        for r in range(1, 1000):
            s.configure_round(r, 10, np.arange(10), np.random.default_rng(r))
            s.aggregate(r, torch.zeros(2), [], np.random.default_rng(r))
            rounds_run += 1
    assert 0 < rounds_run < 999
    assert s.accountant.epsilon() <= 2.0
    assert sum(e.count for e in s.accountant.ledger) == rounds_run
    assert len(s.accountant.ledger) == 1  # identical rounds share one ledger entry


@pytest.mark.parametrize(
    ("kwargs", "param"), [({"clip_norm": 0.0}, "clip_norm"), ({"noise_multiplier": -0.1}, "noise_multiplier")]
)
def test_bad_parameters(kwargs, param):
    args = {"clip_norm": 1.0, "noise_multiplier": 1.0, **kwargs}
    with pytest.raises(ParameterError, match=f"'{param}' parameter of DPFedAvg"):
        DPFedAvg(FedAvg(), args["clip_norm"], args["noise_multiplier"], PrivacyAccountant())


def test_dp_wrapper_forwards_fedprox_local_training():
    from ppml.fl.fedprox import FedProx

    s = DPFedAvg(FedProx(fraction_fit=0.5, mu=0.7), 1.0, 1.0, PrivacyAccountant())
    kwargs = s.local_train_kwargs([torch.zeros(2)])
    assert kwargs["mu"] == 0.7 and s.mu == 0.7
    assert _dp().local_train_kwargs([torch.zeros(2)]) == {} and _dp().mu == 0.0


# ----------------------------------------------------------------------------- adaptive clipping


def _adaptive(z=1.0, q=0.5, clip=0.1, quantile=0.5, sigma_b=None, lr=0.2):
    return DPFedAvg(
        FedAvg(fraction_fit=q),
        clip,
        z,
        PrivacyAccountant("rdp", 1e-5),
        target_quantile=quantile,
        clip_learning_rate=lr,
        clipped_count_stddev=sigma_b,
    )


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_adaptive_bound_tracks_the_target_quantile_of_update_norms(quantile):
    """Updates with log-normal norms (median 2): starting from S = 0.1, the bound converges to the
    target quantile of the norms, with the count noise on."""
    k, d = 400, 8
    s = _adaptive(z=0.5, q=0.5, clip=0.1, quantile=quantile, sigma_b=5.0)
    rng = np.random.default_rng(0)
    bounds = []
    for r in range(1, 121):
        s.configure_round(r, k, np.arange(k), rng)
        norms = 2.0 * np.exp(rng.normal(0.0, 0.5, size=200))
        results = []
        for i, n in enumerate(norms):
            v = torch.from_numpy(rng.normal(size=d))
            results.append(ClientResult(i, 1, (v / v.norm() * n).float()))
        s.aggregate(r, torch.zeros(d), results, rng)
        bounds.append(s.clip_norm_)
    truth = 2.0 * np.exp(0.5 * stats.norm.ppf(quantile))
    assert np.median(bounds[-30:]) == pytest.approx(truth, rel=0.15)
    assert bounds[0] < 0.2  # it started far below and moved there


def test_adaptive_clipping_spends_exactly_the_fixed_clipping_event():
    """Theorem 1 of Andrew et al.: updates at z_delta plus the count at 2 sigma_b compose to one
    Gaussian mechanism with multiplier z, so epsilon equals fixed clipping's with z."""
    z, sigma_b, q, k, rounds = 1.2, 3.0, 0.2, 500, 10
    fixed = _dp(q=q, z=z)
    adapt = _adaptive(z=z, q=q, sigma_b=sigma_b)
    expected_zd = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    assert adapt.update_noise_multiplier_ == pytest.approx(expected_zd)
    assert adapt.update_noise_multiplier_ > z
    rng = np.random.default_rng(0)
    for r in range(1, rounds + 1):
        for s in (fixed, adapt):
            sel = s.configure_round(r, k, np.arange(k), rng)
            s.aggregate(r, torch.zeros(3), [ClientResult(int(i), 1, torch.ones(3)) for i in sel], rng)
    assert adapt.round_event().event.noise_multiplier == pytest.approx(z, rel=1e-9)
    assert adapt.accountant.epsilon() == pytest.approx(fixed.accountant.epsilon(), rel=1e-9)
    reference = dp_accounting.rdp.RdpAccountant()
    reference.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    assert adapt.accountant.epsilon() == pytest.approx(reference.get_epsilon(1e-5), rel=1e-6)


def test_adaptive_update_noise_has_the_split_scale():
    """KS test on the updates' noise: std z_delta * S / (q K); the unsplit z * S / (q K) is rejected."""
    q, z, sigma_b, k, clip = 0.5, 1.0, 1.0, 40, 2.0
    s = _adaptive(z=z, q=q, clip=clip, sigma_b=sigma_b)
    s.configure_round(1, k, np.arange(k), np.random.default_rng(0))
    new, _ = s.aggregate(
        1,
        torch.zeros(5000),
        [ClientResult(i, 1, torch.zeros(5000)) for i in range(20)],
        np.random.default_rng(1),
    )
    zd = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    x = new.double().numpy()
    assert stats.kstest(x, "norm", args=(0, zd * clip / (q * k))).pvalue > 0.01
    assert stats.kstest(x, "norm", args=(0, z * clip / (q * k))).pvalue < 1e-4


def test_adaptive_clipping_refuses_a_count_noise_that_leaves_nothing_for_the_updates():
    with pytest.raises(ParameterError, match="clipped_count_stddev.*noise_multiplier / 2"):
        _adaptive(z=2.0, sigma_b=0.9)
    with pytest.raises(ParameterError, match="target_quantile"):
        _adaptive(quantile=1.5)


def test_experiment_file_runs_adaptive_clipping_at_the_same_epsilon():
    from ppml.experiment.config import parse_config
    from ppml.experiment.runner import prepare_data, run_experiment

    base = {
        "name": "dp",
        "data": {"name": "adas", "vehicles": 60},
        "model": {"name": "logistic"},
        "fl": {"rounds": 4, "fraction_fit": 0.5, "lr": 0.1},
        "attack": {"membership": False},
        "privacy": {"noise_multiplier": 1.0, "delta": 1e-3, "clip_norm": 0.01},
    }
    fixed_cfg = parse_config(base)
    data = prepare_data(fixed_cfg)
    fixed = run_experiment(fixed_cfg, data, progress=False)
    adaptive = run_experiment(
        parse_config(
            {**base, "privacy": {**base["privacy"], "target_quantile": 0.5, "clip_learning_rate": 1.0}}
        ),
        data,
        progress=False,
    )
    assert adaptive.epsilon == pytest.approx(fixed.epsilon, rel=1e-9)
    bounds = [h["clip_norm"] for h in adaptive.history]
    assert bounds[0] == pytest.approx(0.01) and bounds[-1] > 1.5 * bounds[0]  # grew towards the median norm
    assert all(h["clip_norm"] == pytest.approx(0.01) for h in fixed.history)
    with pytest.raises(ParameterError, match="privacy.target_quantile"):
        cfg = parse_config(
            {
                **base,
                "fl": None,
                "train": {"epochs": 1},
                "privacy": {**base["privacy"], "delta": 1e-6, "target_quantile": 0.5},
            }
        )
        run_experiment(cfg, data, progress=False)


# ----------------------------------------------------------------------------- distributed noise


def _distributed(q=0.5, z=1.0, clip=1.0, t=10):
    return DPFedAvg(
        FedAvg(fraction_fit=q),
        clip,
        z,
        PrivacyAccountant("rdp", 1e-5),
        noise_placement="clients",
        min_noisy_clients=t,
    )


def test_distributed_noise_shares_add_up_to_the_central_scale():
    """t clients each add N(0, (zS)^2 / t): the released mean has std z S / (qK), as with server noise
    (KS test), while each client's own share is sqrt(t) times smaller than the central noise."""
    q, z, clip, k, t = 0.5, 1.3, 2.0, 40, 16
    s = _distributed(q=q, z=z, clip=clip, t=t)
    assert s._mechanism.std == pytest.approx(z * clip / np.sqrt(t))
    s.configure_round(1, k, np.arange(k), np.random.default_rng(0))
    results = [ClientResult(i, 10, torch.zeros(5000)) for i in range(t)]
    new, _ = s.aggregate(1, torch.zeros(5000), results, np.random.default_rng(1))
    x = new.double().numpy()
    scale = z * clip / (q * k)
    assert stats.kstest(x, "norm", args=(0, scale)).pvalue > 0.01
    assert stats.kstest(x, "norm", args=(0, scale / np.sqrt(t))).pvalue < 1e-6


def test_distributed_noise_spends_the_central_event_and_skips_short_rounds():
    central, dist = _dp(q=0.5, z=1.1), _distributed(q=0.5, z=1.1, t=5)
    rng = np.random.default_rng(0)
    for s in (central, dist):
        s.configure_round(1, 40, np.arange(40), rng)
        s.aggregate(1, torch.zeros(3), [ClientResult(i, 1, torch.ones(3)) for i in range(8)], rng)
    assert dist.accountant.epsilon() == pytest.approx(central.accountant.epsilon(), rel=1e-9)
    before = dist.accountant.epsilon()
    dist.configure_round(2, 40, np.arange(40), rng)
    params = torch.full((3,), 7.0)
    new, metrics = dist.aggregate(2, params, [ClientResult(i, 1, torch.ones(3)) for i in range(4)], rng)
    assert torch.equal(new, params) and "skipped" in metrics
    assert dist.accountant.epsilon() == before  # nothing released, nothing spent


def test_distributed_noise_needs_a_share_count():
    with pytest.raises(ParameterError, match="min_noisy_clients"):
        DPFedAvg(FedAvg(0.5), 1.0, 1.0, PrivacyAccountant(), noise_placement="clients")
    with pytest.raises(ParameterError, match="noise_placement"):
        DPFedAvg(FedAvg(0.5), 1.0, 1.0, PrivacyAccountant(), noise_placement="everywhere")
