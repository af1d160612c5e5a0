"""Home inference from pooled ADAS logs, the place vote behind it, and its scorer."""

from __future__ import annotations

import numpy as np
import pytest

from ppml._validation import ParameterError
from ppml.attacks.base import Access, AttackResult, ThreatModel, ThreatModelError
from ppml.attacks.deanonymization import score_reidentification
from ppml.attacks.location import (
    HomeInference,
    TraceReidentification,
    make_sightings,
    score_home_inference,
    top_places,
)
from ppml.data.adas import AdasFleet, make_fleet

POOLED = ThreatModel.of(Access.POOLED_LOGS, adversary="holder of the pooled logs")


@pytest.fixture(scope="module")
def fleet() -> AdasFleet:
    return make_fleet(seed=0)


def _centre_guess(fleet: AdasFleet) -> AttackResult:
    guesses = np.full((fleet.n_vehicles, 2), fleet.city_size_m / 2)
    return AttackResult(
        attack="city centre", threat_model=POOLED, guesses=guesses, scores=np.zeros(len(guesses))
    )


def test_pooled_logs_reveal_homes(fleet):
    result = HomeInference(POOLED).run(fleet.pooled_logs())
    assert result.metrics == {}  # the attack never sees ground truth
    assert result.guesses.shape == (fleet.n_vehicles, 2)
    assert result.scores.shape == (fleet.n_vehicles,)
    assert np.all((result.scores >= 0) & (result.scores <= 1))
    scored = score_home_inference(result, fleet.home, radius_m=250.0)
    baseline = score_home_inference(_centre_guess(fleet), fleet.home, radius_m=250.0)
    assert scored.metrics["share_within_radius"] >= 0.95
    assert scored.metrics["median_error_m"] < 50.0
    assert baseline.metrics["share_within_radius"] <= 0.05
    assert baseline.metrics["median_error_m"] > 2_000.0
    assert scored.details["error_m"].shape == (fleet.n_vehicles,)
    assert "error_m" not in result.details  # scoring returns a copy
    assert "error_m" not in scored.to_dict()["details"]


def test_works_without_trip_ids_and_on_shuffled_rows(fleet):
    logs = {k: v for k, v in fleet.pooled_logs().items() if k in ("pseudonym", "x", "y", "timestamp")}
    perm = np.random.default_rng(0).permutation(len(logs["x"]))
    shuffled = {k: v[perm] for k, v in logs.items()}
    result = HomeInference(POOLED).run(shuffled)
    assert score_home_inference(result, fleet.home).metrics["share_within_radius"] >= 0.95


def test_threat_model_without_pooled_logs_is_refused():
    with pytest.raises(ThreatModelError, match="home inference needs pooled_logs"):
        HomeInference(ThreatModel.of(Access.LOSS, Access.PARAMETERS))
    HomeInference(ThreatModel.of(Access.POOLED_LOGS, Access.LOSS))  # more access is fine


def test_bad_parameters():
    with pytest.raises(ParameterError, match="'cell_m' parameter of HomeInference"):
        HomeInference(POOLED, cell_m=0.0)
    with pytest.raises(ParameterError, match="'night_hour' parameter"):
        HomeInference(POOLED, night_hour=24)
    with pytest.raises(KeyError, match="timestamp"):
        HomeInference(POOLED).run(
            {"pseudonym": np.zeros(2, dtype=np.int64), "x": np.zeros(2), "y": np.zeros(2)}
        )


def _day_logs(days: int) -> dict[str, np.ndarray]:
    """One car: sleeps at A, spends each day at B with several short hops to C and back."""
    a, b, c = (1_000.0, 1_000.0), (5_000.0, 5_000.0), (5_600.0, 5_000.0)
    rows = []
    trip = 0
    for d in range(days):
        t0 = d * 86_400.0
        legs = [
            (a, b, 8.0),
            (b, c, 11.0),
            (c, b, 11.5),
            (b, c, 13.0),
            (c, b, 13.5),
            (b, c, 15.0),
            (c, b, 15.5),
        ]
        legs.append((b, a, 18.0))
        for src, dst, hour in legs:
            for f, dt in ((0.0, 0.0), (1.0, 900.0)):
                x = src[0] + f * (dst[0] - src[0])
                y = src[1] + f * (dst[1] - src[1])
                rows.append((0, x, y, t0 + hour * 3_600.0 + dt, trip))
            trip += 1
    arr = np.array(rows)
    return {
        "pseudonym": arr[:, 0].astype(np.int64),
        "x": arr[:, 1],
        "y": arr[:, 2],
        "timestamp": arr[:, 3],
        "trip": arr[:, 4].astype(np.int64),
    }


def test_nights_outweigh_daytime_stays():
    logs = _day_logs(days=5)
    # B and C hold far more stays than A, but only A holds nights
    result = HomeInference(POOLED).run(logs)
    np.testing.assert_allclose(result.guesses[0], (1_000.0, 1_000.0), atol=1.0)
    # a plain count of trip ends would pick the place of the most stays instead
    places, _ = top_places(logs["pseudonym"], logs["x"], logs["y"], k=1)
    assert np.hypot(*(places[0, 0] - (1_000.0, 1_000.0))) > 1_000.0


def test_missing_pseudonym_is_a_miss(fleet):
    logs = fleet.pooled_logs()
    keep = logs["pseudonym"] != 3
    result = HomeInference(POOLED).run({k: v[keep] for k, v in logs.items()})
    assert np.all(np.isnan(result.guesses[3]))
    scored = score_home_inference(result, fleet.home)
    assert np.isinf(scored.details["error_m"][3])
    assert scored.metrics["share_within_radius"] <= 1.0 - 1.0 / fleet.n_vehicles


def test_top_places_orders_and_separates_places():
    rng = np.random.default_rng(1)
    centres = np.array([[2_000.0, 3_000.0], [8_000.0, 1_000.0], [2_800.0, 3_000.0]])
    sizes = (10, 6, 3)
    pts = np.concatenate([c + rng.normal(0, 10.0, size=(s, 2)) for c, s in zip(centres, sizes, strict=True)])
    pid = np.zeros(len(pts), dtype=np.int64)
    # a second pseudonym with a single place
    pts = np.vstack([pts, [[500.0, 500.0]] * 4])
    pid = np.append(pid, np.ones(4, dtype=np.int64))
    places, support = top_places(pid, pts[:, 0], pts[:, 1], k=3, cell_m=100.0)
    assert places.shape == (2, 3, 2) and support.shape == (2, 3)
    np.testing.assert_allclose(places[0], centres, atol=15.0)  # most points first
    np.testing.assert_allclose(support[0], np.array(sizes) / sum(sizes))
    np.testing.assert_allclose(places[1, 0], (500.0, 500.0))
    assert np.all(np.isnan(places[1, 1:])) and np.all(support[1, 1:] == 0.0)
    with pytest.raises(ParameterError, match="'k' parameter of top_places"):
        top_places(pid, pts[:, 0], pts[:, 1], k=0)
    with pytest.raises(ValueError, match="non-negative"):
        top_places(pid, pts[:, 0], pts[:, 1], weights=-np.ones(len(pid)))


def test_score_home_inference_metrics():
    truth = np.zeros((4, 2))
    guesses = np.array([[100.0, 0.0], [0.0, 200.0], [400.0, 0.0], [np.nan, np.nan]])
    result = AttackResult(attack="x", threat_model=POOLED, guesses=guesses, scores=np.array([1, 1, 0, 0.0]))
    scored = score_home_inference(result, truth, radius_m=250.0)
    assert scored.metrics["share_within_radius"] == 0.5
    assert scored.metrics["median_error_m"] == pytest.approx(300.0)
    assert scored.metrics["mean_confidence"] == pytest.approx(0.5)
    assert score_home_inference(result, truth, radius_m=500.0).metrics["share_within_radius"] == 0.75
    with pytest.raises(ParameterError, match="'radius_m' parameter of score_home_inference"):
        score_home_inference(result, truth, radius_m=0.0)
    with pytest.raises(ValueError, match="shape"):
        score_home_inference(result, truth[:3])


# --------------------------------------------------------------------------- trace re-identification


def _repseudonymised(fleet: AdasFleet) -> tuple[dict, np.ndarray]:
    logs = dict(fleet.pooled_logs())
    pseudonym_of_vehicle = np.random.default_rng(11).permutation(fleet.n_vehicles)
    logs["pseudonym"] = pseudonym_of_vehicle[logs["pseudonym"]]
    return logs, pseudonym_of_vehicle


def test_trace_reidentification_improves_with_sightings(fleet):
    logs, truth = _repseudonymised(fleet)
    shares = []
    for n in (1, 4, 8):
        sightings = make_sightings(logs, truth, n, spatial_noise_m=50.0, time_noise_s=300.0, seed=n)
        result = TraceReidentification(POOLED, radius_m=300.0).fit(sightings).run(logs)
        assert result.metrics == {}  # the attack never sees ground truth
        m = score_reidentification(result, truth).metrics
        assert m["share_wrong"] <= 0.02
        shares.append(m["share_correct"])
    assert shares[0] < 0.6
    assert shares[1] > shares[0] + 0.2
    assert shares[2] >= shares[1] and shares[2] >= 0.8


def test_sightings_lie_on_the_trace_and_each_own_trace_is_consistent(fleet):
    logs, truth = _repseudonymised(fleet)
    sightings = make_sightings(logs, truth[:100], 3, seed=0)
    assert sightings["target"].tolist() == np.repeat(np.arange(100), 3).tolist()
    again = make_sightings(logs, truth[:100], 3, seed=0)
    np.testing.assert_array_equal(sightings["x"], again["x"])
    attack = TraceReidentification(POOLED, radius_m=25.0, time_tolerance_s=0.0).fit(sightings)
    sig, pid = attack.consistency(logs)
    # the logs' pseudonyms are 0 .. n - 1, so a pseudonym's index is its label
    consistent_with_own = pid == truth[:100][sightings["target"][sig]]
    assert np.array_equal(np.unique(sig[consistent_with_own]), np.arange(300))
    result = attack.run(logs)
    assert np.all(result.scores == 1.0)  # the best trace explains every sighting


def test_trace_reidentification_refuses_without_pooled_logs_and_checks_parameters():
    with pytest.raises(ThreatModelError, match="trace re-identification needs pooled_logs"):
        TraceReidentification(ThreatModel.of(Access.RELEASED_TABLE))
    with pytest.raises(ParameterError, match="'radius_m' parameter of TraceReidentification"):
        TraceReidentification(POOLED, radius_m=0.0)
    with pytest.raises(ParameterError, match="'n_sightings' parameter of make_sightings"):
        make_sightings({"pseudonym": np.array([0]), "x": [0.0], "y": [0.0], "timestamp": [0]}, [0], 0, seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        TraceReidentification(POOLED).run(
            {"pseudonym": np.array([0]), "x": [0.0], "y": [0.0], "timestamp": [0]}
        )
