"""Scoreboard-RH de-anonymisation of sparse released ratings, its data helpers and the linkage scorer."""

from __future__ import annotations

import numpy as np
import pytest

from ppml._validation import ParameterError
from ppml.attacks.base import Access, AttackResult, ThreatModel, ThreatModelError
from ppml.attacks.deanonymization import (
    NO_MATCH,
    AuxiliaryRatings,
    ReleasedRatings,
    Scoreboard,
    make_auxiliary,
    make_sparse_ratings,
    release_ratings,
    score_reidentification,
)

RELEASED = ThreatModel.of(Access.RELEASED_TABLE, adversary="anyone holding the released table")


@pytest.fixture(scope="module")
def ratings():
    return make_sparse_ratings(400, 800, seed=0, mean_ratings=25.0)


@pytest.fixture(scope="module")
def released(ratings):
    return release_ratings(ratings, seed=1)


def test_synthetic_ratings_are_sparse_with_a_long_tail(ratings):
    assert ratings.num_users == 400 and ratings.num_items == 800
    assert set(np.unique(ratings.rating)) <= {1, 2, 3, 4, 5}
    pairs = ratings.user * 10_000 + ratings.item
    assert len(np.unique(pairs)) == len(pairs)  # no user rates an item twice
    support = np.bincount(ratings.item, minlength=801)[1:]
    assert support.max() > 10 * np.median(support)  # popular head, rare tail
    assert len(ratings) / (400 * 800) < 0.06
    again = make_sparse_ratings(400, 800, seed=0, mean_ratings=25.0)
    np.testing.assert_array_equal(again.data, ratings.data)


def test_release_hides_user_ids_behind_a_permutation(ratings, released):
    table, mapping = released
    assert table.n_records == 400 and table.n_items == len(np.unique(ratings.item))
    assert sorted(mapping[1:]) == list(range(400)) and mapping[0] == NO_MATCH
    assert table.matrix.nnz == len(ratings)
    assert not np.array_equal(mapping[1:], np.arange(400))


def test_exact_aux_of_eight_items_identifies_nearly_everyone(ratings, released):
    table, mapping = released
    targets = np.unique(ratings.user)
    aux = make_auxiliary(ratings, targets, k=8, seed=2)
    per_user = np.bincount(ratings.user)[targets]
    np.testing.assert_array_equal(aux.counts(), np.minimum(per_user, 8))  # all of them when fewer
    result = Scoreboard(RELEASED).fit(aux).run(table)
    assert result.metrics == {}  # the attack never sees ground truth
    assert result.guesses.shape == (400,) and result.scores.shape == (400,)
    m = score_reidentification(result, mapping[aux.target]).metrics
    assert m["share_correct"] >= 0.97
    assert m["share_wrong"] <= 0.01
    assert m["share_correct"] + m["share_wrong"] + m["share_no_match"] == pytest.approx(1.0)


def test_one_popular_item_fails_the_eccentricity_test(ratings, released):
    table, mapping = released
    popular = np.bincount(ratings.item).argmax()
    rows = np.flatnonzero(ratings.item == popular)
    assert len(rows) > 40
    rng = np.random.default_rng(3)
    aux = AuxiliaryRatings.from_records(
        ratings.user[rows],
        ratings.item[rows],
        ratings.rating[rows],
        ratings.timestamp[rows] / 86_400.0 + rng.uniform(-14, 14, len(rows)),
    )
    result = Scoreboard(RELEASED).fit(aux).run(table)
    m = score_reidentification(result, mapping[aux.target]).metrics
    assert m["share_no_match"] >= 0.8
    assert m["share_wrong"] <= 0.05
    # without the test (phi = 0) the attack names everyone, mostly wrongly
    loose = score_reidentification(Scoreboard(RELEASED, phi=0.0).fit(aux).run(table), mapping[aux.target])
    assert loose.metrics["share_no_match"] == 0.0
    assert loose.metrics["share_wrong"] >= 0.3


def test_wrong_ratings_and_shifted_dates_lower_the_true_records_score(ratings, released):
    table, mapping = released
    targets = np.unique(ratings.user)[:100]
    truth = mapping[targets]

    def true_scores(**kw):
        aux = make_auxiliary(ratings, targets, k=6, seed=4, **kw)
        s = Scoreboard(RELEASED).fit(aux).scores(table)
        return s[np.arange(len(targets)), np.searchsorted(table.pseudonyms, truth)]

    exact = true_scores()
    wrong = true_scores(n_wrong=2)
    shifted = true_scores(date_error_days=14.0)
    assert np.all(wrong < exact - 1e-9)
    assert np.all(shifted < exact - 1e-9)
    aux = make_auxiliary(ratings, targets, k=6, seed=4, n_wrong=2)
    exact_aux = make_auxiliary(ratings, targets, k=6, seed=4)
    np.testing.assert_array_equal(aux.item, exact_aux.item)  # same facts, two ratings changed
    changed = np.bincount(np.repeat(np.arange(100), aux.counts()), weights=aux.rating != exact_aux.rating)
    assert np.all(changed == 2)


def test_rarity_weights_beat_unweighted_scores_on_a_constructed_table():
    # target 0 shares a rare item (a) and one popular item (p1, rating off by one) with the aux;
    # decoy 1 holds both popular items of the aux (p1, p2) with exact ratings but not the rare one
    rng = np.random.default_rng(5)
    pid, item, rating = [0, 0, 1, 1, 2], [100, 1, 1, 2, 100], [3, 4, 5, 5, 1]
    for u in range(3, 60):  # filler records: popular items with random ratings, never 5
        for i in (1, 2):
            pid.append(u)
            item.append(i)
            rating.append(int(rng.integers(1, 4)))
    table = ReleasedRatings.from_arrays(np.array(pid), np.array(item), np.array(rating))
    assert table.day is None  # ratings only
    aux = AuxiliaryRatings.from_records([7, 7, 7], [100, 1, 2], [3, 5, 5])
    weighted = Scoreboard(RELEASED, phi=0.0).fit(aux).run(table)
    plain = Scoreboard(RELEASED, phi=0.0, rarity_weights=False).fit(aux).run(table)
    assert weighted.guesses[0] == 0
    assert plain.guesses[0] == 1
    w = Scoreboard(RELEASED).item_weights(table)
    assert w[np.searchsorted(table.items, 100)] == pytest.approx(1 / np.log(2))
    assert w[np.searchsorted(table.items, 1)] == pytest.approx(1 / np.log(59))


def test_scorer_counts_correct_wrong_and_declined():
    result = AttackResult(
        attack="x",
        threat_model=RELEASED,
        guesses=np.array([3, 4, NO_MATCH, NO_MATCH, 7]),
        details={"best": np.array([3, 4, 5, 9, 7])},
    )
    m = score_reidentification(result, [3, 5, 5, 6, NO_MATCH]).metrics
    assert m["share_correct"] == pytest.approx(0.2)
    assert m["share_wrong"] == pytest.approx(0.4)  # 4 for 5, and 7 for a target not in the table
    assert m["share_no_match"] == pytest.approx(0.4)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["share_best_correct"] == pytest.approx(0.4)
    assert result.metrics == {}  # scoring returns a copy
    with pytest.raises(ValueError, match="same|shape"):
        score_reidentification(result, [1, 2])


def test_threat_model_without_released_table_is_refused():
    with pytest.raises(ThreatModelError, match="Scoreboard-RH needs released_table"):
        Scoreboard(ThreatModel.of(Access.LABELS, Access.POOLED_LOGS))
    Scoreboard(ThreatModel.of(Access.RELEASED_TABLE, Access.LOSS))  # more access is fine


def test_bad_parameters_and_inputs(ratings, released):
    table, _ = released
    with pytest.raises(
        ParameterError, match="The 'rho0' parameter of Scoreboard must be a float in the range"
    ):
        Scoreboard(RELEASED, rho0=0.0)
    with pytest.raises(ParameterError, match="'phi' parameter of Scoreboard"):
        Scoreboard(RELEASED, phi=-1.0)
    with pytest.raises(ParameterError, match="'n_wrong' parameter of make_auxiliary"):
        make_auxiliary(ratings, [1, 2], k=2, n_wrong=3, seed=0)
    with pytest.raises(ValueError, match="distinct"):
        make_auxiliary(ratings, [1, 1], k=2, seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        Scoreboard(RELEASED).run(table)
    with pytest.raises(TypeError, match="AuxiliaryRatings"):
        Scoreboard(RELEASED).fit({"item": [1]})
    with pytest.raises(ValueError, match="only once"):
        ReleasedRatings.from_arrays(np.array([0, 0]), np.array([1, 1]), np.array([3, 4]))


def test_auxiliary_draws_are_seeded_and_respect_the_date_error(ratings):
    targets = np.unique(ratings.user)[:50]
    a = make_auxiliary(ratings, targets, k=4, date_error_days=3.0, seed=9)
    b = make_auxiliary(ratings, targets, k=4, date_error_days=3.0, seed=9)
    np.testing.assert_array_equal(a.item, b.item)
    np.testing.assert_array_equal(a.day, b.day)
    np.testing.assert_array_equal(a.target, targets)
    # each fact's date is within 3 days of the target's true rating of that item
    true_day = {
        (int(u), int(i)): t / 86_400.0
        for u, i, t in zip(ratings.user, ratings.item, ratings.timestamp, strict=True)
        if u in set(targets.tolist())
    }
    tgt = np.repeat(a.target, a.counts())
    err = np.array([a.day[j] - true_day[(int(tgt[j]), int(a.item[j]))] for j in range(len(tgt))])
    assert np.all(np.abs(err) <= 3.0) and np.abs(err).max() > 1.0
