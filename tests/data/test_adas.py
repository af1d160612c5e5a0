"""The synthetic ADAS fleet: determinism, schema, usage patterns, calendar, trips, policy and habits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from ppml._validation import ParameterError
from ppml.data.adas import (
    ACTIONS,
    FEATURE_SCALES,
    FEATURES,
    STYLES,
    USAGES,
    AdasFleet,
    AdasRecords,
    make_fleet,
)

COMMUTER, OCCASIONAL, WEEKEND = (USAGES.index(u) for u in ("commuter", "occasional", "weekend"))


@pytest.fixture(scope="module")
def fleet() -> AdasFleet:
    return make_fleet(seed=0)


def _arrays(f: AdasFleet) -> dict[str, np.ndarray]:
    out = {
        "home": f.home,
        "work": f.work,
        "places": f.places,
        "style": f.style,
        "usage": f.usage,
        "availability": f.availability,
        "offsets": f.offsets,
    }
    out.update({f"records.{k}": v for k, v in f.records.as_dict().items()})
    return out


def test_same_seed_same_fleet_and_other_seed_other_fleet(fleet):
    again = make_fleet(seed=0)
    for name, arr in _arrays(fleet).items():
        np.testing.assert_array_equal(arr, _arrays(again)[name], err_msg=name)
    other = make_fleet(seed=1)
    assert not np.array_equal(fleet.home, other.home)
    assert fleet.n_records != other.n_records or not np.array_equal(fleet.records.x, other.records.x)
    # a Generator seed gives the same fleet as the int it was made from
    from_gen = make_fleet(seed=np.random.default_rng(0))
    np.testing.assert_array_equal(from_gen.records.action, fleet.records.action)


def test_shapes_dtypes_and_offsets(fleet):
    n = fleet.n_vehicles
    assert n == 500
    assert fleet.home.shape == fleet.work.shape == (n, 2) and fleet.home.dtype == np.float64
    assert fleet.places.shape == (n, 3, 2)
    assert fleet.style.shape == fleet.usage.shape == (n,)
    assert fleet.style.dtype == fleet.usage.dtype == np.int8
    assert set(np.unique(fleet.style)) == {0, 1, 2} and set(np.unique(fleet.usage)) == {0, 1, 2}
    assert fleet.availability.shape == (n, 7, 24) and fleet.availability.dtype == bool
    assert fleet.offsets.shape == (n + 1,) and fleet.offsets.dtype == np.int64
    assert fleet.offsets[0] == 0 and fleet.offsets[-1] == len(fleet.records) == fleet.n_records
    assert np.all(np.diff(fleet.offsets) > 0)  # every vehicle drove at least once
    for name, dtype in AdasRecords.DTYPES.items():
        col = fleet.records[name]
        assert col.dtype == dtype and col.shape == (fleet.n_records,), name
    for name in ("x", "y", "timestamp", "speed", "acceleration", "lead_distance", "relative_speed"):
        assert name in fleet.records.columns
    assert np.all((fleet.records.x >= 0) & (fleet.records.x <= fleet.city_size_m))
    assert np.all((fleet.records.timestamp >= 0) & (fleet.records.timestamp < (fleet.days + 1) * 86_400))
    assert set(np.unique(fleet.records.action)) == set(range(len(ACTIONS)))
    assert np.all(fleet.records.lead_distance <= 150.0) and np.all(fleet.records.time_to_collision <= 20.0)
    with pytest.raises(KeyError, match="no column"):
        fleet.records["vehicle"]


def test_records_sorted_by_vehicle_then_time(fleet):
    owners = fleet.owners()
    np.testing.assert_array_equal(np.bincount(owners, minlength=fleet.n_vehicles), fleet.record_counts())
    t = fleet.records.timestamp.astype(np.int64)
    same = owners[1:] == owners[:-1]
    assert np.all(t[1:][same] >= t[:-1][same])
    assert np.all(np.diff(fleet.records.trip) >= 0)
    # a trip never spans two vehicles
    trip_owner = np.full(fleet.records.trip.max() + 1, -1)
    trip_owner[fleet.records.trip] = owners
    assert np.all(trip_owner[fleet.records.trip] == owners)


def test_records_of_are_views_of_the_right_rows(fleet):
    v = 17
    rows = fleet.records_of(v)
    lo, hi = fleet.offsets[v], fleet.offsets[v + 1]
    assert set(rows) == set(AdasRecords.DTYPES)
    assert len(rows["x"]) == hi - lo
    assert np.shares_memory(rows["x"], fleet.records.x)
    np.testing.assert_array_equal(rows["action"], fleet.records.action[lo:hi])
    with pytest.raises(ParameterError, match="'vehicle' parameter"):
        fleet.records_of(fleet.n_vehicles)


def test_fleet_is_immutable(fleet):
    with pytest.raises(dataclasses.FrozenInstanceError):
        fleet.n_vehicles = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        fleet.home[0, 0] = 1.0
    with pytest.raises(ValueError):
        fleet.records.action[0] = 0


def test_record_counts_span_two_orders_of_magnitude(fleet):
    counts = fleet.record_counts()
    assert counts.max() >= 100 * counts.min()
    med = [np.median(counts[fleet.usage == u]) for u in (COMMUTER, OCCASIONAL, WEEKEND)]
    assert med[0] > 2 * med[1] and med[0] > 2 * med[2]  # commuters log the most


def test_weekend_drivers_are_off_on_weekdays_and_drive_on_weekends(fleet):
    weekend = fleet.usage == WEEKEND
    assert weekend.sum() > 20
    assert not fleet.availability[weekend, :5, :].any()
    assert fleet.availability[weekend, 5:, :].any(axis=(1, 2)).all()
    day = (fleet.records.timestamp // 86_400) % 7
    on_weekend = np.repeat(weekend, fleet.record_counts())
    assert np.all(day[on_weekend] >= 5)
    assert np.any(day[~on_weekend] < 5)
    # commuters are plugged in at 3 am every day; every car is available at some time
    commuter = fleet.usage == COMMUTER
    assert fleet.availability[commuter, :, 3].all()
    assert fleet.availability.any(axis=(1, 2)).all()


def test_available_is_the_calendar_slice(fleet):
    np.testing.assert_array_equal(fleet.available(5, 14), fleet.availability[:, 5, 14])
    assert fleet.available(0, 3).dtype == bool
    with pytest.raises(ParameterError, match="'day_of_week' parameter of AdasFleet.available"):
        fleet.available(7, 0)
    with pytest.raises(ParameterError, match="'hour' parameter"):
        fleet.available(0, 24)


def test_trips_start_and_end_at_home_or_work(fleet):
    r = fleet.records
    owners = fleet.owners()
    trip = r.trip
    first = np.ones(len(trip), dtype=bool)
    first[1:] = trip[1:] != trip[:-1]
    last = np.append(first[1:], True)
    home = fleet.home[owners]
    d_home = np.hypot(r.x - home[:, 0], r.y - home[:, 1])
    # every trip leaves from home or comes back home (first fixes can lag up to 400 m down the road)
    starts_home = d_home[first] < 450.0
    ends_home = d_home[last] < 100.0
    assert np.all(starts_home | ends_home)
    assert ends_home.mean() > 0.45
    # every vehicle's last trip of the period ends at home
    assert np.all(d_home[fleet.offsets[1:] - 1] < 100.0)
    # commuters drive to work
    work = fleet.work[owners]
    d_work = np.hypot(r.x - work[:, 0], r.y - work[:, 1])
    commuter_trip_end = (fleet.usage[owners] == COMMUTER)[last]
    assert np.mean(d_work[last][commuter_trip_end] < 150.0) > 0.3
    assert np.mean(d_work[last][~commuter_trip_end] < 150.0) < 0.05


def test_style_changes_the_action_distribution(fleet):
    style = np.repeat(fleet.style, fleet.record_counts())
    table = np.array(
        [np.bincount(fleet.records.action[style == s], minlength=len(ACTIONS)) for s in range(3)]
    )
    assert stats.chi2_contingency(table).pvalue < 1e-20
    share = table / table.sum(axis=1, keepdims=True)
    lane = ACTIONS.index("change_lane")
    assert share[STYLES.index("aggressive"), lane] > 2 * share[STYLES.index("cautious"), lane]
    # and the way the car is driven: aggressive drivers go faster relative to the limit
    ratio = fleet.records.speed / fleet.records.speed_limit
    assert np.median(ratio[style == 2]) > np.median(ratio[style == 0]) + 0.1


def test_drivers_of_one_style_differ(fleet):
    """Per-driver habits: within a style, vehicles differ far beyond sampling noise."""
    normal = np.flatnonzero((fleet.style == STYLES.index("normal")) & (fleet.record_counts() >= 50))
    counts = fleet.record_counts()[normal]
    # preferred lateral position: spread of per-vehicle means versus its standard error
    means = np.array([fleet.records_of(v)["lane_offset"].mean() for v in normal])
    within_var = np.mean([fleet.records_of(v)["lane_offset"].var() for v in normal])
    assert means.var() > 5 * within_var / np.median(counts)
    # the actions themselves: a chi-square test of homogeneity across drivers of the same style, on
    # arterial roads (the same road for everyone)
    rows = []
    for v in normal:
        rec = fleet.records_of(v)
        rows.append(np.bincount(rec["action"][rec["road_type"] == 1], minlength=len(ACTIONS)))
    table = np.array(rows)
    table = table[table.sum(axis=1) >= 30]
    assert stats.chi2_contingency(table).pvalue < 1e-30  # without habits: about 1e-6


def test_a_model_fits_its_training_vehicles_better_than_unseen_ones(fleet):
    from sklearn.ensemble import RandomForestClassifier

    ds = fleet.to_dataset()
    rng = np.random.default_rng(0)
    normal = np.flatnonzero(fleet.style == STYLES.index("normal"))
    members = rng.choice(normal, size=len(normal) // 2, replace=False)
    others = np.setdiff1d(normal, members)
    is_member = np.isin(ds.owners, members)
    is_other = np.isin(ds.owners, others)
    model = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1)
    model.fit(ds.X[is_member], ds.y[is_member])
    acc_members = model.score(ds.X[is_member], ds.y[is_member])
    acc_others = model.score(ds.X[is_other], ds.y[is_other])
    majority = np.bincount(ds.y[is_other]).max() / is_other.sum()
    assert acc_members > acc_others + 0.1
    assert acc_others > majority + 0.25  # and what it learned carries over to unseen drivers


def test_to_dataset(fleet):
    ds = fleet.to_dataset()
    assert ds.name == "adas" and ds.source == "synthetic"
    assert ds.X.dtype == np.float32 and ds.X.shape == (fleet.n_records, len(FEATURES))
    assert ds.y.dtype == np.int64 and ds.num_classes == len(ACTIONS) and ds.class_names == ACTIONS
    assert ds.feature_names == FEATURES == AdasFleet.FEATURES
    np.testing.assert_array_equal(ds.owners, np.repeat(np.arange(fleet.n_vehicles), fleet.record_counts()))
    assert ds.owners.dtype == np.int64
    np.testing.assert_array_equal(ds.y, fleet.records.action)
    for j, name in enumerate(FEATURES):
        np.testing.assert_allclose(ds.X[:, j], fleet.records[name] / FEATURE_SCALES[name], rtol=1e-6)
    assert np.abs(ds.X).max() < 5.0  # the fixed scales put every feature in a small range
    np.testing.assert_array_equal(ds.meta["style"], fleet.style)
    # the owners of a vehicle's rows are that vehicle
    v = 42
    assert np.all(ds.owners[fleet.offsets[v] : fleet.offsets[v + 1]] == v)

    loc = fleet.to_dataset(include_location=True)
    assert loc.X.shape == (fleet.n_records, len(FEATURES) + 2)
    assert loc.feature_names[-2:] == ("x", "y")
    assert np.all(np.abs(loc.X[:, -2:]) <= 1.0)
    np.testing.assert_array_equal(loc.X[:, : len(FEATURES)], ds.X)
    with pytest.raises(ParameterError, match="'include_location' parameter"):
        fleet.to_dataset(include_location="yes")  # type: ignore[arg-type]


def test_pooled_logs_and_upload_size(fleet):
    logs = fleet.pooled_logs()
    assert {"pseudonym", "x", "y", "timestamp", "trip", "speed", "action"} <= set(logs)
    np.testing.assert_array_equal(logs["pseudonym"], fleet.owners())
    assert np.shares_memory(logs["x"], fleet.records.x)
    per_vehicle = fleet.nbytes_per_vehicle()
    assert per_vehicle.shape == (fleet.n_vehicles,) and per_vehicle.dtype == np.int64
    assert per_vehicle.sum() == fleet.records.nbytes
    np.testing.assert_array_equal(per_vehicle, fleet.record_counts() * fleet.records.bytes_per_record)


def test_small_and_long_fleets():
    tiny = make_fleet(1, seed=3, days=7, city_size_m=5_000.0)
    assert tiny.n_vehicles == 1 and tiny.n_records >= 4
    assert np.all(tiny.home <= 5_000.0) and np.all(tiny.records.x <= 5_000.0)
    year = make_fleet(5, seed=3, days=366)
    assert year.records.timestamp.max() > 300 * 86_400


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n_vehicles": 0}, "n_vehicles"),
        ({"n_vehicles": 2.5}, "n_vehicles"),
        ({"n_vehicles": True}, "n_vehicles"),
        ({"days": 6}, "days"),
        ({"days": 367}, "days"),
        ({"city_size_m": 0.0}, "city_size_m"),
        ({"city_size_m": float("nan")}, "city_size_m"),
        ({"seed": None}, "seed"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_parameters_raise_parameter_error(kwargs, param):
    args = {"n_vehicles": 5, "seed": 0} | kwargs
    n = args.pop("n_vehicles")
    with pytest.raises(ParameterError, match=f"The '{param}' parameter of make_fleet must be") as err:
        make_fleet(n, **args)
    assert err.value.param == param


def test_location_encoding_is_a_fixed_sinusoidal_map_of_the_position():
    from ppml import ParameterError

    fleet = make_fleet(n_vehicles=30, seed=1)
    plain = fleet.to_dataset(include_location=True)
    enc = fleet.to_dataset(include_location=True, location_frequencies=3)
    assert enc.X.shape == (plain.X.shape[0], plain.X.shape[1] + 12)
    np.testing.assert_array_equal(enc.X[:, : plain.X.shape[1]], plain.X)
    x = plain.X[:, -2].astype(np.float64)
    k = enc.feature_names.index("sin(x*pi*2^2)")
    np.testing.assert_allclose(enc.X[:, k], np.sin(np.pi * 4 * x), atol=1e-5)
    assert enc.feature_names[k + 1] == "cos(x*pi*2^2)"
    with pytest.raises(ParameterError, match="location_frequencies"):
        fleet.to_dataset(location_frequencies=2)
