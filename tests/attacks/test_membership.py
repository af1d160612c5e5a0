"""The LOSS membership attack, per-example losses, and the one-call audit on small torch models."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ppml import ParameterError
from ppml.attacks import (
    Access,
    AttackResult,
    LossObservations,
    LossThresholdAttack,
    ThreatModel,
    ThreatModelError,
    membership_audit,
    per_example_loss,
)
from ppml.data.dataset import Dataset

D, K = 20, 4  # features, classes
LOSS_TM = ThreatModel.of(Access.LOSS, adversary="test")


def _random_labelled(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features with random labels: only memorisation can fit them."""
    return rng.normal(size=(n, D)).astype(np.float32), rng.integers(0, K, n)


def _train_mlp(X: np.ndarray, y: np.ndarray, seed: int, steps: int = 300) -> nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(seed)  # the test's own seed for the initial weights
    model = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, K))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2024)
    return {"members": _random_labelled(rng, 100), "non_members": _random_labelled(rng, 100)}


@pytest.fixture(scope="module")
def overfit_model(sets) -> nn.Module:
    return _train_mlp(*sets["members"], seed=0)


@pytest.fixture(scope="module")
def unrelated_model() -> nn.Module:
    """Trained the same way on a third set: it never saw the members nor the non-members."""
    return _train_mlp(*_random_labelled(np.random.default_rng(7), 100), seed=1)


# --------------------------------------------------------------------------- per-example loss


def test_per_example_loss_equals_one_at_a_time_float64(overfit_model) -> None:
    X, y = _random_labelled(np.random.default_rng(1), 37)
    model64 = copy.deepcopy(overfit_model).double()  # float64 forward: batching changes nothing
    losses = per_example_loss(model64, X, y, batch_size=8)
    assert losses.dtype == np.float64 and losses.shape == (37,)
    with torch.no_grad():
        ref = [
            -torch.log_softmax(model64(torch.from_numpy(X[i : i + 1]).double()), dim=1)[0, y[i]].item()
            for i in range(37)
        ]
    np.testing.assert_allclose(losses, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(per_example_loss(model64, X, y, batch_size=1), losses, rtol=1e-12, atol=1e-15)
    # the float32 model: inputs cast to its dtype; float32 logits agree to float32 precision
    losses32 = per_example_loss(overfit_model, X, y)
    np.testing.assert_allclose(losses32, losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(per_example_loss(overfit_model, X.astype(np.float64), y), losses32)
    np.testing.assert_array_equal(
        per_example_loss(overfit_model, torch.from_numpy(X), torch.from_numpy(y)), losses32
    )
    X.setflags(write=False)  # read-only inputs (memory-mapped data) work without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(per_example_loss(overfit_model, X, y), losses32)


def test_per_example_loss_keeps_tiny_losses(overfit_model, sets) -> None:
    losses = per_example_loss(overfit_model, *sets["members"])
    assert np.all(losses > 0) and np.median(losses) < 1e-3  # memorised
    # a margin of 20 nats: the loss log(1 + 3 e^-20) ~ 6.2e-9 is 0 in float32 but kept in float64
    model = nn.Linear(1, K, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[20.0], [0.0], [0.0], [0.0]]))
    x, y = np.ones((1, 1), dtype=np.float32), np.zeros(1, dtype=np.int64)
    with torch.no_grad():
        float32_loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).item()
    assert float32_loss == 0.0
    assert per_example_loss(model, x, y)[0] == pytest.approx(np.log1p(3 * np.exp(-20.0)), rel=1e-9)


def test_per_example_loss_uses_eval_mode_and_restores_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 32), nn.Dropout(0.5), nn.Linear(32, K))
    model.train()
    X, y = _random_labelled(np.random.default_rng(2), 50)
    first, second = per_example_loss(model, X, y), per_example_loss(model, X, y)
    np.testing.assert_array_equal(first, second)  # dropout off
    assert model.training


def test_per_example_loss_binary_single_logit() -> None:
    torch.manual_seed(0)
    model = nn.Linear(D, 1)
    X, _ = _random_labelled(np.random.default_rng(3), 30)
    y = np.random.default_rng(4).integers(0, 2, 30)
    with torch.no_grad():
        ref = nn.functional.binary_cross_entropy_with_logits(
            model(torch.from_numpy(X))[:, 0].double(), torch.from_numpy(y).double(), reduction="none"
        ).numpy()
    np.testing.assert_allclose(per_example_loss(model, X, y), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="labels 0 or 1"):
        per_example_loss(model, X, y + 1)


def test_per_example_loss_refuses_bad_input(overfit_model) -> None:
    X, y = _random_labelled(np.random.default_rng(5), 10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        per_example_loss(overfit_model, X, np.full(10, K))
    with pytest.raises(ValueError, match="shape"):
        per_example_loss(overfit_model, X, y[:-1])
    with pytest.raises(ValueError, match="no examples"):
        per_example_loss(overfit_model, X[:0], y[:0])
    with pytest.raises(ParameterError, match="'batch_size' parameter of per_example_loss"):
        per_example_loss(overfit_model, X, y, batch_size=0)


def test_losses_from_confidences_match_the_model(overfit_model) -> None:
    X, y = _random_labelled(np.random.default_rng(6), 25)
    with torch.no_grad():
        probs = torch.softmax(overfit_model(torch.from_numpy(X)).double(), dim=1).numpy()
    obs = LossObservations.from_confidences(probs, y)
    np.testing.assert_allclose(obs.losses, per_example_loss(overfit_model, X, y), rtol=1e-6, atol=1e-9)
    # a confident mistake gives a large but finite loss
    hard = LossObservations.from_confidences(np.array([[1.0, 0.0]]), np.array([1]))
    assert np.isfinite(hard.losses).all() and hard.losses[0] > 700


def test_loss_observations_refuse_bad_losses() -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        LossObservations(np.array([]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        LossObservations(np.array([0.1, np.nan]))


# --------------------------------------------------------------------------- the attack


@pytest.mark.parametrize("granted", [(Access.LABELS,), (Access.CONFIDENCES, Access.LOGITS), ()])
def test_threat_model_without_loss_is_refused(granted) -> None:
    tm = ThreatModel.of(*granted)
    granted_text = ", ".join(sorted(a.value for a in granted)) or "nothing"
    with pytest.raises(ThreatModelError) as info:
        LossThresholdAttack(tm)
    assert str(info.value) == f"loss-threshold needs loss but the threat model grants only {granted_text}."
    with pytest.raises(ThreatModelError, match="needs loss"):
        membership_audit(
            nn.Linear(D, K),
            _random_labelled(np.random.default_rng(0), 5),
            _random_labelled(np.random.default_rng(1), 5),
            rng=0,
            threat_model=tm,
        )


def test_run_scores_negative_loss_and_fit_sets_yeom_threshold() -> None:
    losses = np.array([0.01, 2.0, 0.5, 3.0])
    attack = LossThresholdAttack(LOSS_TM)
    plain = attack.run(LossObservations(losses))
    assert isinstance(plain, AttackResult) and plain.metrics == {}
    assert plain.attack == "loss-threshold"  # the key reports look up
    np.testing.assert_array_equal(plain.scores, -losses)
    assert plain.guesses is None and "score_threshold" not in plain.details

    assert attack.fit(LossObservations(np.array([0.2, 0.8]))) is attack
    assert attack.threshold_ == pytest.approx(0.5)
    res = attack.run(LossObservations(losses))
    np.testing.assert_array_equal(res.guesses, [True, False, True, False])  # loss <= 0.5
    assert res.details["score_threshold"] == pytest.approx(-0.5)

    given = LossThresholdAttack(LOSS_TM, threshold=1.0).run(LossObservations(losses))
    np.testing.assert_array_equal(given.guesses, [True, False, True, False])
    with pytest.raises(TypeError, match="LossObservations"):
        attack.run(losses)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'threshold' parameter of LossThresholdAttack"):
        LossThresholdAttack(LOSS_TM, threshold="low").run(LossObservations(losses))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the audit


def test_overfit_model_leaks_membership(overfit_model, sets) -> None:
    result = membership_audit(overfit_model, sets["members"], sets["non_members"], rng=0, n_bootstrap=500)
    m = result.metrics
    assert m["auc"] > 0.85
    assert m["auc_ci_low"] > 0.75
    assert m["advantage"] > 0.6
    assert result.details["n_members"] == result.details["n_non_members"] == 100
    json.dumps(result.to_dict(), allow_nan=False)


def test_model_that_saw_neither_set_is_at_chance(unrelated_model, sets) -> None:
    result = membership_audit(unrelated_model, sets["members"], sets["non_members"], rng=0, n_bootstrap=500)
    assert result.metrics["auc"] == pytest.approx(0.5, abs=0.1)
    assert result.metrics["auc_ci_low"] < 0.5 < result.metrics["auc_ci_high"]


def test_audit_balances_the_sets_and_is_reproducible(overfit_model, sets) -> None:
    extra = _random_labelled(np.random.default_rng(8), 250)
    non_members = tuple(np.concatenate([a, b]) for a, b in zip(sets["non_members"], extra, strict=True))
    r1 = membership_audit(overfit_model, sets["members"], non_members, rng=5, n_bootstrap=200)
    r2 = membership_audit(overfit_model, sets["members"], non_members, rng=5, n_bootstrap=200)
    r3 = membership_audit(overfit_model, sets["members"], non_members, rng=6, n_bootstrap=200)
    assert r1.details["n_members"] == r1.details["n_non_members"] == 100
    assert r1.details["n_non_members_given"] == 350 and r1.details["n_members_given"] == 100
    assert r1.metrics == r2.metrics
    np.testing.assert_array_equal(r1.scores, r2.scores)
    assert not np.array_equal(r1.scores, r3.scores)  # another subsample of the non-members
    # a ppml Dataset works as well as an (X, y) pair
    ds = Dataset(X=non_members[0], y=non_members[1], name="toy", num_classes=K)
    r4 = membership_audit(overfit_model, sets["members"], ds, rng=5, n_bootstrap=200)
    assert r4.metrics == r1.metrics


def test_overlapping_sets_are_refused(overfit_model, sets) -> None:
    Xm, ym = sets["members"]
    Xn, yn = sets["non_members"]
    Xn2, yn2 = Xn.copy(), yn.copy()
    Xn2[17], yn2[17] = Xm[5], ym[5]
    with pytest.raises(ValueError, match=r"share 1 identical example.*member 5 and non-member 17"):
        membership_audit(overfit_model, (Xm, ym), (Xn2, yn2), rng=0)
    # the same row in another dtype, or with a negative zero, is still the same example
    Xm0 = Xm.copy()
    Xm0[5, 0] = 0.0
    Xn3 = Xn2.astype(np.float64)
    Xn3[17, 0] = -0.0
    with pytest.raises(ValueError, match="identical"):
        membership_audit(overfit_model, (Xm0, ym), (Xn3, yn2), rng=0)
    # the same features with another label are a different example
    yn2[17] = (ym[5] + 1) % K
    membership_audit(overfit_model, (Xm, ym), (Xn2, yn2), rng=0, n_bootstrap=10)


def test_empty_or_malformed_sets_are_refused(overfit_model, sets) -> None:
    Xm, ym = sets["members"]
    with pytest.raises(ValueError, match="non_members is empty"):
        membership_audit(overfit_model, (Xm, ym), (Xm[:0], ym[:0]), rng=0)
    with pytest.raises(ValueError, match="members is empty"):
        membership_audit(overfit_model, (Xm[:0], ym[:0]), sets["non_members"], rng=0)
    with pytest.raises(ValueError, match="members must be"):
        membership_audit(overfit_model, (Xm, ym[:-1]), sets["non_members"], rng=0)
    with pytest.raises(TypeError, match="pair"):
        membership_audit(overfit_model, Xm, sets["non_members"], rng=0)
    with pytest.raises(ValueError, match="explicit seed"):
        membership_audit(overfit_model, sets["members"], sets["non_members"], rng=None)
