"""Membership metrics against scikit-learn, hand-made cases, and interval properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from ppml import ParameterError
from ppml.attacks import AttackResult, ThreatModel
from ppml.attacks.metrics import (
    _bootstrap_aucs_from_counts,
    advantage,
    auc,
    auc_bootstrap_ci,
    auc_delong_ci,
    balanced_accuracy_at_threshold,
    balanced_accuracy_best_threshold,
    clopper_pearson,
    fpr_metric_name,
    plot_roc,
    roc_curve,
    score_membership,
    tpr_at_fpr,
    tpr_at_fpr_ci,
)

TM = ThreatModel.of("loss", adversary="test")


def _tied_data(seed: int, n: int = 400, levels: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Scores with many ties (few distinct values) and a weak membership signal."""
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.4
    scores = rng.integers(0, levels, n).astype(np.float64) + is_member * rng.integers(0, 3, n)
    return scores, is_member


def _gaussian_data(seed: int, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    scores = rng.normal(size=2 * n) + shift * is_member
    return scores, is_member


def _result(scores: np.ndarray, **details: object) -> AttackResult:
    return AttackResult(attack="toy", threat_model=TM, scores=scores, details=dict(details))


# --------------------------------------------------------------------------- ROC and AUC vs sklearn


@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_equals_sklearn_with_ties(seed: int) -> None:
    scores, is_member = _tied_data(seed)
    fpr, tpr, thr = roc_curve(scores, is_member)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(is_member, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(thr, sk_thr)
    assert thr.size == np.unique(scores).size + 1  # one point per distinct score, plus "flag nothing"


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_with_ties(seed: int) -> None:
    scores, is_member = _tied_data(seed, levels=4)
    assert auc(scores, is_member) == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    # 0/1 integer labels are accepted as well as booleans
    assert auc(scores, is_member.astype(int)) == auc(scores, is_member)


def test_all_tied_scores_give_the_diagonal() -> None:
    fpr, tpr, _ = roc_curve(np.zeros(10), np.arange(10) % 2)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0])
    assert auc(np.zeros(10), np.arange(10) % 2) == 0.5


@pytest.mark.parametrize(
    ("scores", "is_member", "match"),
    [
        (np.zeros((2, 2)), np.array([[1, 0], [0, 1]]), "1-D"),
        (np.zeros(3), np.array([1, 0]), "same shape"),
        (np.array([0.0, np.nan, 1.0]), np.array([1, 0, 1]), "finite"),
        (np.array([0.0, np.inf, 1.0]), np.array([1, 0, 1]), "finite"),
        (np.zeros(3), np.array([1, 1, 1]), "at least one member and one non-member"),
        (np.zeros(3), np.array([1, 2, 0]), "boolean or 0/1"),
    ],
)
def test_bad_inputs_are_refused(scores: np.ndarray, is_member: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        auc(scores, is_member)


# --------------------------------------------------------------------------- TPR at low FPR


def test_tpr_at_fpr_hand_made() -> None:
    # ranked: member, non-member, member, non-member
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    is_member = np.array([True, False, True, False])
    assert tpr_at_fpr(scores, is_member, 0.0) == 0.5
    assert tpr_at_fpr(scores, is_member, 0.49) == 0.5
    assert tpr_at_fpr(scores, is_member, 0.5) == 1.0  # FPR <= target, the boundary included
    assert tpr_at_fpr(scores, is_member, 1.0) == 1.0


def test_tpr_at_fpr_ties_cannot_be_split() -> None:
    # the top member ties with a non-member: flagging it costs a false positive
    scores = np.array([5.0, 5.0, 1.0, 1.0])
    is_member = np.array([True, False, True, False])
    assert tpr_at_fpr(scores, is_member, 0.0) == 0.0
    assert tpr_at_fpr(scores, is_member, 0.5) == 0.5


def test_tpr_at_fpr_exact_boundary_with_decimal_targets() -> None:
    # 100 non-members below 100 members, except that the top-scoring k non-members beat everything
    for k in (1, 7, 29):
        non = np.r_[np.full(k, 10.0), np.zeros(100 - k)]
        mem = np.r_[np.full(50, 5.0), np.full(50, -5.0)]
        scores, is_member = np.r_[mem, non], np.r_[np.ones(100, bool), np.zeros(100, bool)]
        assert tpr_at_fpr(scores, is_member, k / 100) == 0.5
        assert tpr_at_fpr(scores, is_member, float(f"{k / 100:.2f}")) == 0.5
        assert tpr_at_fpr(scores, is_member, (k - 0.5) / 100) == 0.0


def test_tpr_at_fpr_validates_target() -> None:
    with pytest.raises(ParameterError, match="'fpr' parameter of tpr_at_fpr"):
        tpr_at_fpr(np.arange(4.0), np.array([1, 0, 1, 0]), 1.5)


# --------------------------------------------------------------------------- advantage, balanced accuracy


@pytest.mark.parametrize("seed", range(3))
def test_advantage_and_best_balanced_accuracy_brute_force(seed: int) -> None:
    scores, is_member = _tied_data(seed, n=200, levels=8)
    candidates = np.r_[np.inf, np.unique(scores)]
    brute = [balanced_accuracy_score(is_member, scores >= t) for t in candidates]
    best, thr = balanced_accuracy_best_threshold(scores, is_member)
    assert best == pytest.approx(max(brute), abs=1e-12)
    assert balanced_accuracy_score(is_member, scores >= thr) == pytest.approx(best, abs=1e-12)
    assert advantage(scores, is_member) == pytest.approx(2 * max(brute) - 1, abs=1e-12)


def test_balanced_accuracy_at_threshold_equals_sklearn() -> None:
    scores, is_member = _tied_data(0)
    for t in (-1.0, 3.0, 5.5, 100.0):
        expected = balanced_accuracy_score(is_member, scores >= t)
        assert balanced_accuracy_at_threshold(scores, is_member, t) == pytest.approx(expected, abs=1e-12)


def test_perfectly_separable_scores() -> None:
    scores, is_member = _gaussian_data(0, 50, shift=0.0)
    scores = np.where(is_member, scores + 100.0, scores)
    assert auc(scores, is_member) == 1.0
    assert advantage(scores, is_member) == 1.0
    assert balanced_accuracy_best_threshold(scores, is_member)[0] == 1.0
    assert tpr_at_fpr(scores, is_member, 0.0) == 1.0
    scored = score_membership(_result(scores), is_member, rng=0)
    assert scored.metrics["auc"] == 1.0
    assert scored.metrics["advantage"] == 1.0
    assert scored.metrics["balanced_accuracy"] == 1.0
    assert scored.metrics["tpr_at_0.1pct_fpr"] == 1.0
    assert scored.metrics["auc_ci_low"] == scored.metrics["auc_ci_high"] == 1.0
    # the same scores reversed: AUC 0, but the best threshold "flag nothing" keeps advantage at 0
    assert auc(-scores, is_member) == 0.0
    assert advantage(-scores, is_member) == 0.0


def test_identical_distributions_give_chance() -> None:
    scores, is_member = _gaussian_data(1, 5000, shift=0.0)
    scored = score_membership(_result(scores), is_member, rng=2)
    assert scored.metrics["auc"] == pytest.approx(0.5, abs=0.02)
    assert scored.metrics["auc_ci_low"] < 0.5 < scored.metrics["auc_ci_high"]
    assert scored.metrics["advantage"] < 0.05
    assert scored.metrics["tpr_at_1pct_fpr"] < 0.03


# --------------------------------------------------------------------------- Clopper-Pearson


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (1, 1000), (500, 1000), (17, 23)])
def test_clopper_pearson_equals_scipy_exact_interval(k: int, n: int) -> None:
    low, high = clopper_pearson(k, n, confidence=0.95)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert low == pytest.approx(ref.low, abs=1e-10)
    assert high == pytest.approx(ref.high, abs=1e-10)
    assert low <= k / n <= high


def test_clopper_pearson_closed_forms_at_the_edges() -> None:
    # k = 0: upper bound 1 - (alpha/2)^(1/n); k = n: lower bound (alpha/2)^(1/n)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10)), 1.0)


def test_clopper_pearson_shrinks_with_n_and_grows_with_confidence() -> None:
    widths = []
    for n in (10, 100, 1000, 10000):
        low, high = clopper_pearson(3 * n // 10, n)
        assert low < 0.3 < high
        widths.append(high - low)
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    narrow, wide = clopper_pearson(30, 100, confidence=0.8), clopper_pearson(30, 100, confidence=0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_clopper_pearson_validates() -> None:
    with pytest.raises(ParameterError, match="'k' parameter of clopper_pearson"):
        clopper_pearson(11, 10)
    with pytest.raises(ParameterError, match="'confidence' parameter"):
        clopper_pearson(1, 10, confidence=1.0)


def test_tpr_at_fpr_ci_counts_flagged_members() -> None:
    scores, is_member = _gaussian_data(3, 1000, shift=2.0)
    tpr, low, high = tpr_at_fpr_ci(scores, is_member, 0.01)
    assert tpr == tpr_at_fpr(scores, is_member, 0.01)
    k = round(tpr * 1000)
    assert (low, high) == clopper_pearson(k, 1000)
    assert low < tpr < high


# --------------------------------------------------------------------------- AUC intervals


def test_bootstrap_counts_equal_explicit_resamples() -> None:
    rng = np.random.default_rng(4)
    pos, neg = rng.integers(0, 6, 40).astype(float) + 1, rng.integers(0, 6, 60).astype(float)
    ip, ineg = rng.integers(0, 40, (6, 40)), rng.integers(0, 60, (6, 60))
    w_pos = np.stack([np.bincount(r, minlength=40) for r in ip]).astype(float)
    w_neg = np.stack([np.bincount(r, minlength=60) for r in ineg]).astype(float)
    fast = _bootstrap_aucs_from_counts(pos, neg, w_pos, w_neg)
    labels = np.r_[np.ones(40), np.zeros(60)]
    slow = [roc_auc_score(labels, np.r_[pos[ip[b]], neg[ineg[b]]]) for b in range(6)]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    # unit multiplicities reproduce the plain AUC
    ones = _bootstrap_aucs_from_counts(pos, neg, np.ones((1, 40)), np.ones((1, 60)))
    assert ones[0] == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)


def test_bootstrap_ci_is_seeded_and_sensible() -> None:
    scores, is_member = _gaussian_data(5, 500, shift=0.5)
    a = auc(scores, is_member)
    ci1 = auc_bootstrap_ci(scores, is_member, rng=11, n_bootstrap=500)
    ci2 = auc_bootstrap_ci(scores, is_member, rng=np.random.default_rng(11), n_bootstrap=500)
    ci3 = auc_bootstrap_ci(scores, is_member, rng=12, n_bootstrap=500)
    assert ci1 == ci2
    assert ci1 != ci3
    assert ci1[0] < a < ci1[1]
    # agrees with DeLong's normal interval at this size (the 90% and 95% bounds differ by ~0.006)
    for confidence in (0.9, 0.95):
        low, high = auc_bootstrap_ci(scores, is_member, rng=0, n_bootstrap=4000, confidence=confidence)
        d_low, d_high = auc_delong_ci(scores, is_member, confidence=confidence)
        assert low == pytest.approx(d_low, abs=0.003)
        assert high == pytest.approx(d_high, abs=0.003)


def test_bootstrap_ci_needs_an_explicit_rng_and_shrinks_with_n() -> None:
    scores, is_member = _gaussian_data(6, 100, shift=0.5)
    with pytest.raises(ValueError, match="explicit seed"):
        auc_bootstrap_ci(scores, is_member, rng=None)
    small = auc_bootstrap_ci(scores, is_member, rng=0, n_bootstrap=400)
    scores, is_member = _gaussian_data(6, 2000, shift=0.5)
    large = auc_bootstrap_ci(scores, is_member, rng=0, n_bootstrap=400)
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])


# --------------------------------------------------------------------------- score_membership


def test_fpr_metric_names() -> None:
    assert fpr_metric_name(0.01) == "tpr_at_1pct_fpr"
    assert fpr_metric_name(0.001) == "tpr_at_0.1pct_fpr"
    assert fpr_metric_name(0.0001) == "tpr_at_0.01pct_fpr"


def test_score_membership_fills_metrics_and_stays_small() -> None:
    scores, is_member = _gaussian_data(7, 10_000, shift=1.0)
    raw = _result(scores)
    scored = score_membership(raw, is_member, rng=3, n_bootstrap=200)
    assert raw.metrics == {} and "roc" not in raw.details  # the input is not modified
    expected = {"auc", "auc_ci_low", "auc_ci_high", "advantage", "balanced_accuracy"}
    for key in ("tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
        expected |= {key, f"{key}_ci_low", f"{key}_ci_high"}
    assert set(scored.metrics) == expected
    m = scored.metrics
    assert m["auc"] == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    assert m["auc_ci_low"] < m["auc"] < m["auc_ci_high"]
    assert m["tpr_at_1pct_fpr_ci_low"] <= m["tpr_at_1pct_fpr"] <= m["tpr_at_1pct_fpr_ci_high"]
    assert m["tpr_at_0.1pct_fpr"] <= m["tpr_at_1pct_fpr"]
    assert m["balanced_accuracy"] == pytest.approx((1 + m["advantage"]) / 2)
    assert scored.details["n_members"] == scored.details["n_non_members"] == 10_000
    assert scored.details["auc_ci_method"].startswith("stratified bootstrap")
    roc = scored.details["roc"]
    assert 2 <= len(roc["fpr"]) == len(roc["tpr"]) <= 100
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0
    text = json.dumps(scored.to_dict(), allow_nan=False)
    assert len(text) < 8000  # 20,000 targets, a report entry of a few kB


def test_score_membership_without_rng_uses_delong() -> None:
    scores, is_member = _gaussian_data(8, 300, shift=0.5)
    scored = score_membership(_result(scores), is_member, roc_points=0)
    assert scored.details["auc_ci_method"] == "DeLong"
    assert (scored.metrics["auc_ci_low"], scored.metrics["auc_ci_high"]) == auc_delong_ci(scores, is_member)
    assert "roc" not in scored.details


def test_score_membership_scores_the_attack_threshold() -> None:
    scores, is_member = _tied_data(9)
    scored = score_membership(_result(scores, score_threshold=4.0), is_member)
    assert scored.metrics["balanced_accuracy_at_threshold"] == pytest.approx(
        balanced_accuracy_score(is_member, scores >= 4.0), abs=1e-12
    )
    assert scored.metrics["tpr_at_threshold"] == pytest.approx(np.mean(scores[is_member] >= 4.0))
    assert scored.metrics["fpr_at_threshold"] == pytest.approx(np.mean(scores[~is_member] >= 4.0))


def test_score_membership_refuses_bad_input() -> None:
    scores, is_member = _tied_data(0, n=20)
    with pytest.raises(ValueError, match="no scores"):
        score_membership(AttackResult(attack="toy", threat_model=TM), is_member)
    with pytest.raises(ValueError, match="same shape"):
        score_membership(_result(scores), is_member[:-1])
    with pytest.raises(TypeError, match="AttackResult"):
        score_membership(scores, is_member)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'fprs' parameter"):
        score_membership(_result(scores), is_member, fprs=(2.0,))


# --------------------------------------------------------------------------- plotting


def test_plot_roc_writes_a_png(tmp_path) -> None:
    results = {}
    for name, shift in (("weak", 0.3), ("strong", 2.0)):
        scores, is_member = _gaussian_data(10, 2000, shift=shift)
        results[name] = score_membership(_result(scores), is_member)
    out = plot_roc(results, tmp_path / "roc.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="no ROC"):
        plot_roc({"raw": _result(np.zeros(3))}, tmp_path / "x.png")
