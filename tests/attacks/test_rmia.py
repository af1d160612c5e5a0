import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.attacks.base import Access, ThreatModel, ThreatModelError
from ppml.attacks.membership import ModelAPI, TargetQueries, membership_audit, run_membership_audit
from ppml.attacks.rmia import RMIA, rmia_scores
from ppml.attacks.shadow import ShadowModels

TM = ThreatModel.of(Access.CONFIDENCES, auxiliary="population records from the same distribution")


@pytest.fixture(scope="module")
def world(overfit_target):
    torch.set_num_threads(1)
    X, y, is_member, cfg, arch, target = overfit_target()
    Xa, ya, _, _, _, _ = overfit_target(n_pool=800)
    population = (Xa[400:], ya[400:])
    refs = ShadowModels(arch, cfg, 2, seed=4).fit(population)
    return X, y, is_member, cfg, arch, target, refs, population


def test_rmia_scores_by_hand():
    # one OUT reference model; a = 0 makes Pr(u) = (p_out + 1) / 2
    p_ref_x = np.array([[0.5, 0.5, 0.9]])
    p_ref_z = np.array([[0.5, 0.5, 0.5, 0.5]])
    ref_in_x, ref_in_z = np.zeros((1, 3), bool), np.zeros((1, 4), bool)
    p_target_x = np.array([0.9, 0.6, 0.9])
    p_target_z = np.array([0.6, 0.7, 0.75, 0.9])
    kw = dict(a=0.0, break_ties=False)
    s = rmia_scores(p_target_x, p_ref_x, ref_in_x, p_target_z, p_ref_z, ref_in_z, **kw)
    # ratios: x -> 0.9/0.75=1.2, 0.6/0.75=0.8, 0.9/0.95; z -> 0.8, 0.933, 1.0, 1.2
    np.testing.assert_allclose(s, [1.0, 0.25, 0.5])
    # a larger gamma asks for more: fewer z pass
    s2 = rmia_scores(p_target_x, p_ref_x, ref_in_x, p_target_z, p_ref_z, ref_in_z, gamma=1.3, **kw)
    np.testing.assert_allclose(s2, [0.25, 0.0, 0.0])
    # online: the plain mean of the references
    s3 = rmia_scores(
        p_target_x, p_ref_x, ref_in_x, p_target_z, p_ref_z, ref_in_z, online=True, break_ties=False
    )
    np.testing.assert_allclose(s3, [1.0, 0.25, 0.0])  # ratios 1.8, 1.2, 1.0 against z 1.2, 1.4, 1.5, 1.8
    # tie-breaking moves a score by less than 1 / m and orders ties by the ratio
    t = rmia_scores(p_target_x, p_ref_x, ref_in_x, p_target_z, p_ref_z, ref_in_z, online=True)
    assert np.all((t >= s3) & (t < s3 + 1 / 4)) and t[1] > t[2]


def test_rmia_offline_with_one_reference_model(world):
    X, y, m, cfg, arch, target, refs, population = world
    attack = RMIA(TM, arch, cfg, seed=0).fit(refs.select([0]), population=population)
    r = run_membership_audit(attack, target, (X[m], y[m]), (X[~m], y[~m]))
    loss = membership_audit(target, (X[m], y[m]), (X[~m], y[~m]), rng=0)
    assert r.attack == "rmia-offline" and r.details["n_references"] == 1
    # z that the single reference trained on are dropped (it needs an OUT model for Pr(z))
    assert r.details["n_population"] == int((~refs.keep_[0]).sum())
    assert r.metrics["auc"] > 0.65 and r.metrics["auc"] > loss.metrics["auc"]


def test_rmia_online_and_own_references(world):
    X, y, m, cfg, arch, target, _, population = world
    attack = RMIA(TM, arch, cfg, n_references=4, online=True, n_population=150, seed=1)
    attack.fit((X, y), population=population)  # reference pool = the candidates
    assert len(attack.references_) == 4 and len(attack.yz_) == 150
    r = run_membership_audit(attack, target, (X[m], y[m]), (X[~m], y[~m]))
    assert r.attack == "rmia-online" and r.metrics["auc"] > 0.7


def test_rmia_refusals(world):
    X, y, _, cfg, arch, target, refs, population = world
    with pytest.raises(ThreatModelError, match="rmia-offline needs confidences"):
        RMIA(ThreatModel.of(Access.LABELS), arch, cfg, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        RMIA(TM, arch, cfg, n_references=1, online=True, seed=0)
    with pytest.raises(ParameterError, match="'a' parameter of RMIA"):
        RMIA(TM, arch, cfg, a=1.5, seed=0)
    online = RMIA(TM, arch, cfg, online=True, seed=0).fit(refs, population=population)
    with pytest.raises(ValueError, match="400 of 400 candidates are IN for none"):
        online.run(TargetQueries(ModelAPI(target, "confidences"), X, y))
    offline = RMIA(TM, arch, cfg, seed=0).fit(refs, population=population)
    with pytest.raises(ThreatModelError, match="target exposes only labels"):
        offline.run(TargetQueries(ModelAPI(target, "labels"), X, y))
