"""Reconstruction from client updates: analytic inversion, iDLG labels, DLG, Inverting Gradients, scoring."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from ppml._validation import ParameterError
from ppml.attacks.base import Access, AttackResult, ThreatModel, ThreatModelError
from ppml.attacks.gradients import (
    DLG,
    AnalyticFCInversion,
    ClientUpdate,
    InvertingGradients,
    infer_labels,
    score_location_recovery,
    score_reconstruction,
    simulate_client_update,
)
from ppml.dp.mechanisms import PrivacyWarning
from ppml.models.zoo import build_model, reset_parameters

THREAT = ThreatModel.of(Access.CLIENT_UPDATE, adversary="curious server")


@pytest.fixture(autouse=True)
def _quiet_noise_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


def relu_mlp(hidden: int = 32, seed: int = 0) -> nn.Module:
    return build_model("mlp", (1, 8, 8), 10, hidden=(hidden,), seed=seed)


def sigmoid_mlp(d: int, hidden: int, seed: int = 0) -> nn.Module:
    m = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.Sigmoid(), nn.Linear(hidden, 10))
    return reset_parameters(m, seed)


# --------------------------------------------------------------------------- analytic + labels


def test_analytic_recovers_one_example_exactly(digits):
    X, y = digits
    model = relu_mlp()
    for i in (0, 7, 42):
        update = simulate_client_update(model, X[i : i + 1], y[i : i + 1])
        r = AnalyticFCInversion(THREAT).run(update)
        assert r.guesses.shape == (1, 1, 8, 8)
        np.testing.assert_allclose(r.guesses, X[i : i + 1], atol=1e-5)
        assert r.details["labels"] == [int(y[i])] and r.details["label_source"] == "iDLG"
        scored = score_reconstruction(r, X[i : i + 1], labels=y[i : i + 1], data_range=1.0)
        assert scored.metrics["psnr"] > 90 and scored.metrics["label_accuracy"] == 1.0
        assert r.metrics == {}  # scoring returns a copy; the attack's own result holds no ground truth


def test_analytic_exact_from_a_fedavg_step(digits):
    """One local SGD step with a known lr: the server recovers g = (w_before - w_after) / lr."""
    X, y = digits
    before = relu_mlp(seed=3)
    after = relu_mlp(seed=3)
    opt = torch.optim.SGD(after.parameters(), lr=0.05)
    loss = nn.functional.cross_entropy(after(torch.from_numpy(X[5:6])), torch.from_numpy(y[5:6]))
    loss.backward()
    opt.step()
    update = ClientUpdate.from_models(before, after, lr=0.05, batch_size=1, input_shape=(1, 8, 8))
    r = AnalyticFCInversion(THREAT).run(update)
    np.testing.assert_allclose(r.guesses, X[5:6], atol=1e-5)
    via_helper = simulate_client_update(before, X[5:6], y[5:6], lr=0.05)
    for a, b in zip(update.gradients, via_helper.gradients, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_idlg_label_is_right_with_and_without_output_bias(digits):
    X, y = digits
    with_bias = relu_mlp()
    no_bias = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10, bias=False))
    reset_parameters(no_bias, 1)
    for model in (with_bias, no_bias):
        for i in range(12):
            update = simulate_client_update(model, X[i : i + 1], y[i : i + 1])
            assert infer_labels(update).tolist() == [int(y[i])]


def test_label_counts_heuristic_on_a_small_batch(digits):
    X, y = digits
    idx = np.array([0, 1, 1 + 10, 3])  # labels 0, 1, 1, 3: a repeated class
    update = simulate_client_update(relu_mlp(), X[idx], y[idx])
    guessed = infer_labels(update)
    assert guessed.shape == (4,) and sorted(guessed.tolist()) == sorted(y[idx].tolist())


def test_analytic_batch_is_exact_only_for_rows_one_example_owns(digits):
    X, y = digits
    idx = np.arange(20, 24)
    relu = simulate_client_update(relu_mlp(hidden=128), X[idx], y[idx])
    r = AnalyticFCInversion(THREAT, bounds=(0.0, 1.0)).run(relu)
    s = score_reconstruction(r, X[idx], data_range=1.0)
    assert r.details["exact_groups"] >= 1
    assert s.metrics["psnr_max"] > 80  # at least one image recovered exactly
    sig = simulate_client_update(sigmoid_mlp(64, 128), X[idx], y[idx])
    r2 = AnalyticFCInversion(THREAT, bounds=(0.0, 1.0)).run(sig)
    s2 = score_reconstruction(r2, X[idx], data_range=1.0)
    assert r2.details["exact_groups"] == 0  # sigmoid units mix every example into every row
    assert s2.metrics["psnr_max"] < 40


def test_analytic_refuses_a_layer_that_does_not_see_the_input(digits):
    X, y = digits
    cnn = build_model("cnn", (1, 8, 8), 10, channels=(2, 4), cnn_hidden=8, seed=0)
    update = simulate_client_update(cnn, X[:1], y[:1])
    with pytest.raises(ValueError, match="not the model's input"):
        AnalyticFCInversion(THREAT).run(update)
    with pytest.raises(ValueError, match="no trainable parameters 'nope.weight'"):
        AnalyticFCInversion(THREAT, layer="nope").run(update)


# --------------------------------------------------------------------------- optimisation attacks


def test_dlg_recovers_a_small_input_of_a_sigmoid_mlp():
    rng = np.random.default_rng(0)
    x = rng.random((1, 16)).astype(np.float32)
    y = np.array([3])
    model = sigmoid_mlp(16, 16, seed=2)
    update = simulate_client_update(model, x, y)
    r = DLG(THREAT, rng=1, iterations=20).run(update)
    s = score_reconstruction(r, x, labels=y, data_range=1.0)
    assert s.metrics["psnr"] > 50, s.metrics
    assert s.metrics["label_accuracy"] == 1.0 and r.details["label_source"] == "optimised (DLG)"
    assert r.details["relative_gradient_distance"] < 1e-6


def test_inverting_gradients_beats_random_guess(digits):
    X, y = digits
    x, lab = X[9:10], y[9:10]
    update = simulate_client_update(relu_mlp(hidden=16, seed=4), x, lab, lr=0.1)
    r = InvertingGradients(THREAT, rng=0, iterations=150, bounds=(0.0, 1.0)).run(update)
    s = score_reconstruction(r, x, labels=lab)
    guess = np.random.default_rng(5).random(x.shape).astype(np.float32)
    rand = score_reconstruction(AttackResult("random", THREAT, guesses=guess), x, data_range=1.0)
    assert s.details["data_range"] == 1.0  # taken from the attack's bounds
    assert s.metrics["psnr"] > rand.metrics["psnr"] + 10, (s.metrics, rand.metrics)
    assert r.guesses.min() >= 0.0 and r.guesses.max() <= 1.0
    again = InvertingGradients(THREAT, rng=0, iterations=150, bounds=(0.0, 1.0)).run(update)
    np.testing.assert_array_equal(r.guesses, again.guesses)  # seeded


def test_dp_noise_lowers_psnr(digits):
    X, y = digits
    model = relu_mlp(hidden=64)
    psnrs = []
    for z in (0.0, 0.001, 0.1):
        vals = []
        for i in range(3):
            upd = simulate_client_update(
                model, X[i : i + 1], y[i : i + 1], lr=0.1, clip_norm=1.0, noise_multiplier=z, rng=i
            )
            r = AnalyticFCInversion(THREAT, bounds=(0.0, 1.0)).run(upd)
            vals.append(min(score_reconstruction(r, X[i : i + 1]).metrics["psnr"], 200.0))
        psnrs.append(np.mean(vals))
    assert psnrs[0] > 90  # clipping alone keeps the ratio gW_i / gb_i: still exact
    assert psnrs[0] > psnrs[1] + 30 and psnrs[1] > psnrs[2] + 3, psnrs


def test_noise_needs_clip_norm_and_rng(digits):
    X, y = digits
    with pytest.raises(ValueError, match="needs clip_norm"):
        simulate_client_update(relu_mlp(), X[:1], y[:1], noise_multiplier=1.0)
    with pytest.raises(ValueError, match="explicit seed"):
        simulate_client_update(relu_mlp(), X[:1], y[:1], clip_norm=1.0, noise_multiplier=1.0)


# --------------------------------------------------------------------------- threat model and inputs


@pytest.mark.parametrize(
    "make",
    [
        lambda tm: AnalyticFCInversion(tm),
        lambda tm: DLG(tm, rng=0),
        lambda tm: InvertingGradients(tm, rng=0),
    ],
)
def test_refused_without_client_update(make):
    tm = ThreatModel.of(Access.PARAMETERS, Access.LOSS)
    with pytest.raises(ThreatModelError, match="needs client_update but the threat model grants only"):
        make(tm)
    attack = make(THREAT)
    with pytest.raises(TypeError, match="expects a ClientUpdate"):
        attack.run(np.zeros(3))


def test_client_update_validation(digits):
    X, y = digits
    model = relu_mlp()
    good = simulate_client_update(model, X[:2], y[:2], reveal_labels=True)
    assert good.labels.tolist() == y[:2].tolist()
    with pytest.raises(ValueError, match="trainable parameters but 1 gradients"):
        ClientUpdate.from_gradients(model, good.gradients[:1], batch_size=2, input_shape=(1, 8, 8))
    bad = list(good.gradients)
    bad[0] = torch.full_like(bad[0], float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        ClientUpdate.from_gradients(model, bad, batch_size=2, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        ClientUpdate.from_gradients(model, good.gradients, batch_size=2, input_shape=(1, 8, 8), labels=[1])
    with pytest.raises(ParameterError, match="'lr' parameter of ClientUpdate.from_delta"):
        ClientUpdate.from_delta(model, good.gradients, lr=0.0, batch_size=2, input_shape=(1, 8, 8))
    with pytest.raises(ParameterError, match="'bounds' parameter of InvertingGradients"):
        InvertingGradients(THREAT, rng=0, bounds=(1.0, 0.0)).run(good)


def test_given_labels_are_used(digits):
    X, y = digits
    upd = simulate_client_update(relu_mlp(), X[:3], y[:3], reveal_labels=True)
    r = InvertingGradients(THREAT, rng=0, iterations=2).run(upd)
    assert r.details["label_source"] == "given" and r.details["labels"] == y[:3].tolist()
    r2 = DLG(THREAT, rng=0, iterations=1, lbfgs_max_iter=2).run(upd)
    assert r2.details["label_source"] == "given"


# --------------------------------------------------------------------------- scoring


def test_scoring_matches_guesses_to_truth_by_assignment():
    rng = np.random.default_rng(0)
    truth = rng.random((5, 1, 12, 12))
    perm = np.array([3, 0, 4, 1, 2])
    guesses = truth[perm] + 0.01 * rng.normal(size=truth.shape)
    r = AttackResult("x", THREAT, guesses=guesses, details={"labels": [2, 0, 1, 1, 0]})
    s = score_reconstruction(r, truth, labels=[0, 1, 0, 1, 2], data_range=1.0, ssim_win_size=5)
    assert s.details["matched_truth"] == perm.tolist()
    assert s.metrics["psnr"] == pytest.approx(40.0, abs=1.0)
    assert 0.9 < s.metrics["ssim"] < 1.0
    assert s.metrics["label_accuracy"] == 1.0  # the same multiset of labels
    unmatched = score_reconstruction(
        AttackResult("x", THREAT, guesses=guesses), truth[::-1], data_range=1.0, ssim_win_size=5
    )
    assert unmatched.metrics["psnr"] == pytest.approx(s.metrics["psnr"])


def test_exact_recoveries_are_capped_in_the_mean_psnr():
    truth = np.linspace(0, 1, 2 * 16).reshape(2, 1, 4, 4)
    guesses = truth.copy()
    guesses[1] = 1.0 - guesses[1]  # one exact, one poor
    r = AttackResult("x", THREAT, guesses=guesses)
    s = score_reconstruction(r, truth, data_range=1.0, max_psnr=150.0)
    assert s.metrics["psnr_max"] == math.inf
    poor = s.metrics["psnr_min"]
    assert poor < 10 and s.metrics["psnr"] == pytest.approx((150.0 + poor) / 2)
    assert s.metrics["share_recovered"] == 0.5
    assert "ssim" not in s.metrics  # 4x4 examples are below the SSIM window


def test_location_recovery_in_metres():
    truth = np.array([[0.5, 0.0, 0.0], [0.1, 0.2, -0.3]])
    guesses = truth[::-1].copy()
    guesses[0, 1:] += [0.003, 0.004]  # 0.005 units off = 50 m at 10 km per unit
    r = AttackResult("x", THREAT, guesses=guesses)
    s = score_location_recovery(r, truth, xy_columns=(1, 2), metres_per_unit=10_000.0)
    assert sorted(s.details["location_errors_m"]) == pytest.approx([0.0, 50.0])
    assert s.metrics["median_location_error_m"] == pytest.approx(25.0)
    assert s.metrics["share_within_100m"] == 1.0
    assert math.isclose(s.metrics["max_location_error_m"], 50.0)
