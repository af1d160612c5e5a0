"""Accounting on dp-accounting: reference numbers, calibration, ledger, budget, and the pitfalls it must expose."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from ppml import ParameterError
from ppml.dp.accounting import (
    RDP_ORDERS,
    BudgetExceededError,
    LedgerEntry,
    PrivacyAccountant,
    UnsupportedEventError,
    calibrate_noise_multiplier,
    compute_epsilon,
    event_from_dict,
    event_to_dict,
    poisson_gaussian_event,
)

# The MNIST DP-SGD setting of REFERENCES.md: N = 60,000, batch 256, sigma = 1.1, 60 epochs, delta = 1e-5.
N, BATCH, SIGMA, EPOCHS, DELTA = 60_000, 256, 1.1, 60, 1e-5
Q = BATCH / N
STEPS = math.ceil(EPOCHS * N / BATCH)  # 14063; int(EPOCHS / Q) would give 14062


def test_steps_convention_is_ceil_of_epochs_over_q():
    assert STEPS == 14063
    assert int(EPOCHS / Q) == 14062


def test_mnist_reference_rdp():
    assert compute_epsilon(SIGMA, Q, STEPS, DELTA) == pytest.approx(2.597, abs=1e-3)
    acc = PrivacyAccountant("rdp", DELTA)
    eps = acc.spend(poisson_gaussian_event(SIGMA, Q), label="DP-SGD", count=STEPS)
    assert eps == pytest.approx(2.5967, abs=1e-4)
    assert acc.epsilon() == eps


def test_mnist_reference_pld():
    assert compute_epsilon(SIGMA, Q, STEPS, DELTA, "pld") == pytest.approx(2.382, abs=2e-3)
    acc = PrivacyAccountant("pld", DELTA)
    eps = acc.spend(poisson_gaussian_event(SIGMA, Q, STEPS), label="DP-SGD")
    assert eps == pytest.approx(2.382, abs=2e-3)


def test_conversion_is_stated_and_the_older_conversion_gives_the_tutorial_number():
    """dp-accounting 0.6 converts RDP with the improved bound (2.597); the older one gives TF Privacy's 3.01."""
    assert "Balle" in PrivacyAccountant("rdp").to_dict()["conversion"]
    assert "PLD" in PrivacyAccountant("pld").to_dict()["conversion"]
    tf_orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    ref = rdp.RdpAccountant(tf_orders).compose(poisson_gaussian_event(SIGMA, Q), STEPS)
    orders, curve = np.asarray(tf_orders), ref.rdp
    older = float(np.min(curve - math.log(DELTA) / (orders - 1)))
    assert older == pytest.approx(3.01, abs=0.01)
    assert ref.get_epsilon(DELTA) == pytest.approx(2.597, abs=1e-3)


@pytest.mark.parametrize(
    ("target", "delta", "q", "steps"),
    [(2.597, DELTA, Q, STEPS), (1.0, 1e-6, 0.01, 1000), (8.0, 1e-5, 0.1, 100), (0.5, 1e-5, 1.0, 1)],
)
def test_rdp_calibration_round_trips_within_one_percent(target, delta, q, steps):
    z = calibrate_noise_multiplier(target, delta, q, steps)
    eps = compute_epsilon(z, q, steps, delta)
    assert eps <= target
    assert eps >= 0.99 * target
    # and no noticeably smaller noise multiplier would do
    assert compute_epsilon(z / 1.01, q, steps, delta) > target


def test_mnist_calibration_recovers_sigma():
    assert calibrate_noise_multiplier(2.597, DELTA, Q, STEPS) == pytest.approx(SIGMA, rel=1e-2)


def test_pld_calibration_round_trips():
    kw = {"value_discretization_interval": 1e-3}
    z = calibrate_noise_multiplier(2.39, DELTA, Q, STEPS, accountant="pld", **kw)
    assert z == pytest.approx(SIGMA, rel=1e-2)
    eps = compute_epsilon(z, Q, STEPS, DELTA, "pld", **kw)
    assert 0.99 * 2.39 <= eps <= 2.39


def test_impossible_calibration_targets_raise_clearly():
    with pytest.raises(ParameterError, match="'target_epsilon'.*cannot be reached"):
        calibrate_noise_multiplier(1e-3, 1e-5, 1.0, 100_000)
    with pytest.raises(ParameterError, match="'delta' parameter of calibrate_noise_multiplier"):
        calibrate_noise_multiplier(1.0, 1.0, 0.01, 100)
    with pytest.raises(ParameterError, match="'target_epsilon'"):
        calibrate_noise_multiplier(0.0, 1e-5, 0.01, 100)
    with pytest.raises(ParameterError, match="'target_epsilon'"):
        calibrate_noise_multiplier(math.inf, 1e-5, 0.01, 100)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"noise_multiplier": -0.1}, "noise_multiplier"),
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"accountant": "prv"}, "accountant"),
    ],
)
def test_compute_epsilon_validates_and_names_the_parameter(kwargs, param):
    args = {"noise_multiplier": 1.0, "sampling_rate": 0.01, "steps": 10, "delta": 1e-5, **kwargs}
    with pytest.raises(ParameterError, match=f"'{param}' parameter of compute_epsilon") as info:
        compute_epsilon(**args)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"accountant": "moments"}, "accountant"),
        ({"delta": 0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"budget_epsilon": 0.0}, "budget_epsilon"),
        ({"neighbouring": "substitute"}, "neighbouring"),
    ],
)
def test_accountant_validates_its_parameters(kwargs, param):
    with pytest.raises(ParameterError, match=f"'{param}' parameter of PrivacyAccountant"):
        PrivacyAccountant(**kwargs)


def test_spend_validates_count_label_and_params():
    acc = PrivacyAccountant()
    event = poisson_gaussian_event(1.0, 0.01)
    with pytest.raises(ParameterError, match="'count'"):
        acc.spend(event, label="x", count=0)
    with pytest.raises(ParameterError, match="'label'"):
        acc.spend(event, label=3)
    with pytest.raises(ParameterError, match="'params'.*JSON-able"):
        acc.spend(event, label="x", params={"model": object()})
    assert acc.ledger == () and acc.epsilon() == 0.0


def test_zero_noise_gives_infinite_epsilon_and_json_still_works():
    assert compute_epsilon(0.0, 0.01, 10, 1e-5) == math.inf
    acc = PrivacyAccountant()
    assert acc.spend(poisson_gaussian_event(0.0, 0.5), label="no noise") == math.inf
    data = json.loads(json.dumps(acc.to_dict(), allow_nan=False))
    assert data["epsilon"] == "inf" and float(data["epsilon"]) == math.inf


# ---- the pitfalls of REFERENCES.md: each mis-stated parameter moves epsilon by the documented amount


@pytest.mark.parametrize(
    ("pitfall", "z", "q", "steps", "reported", "rel"),
    [
        ("accountant told 60 steps instead of 14,063", SIGMA, Q, 60, 0.685, 0.01),
        ("no credit for sampling (60 full-batch epochs)", SIGMA, 1.0, 60, 57.0, 0.01),
        ("batches 4x larger than the accountant was told", SIGMA, 4 * Q, STEPS, 12.9, 0.01),
        ("replace-one neighbours without doubling the noise", SIGMA / 2, Q, STEPS, 16.4, 0.01),
        ("noise sized for the sum added to the mean", SIGMA / BATCH, Q, STEPS, 4e8, 0.1),
    ],
)
def test_pitfalls_change_epsilon_by_the_documented_amount(pitfall, z, q, steps, reported, rel):
    """The true epsilon of each mistake (REFERENCES.md); the accountant's answer is only as right as its inputs."""
    assert compute_epsilon(z, q, steps, DELTA) == pytest.approx(reported, rel=rel), pitfall


def test_an_accountant_told_fewer_steps_reports_a_much_smaller_epsilon():
    event = poisson_gaussian_event(SIGMA, Q)
    told_too_few, told_right = PrivacyAccountant(), PrivacyAccountant()
    told_too_few.spend(event, label="epoch-count mistaken for steps", count=EPOCHS)
    told_right.spend(event, label="steps", count=STEPS)
    assert told_too_few.epsilon() < told_right.epsilon() / 3
    # the ledger shows the mistake: counts sum to 60, not 14,063
    assert sum(e.count for e in told_too_few.ledger) == EPOCHS
    # epsilon grows with every step
    eps = [compute_epsilon(SIGMA, Q, t, DELTA) for t in (10, 100, 1000, 10_000)]
    assert eps == sorted(eps) and len(set(eps)) == 4


@pytest.mark.parametrize(("accountant", "steps", "rel"), [("rdp", 300, 1e-12), ("pld", 20, 1e-6)])
def test_spend_with_count_equals_that_many_single_spends(accountant, steps, rel):
    event = poisson_gaussian_event(SIGMA, Q)
    kw = {"value_discretization_interval": 1e-3}
    once, many = PrivacyAccountant(accountant, **kw), PrivacyAccountant(accountant, **kw)
    once.spend(event, label="all steps", count=steps)
    for _ in range(steps):
        many.spend(event, label="one step")
    assert once.epsilon() == pytest.approx(many.epsilon(), rel=rel)
    assert sum(e.count for e in many.ledger) == steps


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_budget_refusal_leaves_the_accountant_unchanged(accountant):
    event = poisson_gaussian_event(1.0, 0.05)
    kw = {"value_discretization_interval": 1e-3}
    acc = PrivacyAccountant(accountant, 1e-5, budget_epsilon=5.0, **kw)
    eps = acc.spend(event, label="warm-up", count=50, params={"steps": 50})
    before = acc.to_dict()
    assert acc.would_exceed(event, count=1000)
    assert acc.to_dict() == before  # asking does not compose
    with pytest.raises(BudgetExceededError, match="above the budget 5"):
        acc.spend(event, label="too much", count=1000)
    assert acc.to_dict() == before
    assert acc.epsilon() == eps and len(acc.ledger) == 1
    assert acc.epsilon(1e-6) == pytest.approx(
        PrivacyAccountant(accountant, 1e-6, **kw).spend(event, label="x", count=50)
    )
    # a spend that fits still works after the refusal, and matches a fresh accountant
    assert not acc.would_exceed(event, count=10)
    assert acc.spend(event, label="more", count=10) == pytest.approx(
        PrivacyAccountant(accountant, **kw).spend(event, label="x", count=60),
        rel=1e-6,
    )


def test_would_exceed_without_budget_is_false_but_still_refuses_unsupported_events():
    acc = PrivacyAccountant()
    assert not acc.would_exceed(poisson_gaussian_event(0.5, 0.5), count=10**6)
    with pytest.raises(UnsupportedEventError):
        acc.would_exceed(dp_accounting.UnsupportedDpEvent())


def _run_a_few_phases(acc: PrivacyAccountant) -> None:
    for q, z, steps in [(0.01, 1.1, 500), (0.02, 0.9, 200), (0.01, 1.1, 300)]:
        params = {"sampling_rate": q, "noise_multiplier": z, "steps": steps, "sampling": "poisson"}
        acc.spend(poisson_gaussian_event(z, q), label=f"phase q={q}", count=steps, params=params)


def test_to_dict_recomputes_independently_with_a_fresh_rdp_accountant():
    acc = PrivacyAccountant("rdp", 1e-5)
    _run_a_few_phases(acc)
    data = json.loads(json.dumps(acc.to_dict(), allow_nan=False))
    assert set(data) >= {
        "accountant",
        "conversion",
        "neighbouring",
        "delta",
        "epsilon",
        "budget_epsilon",
        "ledger",
    }
    # from the ledger *params* alone
    fresh = rdp.RdpAccountant(data["rdp_orders"])
    for entry in data["ledger"]:
        p = entry["params"]
        event = dp_accounting.PoissonSampledDpEvent(
            p["sampling_rate"], dp_accounting.GaussianDpEvent(p["noise_multiplier"])
        )
        fresh.compose(event, p["steps"])
    assert fresh.get_epsilon(data["delta"]) == pytest.approx(data["epsilon"], rel=1e-12)
    # and from the ledger *events*, with dp-accounting's default orders (a subset of ppml's)
    default = rdp.RdpAccountant()
    for entry in data["ledger"]:
        default.compose(event_from_dict(entry["event"]), entry["count"])
    assert set(default.orders) <= set(RDP_ORDERS)
    assert data["epsilon"] <= default.get_epsilon(data["delta"]) <= data["epsilon"] * 1.01


def test_to_dict_recomputes_independently_with_a_fresh_pld_accountant():
    acc = PrivacyAccountant("pld", 1e-5, value_discretization_interval=1e-3)
    _run_a_few_phases(acc)
    data = json.loads(json.dumps(acc.to_dict(), allow_nan=False))
    fresh = pld.PLDAccountant(value_discretization_interval=data["value_discretization_interval"])
    for entry in data["ledger"]:
        fresh.compose(event_from_dict(entry["event"]), entry["count"])
    assert fresh.get_epsilon(data["delta"]) == pytest.approx(data["epsilon"], rel=1e-9)


def test_from_dict_replays_the_ledger():
    acc = PrivacyAccountant("rdp", 1e-5, budget_epsilon=50.0)
    _run_a_few_phases(acc)
    again = PrivacyAccountant.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert again.to_dict() == acc.to_dict()
    assert again.ledger == acc.ledger and isinstance(again.ledger[0], LedgerEntry)


def test_event_dicts_round_trip_nested_events():
    event = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(poisson_gaussian_event(1.1, 0.01), 10),
            dp_accounting.LaplaceDpEvent(2.0),
            dp_accounting.SampledWithoutReplacementDpEvent(1000, 10, dp_accounting.GaussianDpEvent(1.0)),
        ]
    )
    data = event_to_dict(event)
    assert json.loads(json.dumps(data)) == data
    assert event_from_dict(data) == event
    with pytest.raises(ParameterError, match="class_name"):
        event_from_dict({"class_name": "os.system"})


def test_numpy_params_are_stored_as_plain_json():
    acc = PrivacyAccountant()
    acc.spend(
        poisson_gaussian_event(1.0, 0.01),
        label="x",
        count=np.int64(3),
        params={"q": np.float64(0.01), "shape": np.array([2, 3])},
    )
    entry = acc.ledger[0]
    assert entry.count == 3 and type(entry.count) is int
    assert entry.params == {"q": 0.01, "shape": [2, 3]}
    json.dumps(acc.to_dict(), allow_nan=False)


def test_repeated_charges_record_the_params_as_they_are_at_each_charge():
    """Charges of one event object with one params dict reuse their ledger forms, but a dict changed in
    between is recorded as it is at the charge."""
    acc = PrivacyAccountant()
    event = poisson_gaussian_event(1.0, 0.01)
    params = {"batch": 10}
    acc.charge(event, label="x", params=params)
    acc.charge(event, label="x", params=params)
    params["batch"] = 20
    acc.charge(event, label="x", params=params)
    assert [(e.count, e.params) for e in acc.ledger] == [(2, {"batch": 10}), (1, {"batch": 20})]
    assert acc.ledger[0].params is not params


def test_unsupported_events_raise_and_change_nothing():
    acc = PrivacyAccountant()
    acc.spend(poisson_gaussian_event(1.0, 0.01), label="x")
    before = acc.to_dict()
    with pytest.raises(UnsupportedEventError) as info:
        acc.spend(dp_accounting.UnsupportedDpEvent(), label="mystery")
    assert isinstance(info.value, dp_accounting.UnsupportedEventError)
    # the PLD accountant has no Poisson-sampled zCDP event: refused, not approximated
    with pytest.raises(UnsupportedEventError):
        PrivacyAccountant("pld").spend(dp_accounting.ZCDpEvent(0.1), label="zcdp")
    assert acc.to_dict() == before


# ---- replace-one neighbours


def test_rdp_replace_one_refuses_events_it_would_misread():
    acc = PrivacyAccountant("rdp", neighbouring="replace_one")
    for event in (
        dp_accounting.GaussianDpEvent(2.0),
        dp_accounting.LaplaceDpEvent(1.0),
        dp_accounting.SampledWithoutReplacementDpEvent(60_000, 256, dp_accounting.GaussianDpEvent(1.1)),
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 5),
    ):
        with pytest.raises(UnsupportedEventError, match="replace_one"):
            acc.spend(event, label="refused")
    # the library itself refuses Poisson sampling under replace-one
    with pytest.raises(UnsupportedEventError, match="REPLACE_ONE"):
        acc.spend(poisson_gaussian_event(1.1, Q), label="refused")
    assert acc.ledger == () and acc.epsilon() == 0.0


def test_rdp_replace_one_supports_what_the_library_analyses_under_replace_one():
    event = dp_accounting.RandomizedResponseDpEvent(noise_parameter=0.5, num_buckets=4)
    acc = PrivacyAccountant("rdp", neighbouring="replace_one")
    ref = rdp.RdpAccountant(RDP_ORDERS, neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    assert acc.spend(event, label="RR", count=3) == pytest.approx(
        ref.compose(event, 3).get_epsilon(1e-5), rel=1e-12
    )
    with pytest.raises(UnsupportedEventError):  # randomized response needs replace-one
        PrivacyAccountant("rdp").spend(event, label="RR")


def test_pld_replace_one_doubles_the_sensitivity():
    """Under replace-one a record can move the sum by 2C: Gaussian(2z) replace-one == Gaussian(z) add/remove."""
    replace = PrivacyAccountant("pld", neighbouring="replace_one")
    add_remove = PrivacyAccountant("pld")
    assert replace.spend(dp_accounting.GaussianDpEvent(4.0), label="g") == pytest.approx(
        add_remove.spend(dp_accounting.GaussianDpEvent(2.0), label="g"), rel=1e-3
    )
    kw = {"value_discretization_interval": 1e-3}
    eps_replace = compute_epsilon(SIGMA, Q, STEPS, DELTA, "pld", neighbouring="replace_one", **kw)
    eps_add_remove = compute_epsilon(SIGMA, Q, STEPS, DELTA, "pld", **kw)
    assert 1.5 * eps_add_remove < eps_replace < 16.4  # costlier, but tighter than halving the noise
    with pytest.raises(UnsupportedEventError):
        replace.spend(dp_accounting.LaplaceDpEvent(1.0), label="laplace")


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_charge_records_what_spend_records_and_its_epsilon_is_the_one_after_it(accountant):
    event = poisson_gaussian_event(1.0, 0.05)
    kw = {"value_discretization_interval": 1e-3}
    charged, spent = PrivacyAccountant(accountant, **kw), PrivacyAccountant(accountant, **kw)
    after_first = charged.charge(event, label="step", params={"q": 0.05})
    expected_first = spent.spend(event, label="step", params={"q": 0.05})
    for _ in range(9):
        charged.charge(event, label="step", params={"q": 0.05})
        spent.spend(event, label="step", params={"q": 0.05})
    assert charged.ledger == spent.ledger and charged.ledger[0].count == 10
    assert charged.epsilon() == pytest.approx(spent.epsilon(), rel=1e-12)
    # the function returned by a charge keeps the epsilon right after that charge
    assert after_first() == pytest.approx(expected_first, rel=1e-12)
    assert after_first() < charged.epsilon()


@pytest.mark.parametrize(("accountant", "budget"), [("rdp", 1.2), ("pld", 0.9)])
def test_a_run_of_charges_stops_exactly_where_single_spends_stop(accountant, budget):
    # The budget check of repeated charges counts down from a precomputed allowance; it must refuse
    # the same step as checking epsilon before every step, and a different event in between must not
    # reuse the allowance.
    event = poisson_gaussian_event(2.0, 0.05)
    kw = {"value_discretization_interval": 1e-3}
    reference = PrivacyAccountant(accountant, budget_epsilon=budget, **kw)
    allowed = 0
    while not reference.would_exceed(event, count=1):
        reference.spend(event, label="step")
        allowed += 1
    assert 20 < allowed < 300
    acc = PrivacyAccountant(accountant, budget_epsilon=budget, **kw)
    for _ in range(allowed):
        acc.charge(event, label="step")
    before = acc.to_dict()
    with pytest.raises(BudgetExceededError, match=f"above the budget {budget:g}"):
        acc.charge(event, label="step")
    assert acc.to_dict() == before
    assert acc.epsilon() <= budget and acc.epsilon() == pytest.approx(reference.epsilon(), rel=1e-9)
    # a cheaper event still fits, and then the first event is checked afresh (it no longer fits)
    tiny = poisson_gaussian_event(50.0, 0.001)
    acc.charge(tiny, label="tiny")
    with pytest.raises(BudgetExceededError):
        acc.charge(event, label="step")


def test_pld_composes_a_run_of_identical_steps_once(monkeypatch):
    # A DP-SGD run charges one event per step; the PLD accountant must not build a PLD per step
    # (about 0.3 s each): composing is a count, and the budget check searches the allowance once.
    import ppml.dp.accounting as accounting

    builds = []
    original = accounting._compose

    def counting(acc, event, count, *a):
        builds.append(count)
        return original(acc, event, count, *a)

    monkeypatch.setattr(accounting, "_compose", counting)
    event = poisson_gaussian_event(1.1, 0.01)
    acc = PrivacyAccountant("pld", budget_epsilon=8.0, value_discretization_interval=1e-3)
    for _ in range(3000):
        acc.charge(event, label="DP-SGD")
    assert len(builds) < 80  # the allowance search: a doubling and a bisection, not 3,000 compositions
    eps = acc.epsilon()
    fresh = PrivacyAccountant("pld", value_discretization_interval=1e-3).spend(event, label="x", count=3000)
    assert eps == pytest.approx(fresh, rel=1e-12)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_an_accountant_and_its_charges_pickle_with_their_state(accountant):
    import pickle

    acc = PrivacyAccountant(accountant, budget_epsilon=5.0, value_discretization_interval=1e-3)
    after = None
    for _ in range(3):
        after = acc.charge(poisson_gaussian_event(1.0, 0.05), label="step")
    copy_acc, copy_after = pickle.loads(pickle.dumps((acc, after)))
    assert copy_after() == pytest.approx(after(), rel=1e-12)
    assert copy_acc.epsilon() == pytest.approx(acc.epsilon(), rel=1e-12) and copy_acc.ledger == acc.ledger
