"""PATE end to end on scikit-learn's digits: accuracy, epsilon, budget, refusals, nothing private kept."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ppml._validation import ParameterError
from ppml.dp.pate.aggregators import ConfidentGNMax, GNMax, InteractiveGNMax, LNMax, PATEBudgetExceededError
from ppml.dp.pate.analysis import PATEAccountant
from ppml.dp.pate.estimator import PATE
from ppml.dp.pate.student import PATEStudent
from ppml.models import build_model
from ppml.train.loop import TrainConfig

CFG = TrainConfig(epochs=20, batch_size=16, lr=0.1, momentum=0.9)


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, pub, te = perm[:1000], perm[1000:1400], perm[1400:]
    return X[tr], y[tr], X[pub], X[te], y[te]


def _student():
    return PATEStudent(
        build_model("logistic", (64,), 10, seed=0), epochs=40, rounds=1, round_epochs=10, lr=0.1
    )


def _pate(**kw):
    base = dict(
        n_teachers=10,
        aggregator=ConfidentGNMax(threshold=6.0, sigma1=3.0, sigma2=1.5),
        teacher="logistic",
        student=_student(),
        teacher_config=CFG,
        seed=0,
    )
    return PATE(**{**base, **kw})


@pytest.fixture(scope="module")
def fitted(digits):
    X, y, P, _, _ = digits
    return _pate(keep_teachers=True).fit(X, y, public_X=P, n_queries=150)


def test_end_to_end_digits(fitted, digits):
    _, _, P, Xt, yt = digits
    p = fitted
    assert p.score(Xt, yt) > 0.75  # chance is 0.1
    assert p.predict_proba(Xt).shape == (len(yt), 10)
    rep = p.privacy_report()
    assert 0 < rep["answered"] <= rep["queries"] == 150 and rep["refused"] == 0
    assert np.isfinite(rep["epsilon"]) and rep["epsilon"] > 0
    assert rep["epsilon_data_dependent"] <= rep["epsilon_data_independent"]
    assert rep["epsilon_data_dependent_released"] is not None and np.isfinite(
        rep["epsilon_data_dependent_released"]
    )
    # the released labels are the teachers' (noisy) plurality on the answered queries
    ans = p.query_labels_ >= 0
    assert ans.sum() == rep["answered"]
    assert (p.query_labels_[ans] == p.votes_[ans].argmax(1)).mean() > 0.9
    assert np.all(p.votes_.sum(axis=1) == 10)


def test_budget_stops_answering_and_keeps_earlier_answers(fitted, digits):
    X, y, P, Xt, yt = digits
    budget = 0.6 * fitted.epsilon_
    with pytest.warns(RuntimeWarning, match="budget"):
        b = _pate(epsilon_budget=budget).fit(X, y, public_X=P, n_queries=150)
    rep = b.privacy_report()
    assert rep["refused"] > 0 and rep["queries"] + rep["refused"] == 150
    assert rep["epsilon"] <= budget < fitted.epsilon_
    k = rep["queries"]
    assert np.array_equal(b.query_labels_[:k], fitted.query_labels_[:k])  # same seed, same earlier answers
    assert np.all(b.query_labels_[k:] == -1)
    assert b.score(Xt, yt) > 0.5


def test_refused_query_leaves_accountant_and_answers_intact():
    votes = np.array([[9, 1, 0]] * 12)
    agg = GNMax(sigma=2.0)
    acc = PATEAccountant(1e-5, budget_epsilon=5.0)
    with pytest.raises(PATEBudgetExceededError) as err:
        agg.answer(votes, 0, accountant=acc)
    k = err.value.query_index
    assert 0 < k < 12 and len(err.value.answers) == k and acc.num_queries == k
    eps, rdp = acc.epsilon(), acc.rdp_data_independent
    assert eps <= 5.0
    with pytest.raises(PATEBudgetExceededError) as again:
        agg.answer(votes[:3], 1, accountant=acc)
    assert again.value.query_index == 0
    assert acc.num_queries == k and acc.epsilon() == eps and np.array_equal(acc.rdp_data_independent, rdp)


def test_nothing_private_in_report_or_pickle(fitted, digits):
    X, y, P, Xt, _ = digits
    rep = fitted.privacy_report()
    flat = json.loads(json.dumps(rep))
    keys = set(flat) | {k for v in flat.values() if isinstance(v, dict) for k in v}
    assert not any("vote" in k for k in keys) and {k for k in keys if "teacher" in k} == {"n_teachers"}
    assert not any(isinstance(v, list) for v in flat.values())  # no per-query or per-teacher arrays
    # keep_teachers=True keeps them in memory for analysis, but a pickle never holds them
    assert hasattr(fitted, "votes_") and hasattr(fitted, "teachers_")
    clone = pickle.loads(pickle.dumps(fitted))
    assert not hasattr(clone, "votes_") and not hasattr(clone, "teachers_")
    assert np.array_equal(clone.predict(Xt), fitted.predict(Xt))
    plain = _pate().fit(X, y, public_X=P, n_queries=60)
    assert not hasattr(plain, "votes_") and not hasattr(plain, "teachers_")
    assert set(vars(plain)) & {"votes_", "teachers_", "accountant_"} == set()


@pytest.mark.parametrize(
    "agg", [LNMax(gamma=0.5), GNMax(sigma=1.5), InteractiveGNMax(threshold=3.0, sigma1=2.0, sigma2=1.5)]
)
def test_other_aggregators(agg, digits):
    X, y, P, Xt, yt = digits
    p = _pate(
        aggregator=agg, student=PATEStudent(build_model("logistic", (64,), 10, seed=0), rounds=0, lr=0.1)
    )
    p.fit(X, y, public_X=P, n_queries=100)
    rep = p.privacy_report()
    assert rep["aggregator"]["name"] == type(agg).__name__ and rep["answered"] > 0
    assert np.isfinite(rep["epsilon"]) and p.score(Xt, yt) > 0.6
    assert (rep["epsilon_data_dependent_released"] is None) == isinstance(agg, LNMax)


def test_refusals(digits):
    X, y, P, _, _ = digits
    with pytest.raises(ParameterError, match="'n_teachers' parameter of PATE"):
        _pate(n_teachers=1).fit(X, y, public_X=P)
    overlap = np.concatenate([P[:50], X[:7]])
    with pytest.raises(ParameterError, match="Got 7 of 57 public rows equal to private rows"):
        _pate().fit(X, y, public_X=overlap)
    owners = np.arange(len(y)) // 2
    split = [np.arange(0, 501), np.arange(501, 1000)]  # records 500 and 501 share owner 250
    with pytest.raises(ParameterError, match="owner 250 split across partitions"):
        _pate(n_teachers=2).fit(X, y, public_X=P, owners=owners, partitions=split)
    with pytest.raises(ParameterError, match="'aggregator' parameter of PATE"):
        _pate(aggregator="gnmax").fit(X, y, public_X=P)
    with pytest.raises(ParameterError, match="answered none"):
        _pate(aggregator=ConfidentGNMax(threshold=1e6, sigma1=1.0, sigma2=1.0)).fit(
            X, y, public_X=P, n_queries=20
        )


def test_owners_keep_records_together(digits):
    X, y, P, _, _ = digits
    owners = np.arange(len(y)) % 37  # 37 owners, each with ~27 records spread over the array
    p = _pate(n_teachers=5, keep_teachers=True).fit(X, y, public_X=P, owners=owners, n_queries=40)
    sizes = p.teachers_.partition_sizes
    assert sizes.sum() == len(y) and len(sizes) == 5
    assert sizes.max() - sizes.min() <= np.bincount(owners).max()
