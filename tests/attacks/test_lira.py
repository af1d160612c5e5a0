import numpy as np
import pytest
import torch

from ppml.attacks.base import Access, ThreatModel, ThreatModelError
from ppml.attacks.lira import LiRA, lira_scores
from ppml.attacks.membership import (
    ModelAPI,
    TargetQueries,
    aggregate_by_owner,
    count_overlap,
    logit_scaled_confidence,
    membership_audit,
    owner_membership,
    run_membership_audit,
)
from ppml.attacks.metrics import auc, score_membership
from ppml.attacks.shadow import ShadowModels

TM = ThreatModel.of(Access.LOGITS, Access.CONFIDENCES, adversary="API client")


@pytest.fixture(scope="module")
def world(overfit_target):
    torch.set_num_threads(1)
    X, y, is_member, cfg, arch, target = overfit_target()
    shadows = ShadowModels(arch, cfg, 8, seed=1).fit((X, y))  # the pool holds every candidate
    return X, y, is_member, cfg, arch, target, shadows


def test_logit_scaling_is_stable_and_agrees_with_probabilities():
    logits = np.array([[2.0, 0.5, -1.0], [60.0, 0.0, 0.0], [-3.0, 4.0, 1.0]])
    y = np.array([0, 0, 2])
    phi = logit_scaled_confidence(logits, y, from_logits=True)
    probs = torch.softmax(torch.tensor(logits), 1).numpy()
    with np.errstate(divide="ignore"):
        expected = np.log(probs[np.arange(3), y]) - np.log(1 - probs[np.arange(3), y])
    np.testing.assert_allclose(phi[[0, 2]], expected[[0, 2]], rtol=1e-10)
    # a confident example: 1 - p underflows in float64, the logit form stays exact
    assert phi[1] == pytest.approx(60.0 - np.log(2.0), rel=1e-12)
    assert not np.isfinite(expected[1])
    from_probs = logit_scaled_confidence(probs, y, from_logits=False)
    np.testing.assert_allclose(from_probs, phi, rtol=1e-8)
    # leading shadow axis
    assert logit_scaled_confidence(np.stack([logits, logits]), y, from_logits=True).shape == (2, 3)


def test_lira_scores_follow_the_gaussians():
    rng = np.random.default_rng(0)
    k, n = 40, 6
    shadow_in = np.zeros((k, n), bool)
    shadow_in[: k // 2] = True
    shadow_phi = np.where(shadow_in, 3.0, 0.0) + 0.5 * rng.normal(size=(k, n))
    target_phi = np.array([3.0, 0.0, 1.5, 6.0, -2.0, 2.0])
    online = lira_scores(target_phi, shadow_phi, shadow_in, online=True)
    assert online[0] > 0 > online[1]  # at the IN mean: member; at the OUT mean: non-member
    offline = lira_scores(target_phi, shadow_phi, shadow_in, online=False, fixed_variance=True)
    assert np.all(np.diff(offline[[4, 1, 2, 0, 3]]) > 0)  # monotone in phi for one-sided test


def test_online_and_offline_beat_the_loss_attack(world):
    X, y, m, cfg, arch, target, shadows = world
    members, non_members = (X[m], y[m]), (X[~m], y[~m])
    loss = membership_audit(target, members, non_members, rng=0)
    online = LiRA(TM, arch, cfg, n_shadows=8, fixed_variance=True, seed=0).fit(shadows)
    offline = LiRA(TM, arch, cfg, n_shadows=8, online=False, seed=0).fit(shadows)
    r_on = run_membership_audit(online, target, members, non_members)
    r_off = run_membership_audit(offline, target, members, non_members)
    assert r_on.attack == "lira-online" and r_off.attack == "lira-offline"
    assert r_on.metrics["auc"] > loss.metrics["auc"] + 0.05
    assert r_off.metrics["auc"] > loss.metrics["auc"] + 0.03
    assert r_on.metrics["tpr_at_1pct_fpr"] > 3 * max(loss.metrics["tpr_at_1pct_fpr"], 0.01)
    assert r_on.details["n_shadows"] == 8 and r_on.details["observed"] == "logits"


def test_confidences_only_gives_the_same_ranking(world):
    X, y, m, cfg, arch, target, shadows = world
    conf_tm = ThreatModel.of(Access.CONFIDENCES)
    a = LiRA(TM, arch, cfg, n_shadows=8, fixed_variance=True, seed=0).fit(shadows)
    b = LiRA(conf_tm, arch, cfg, n_shadows=8, fixed_variance=True, seed=0).fit(shadows)
    ra = a.run(TargetQueries(ModelAPI(target, "logits"), X, y))
    rb = b.run(TargetQueries(ModelAPI(target, "confidences"), X, y))
    assert rb.details["observed"] == "confidences"
    assert auc(ra.scores, m) == pytest.approx(auc(rb.scores, m), abs=0.01)


def test_fit_trains_its_own_shadows(world):
    X, y, m, cfg, arch, target, _ = world
    attack = LiRA(TM, arch, cfg, n_shadows=4, fixed_variance=True, seed=3).fit((X, y))
    assert len(attack.shadows_) == 4 and attack.shadows_.keep_.sum(0).tolist() == [2] * len(y)
    r = run_membership_audit(attack, target, (X[m], y[m]), (X[~m], y[~m]))
    assert r.metrics["auc"] > 0.6


def test_refusals(world):
    X, y, m, cfg, arch, target, shadows = world
    with pytest.raises(ThreatModelError, match="needs logits or confidences"):
        LiRA(ThreatModel.of(Access.LABELS), arch, cfg, seed=0)
    with pytest.raises(ValueError, match="at least 4 shadow models"):
        LiRA(TM, arch, cfg, n_shadows=2, seed=0)
    # too few IN/OUT shadows per target for per-example variances
    few = LiRA(TM, arch, cfg, n_shadows=4, seed=0).fit(shadows.select([0, 1, 2]))
    with pytest.raises(ValueError, match=r"needs at least 2 IN and 2 OUT shadow model\(s\) per target"):
        few.run(TargetQueries(ModelAPI(target, "logits"), X, y))
    # online needs the candidates in the pool
    outside = X + 100.0
    online = LiRA(TM, arch, cfg, n_shadows=8, fixed_variance=True, seed=0).fit(shadows)
    with pytest.raises(ValueError, match=r"400 of 400 targets have fewer \(fewest IN 0"):
        online.run(TargetQueries(ModelAPI(target, "logits"), outside, y))
    # the target exposes labels only
    with pytest.raises(ThreatModelError, match="needs confidences but the target exposes only labels"):
        online.run(TargetQueries(ModelAPI(target, "labels"), X, y))
    # member and non-member sets that overlap
    with pytest.raises(ValueError, match="3 member example"):
        run_membership_audit(online, target, (X[:10], y[:10]), (X[7:20], y[7:20]))
    assert count_overlap((X[:10], y[:10]), (X[7:20], y[7:20])) == 3
    assert count_overlap((X[:10], y[:10]), (X[10:20], y[10:20])) == 0


def test_user_level_membership(world):
    """Owners with all records in or all out; LiRA per user (sum of log-likelihood ratios)."""
    X, y, m, cfg, arch, target, shadows = world
    rng = np.random.default_rng(0)
    owners = np.empty(len(y), dtype=np.int64)
    owners[m] = rng.integers(0, 20, m.sum())  # owners 0..19 are members, 20..39 not
    owners[~m] = rng.integers(20, 40, (~m).sum())
    attack = LiRA(TM, arch, cfg, n_shadows=8, fixed_variance=True, seed=0).fit(shadows)
    per_record = attack.run(TargetQueries(ModelAPI(target, "logits"), X, y))
    per_user = aggregate_by_owner(per_record, owners, how="sum")
    truth = owner_membership(m, owners)
    assert per_user.guesses.tolist() == list(range(40)) and truth.tolist() == [True] * 20 + [False] * 20
    scored = score_membership(per_user, truth)
    record_auc = auc(per_record.scores, m)
    assert scored.metrics["auc"] > max(0.95, record_auc)  # a user with ~10 records is easier to spot
    mean = aggregate_by_owner(per_record, owners, how="mean").scores
    np.testing.assert_allclose(mean, per_user.scores / np.bincount(owners))
    assert aggregate_by_owner(per_record, owners, how="max").scores[3] == per_record.scores[owners == 3].max()
    with pytest.raises(ValueError, match="owners must have shape"):
        aggregate_by_owner(per_record, owners[:5])
