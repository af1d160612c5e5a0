"""The server's checks of a round's updates: batched checks agree with one-at-a-time checks."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.fl.fedavg import weighted_mean_update
from ppml.fl.strategy import ClientResult
from ppml.fl.validation import stack_updates, validate_update, validate_updates

P = 7
EXPECTED = torch.zeros(P)


def _result(kind: str, i: int) -> ClientResult:
    g = torch.Generator().manual_seed(i)
    u = torch.randn(P, generator=g)
    n = 5 + i
    if kind == "nan":
        u[i % P] = float("nan")
    elif kind == "inf":
        u[(i + 1) % P] = float("-inf")
        u[(i + 2) % P] = float("inf")
    elif kind == "huge":  # finite, but the float32 sum of squares overflows
        u[:] = 3e20
    elif kind == "long":
        u = torch.randn(P + 1, generator=g)
    elif kind == "double":
        u = u.double()
    elif kind == "list":
        u = u.tolist()
    elif kind == "zero_n":
        n = 0
    elif kind == "big_norm":
        u = u * 100
    return ClientResult(i, n, u, {})


KINDS = ["ok", "nan", "inf", "huge", "long", "double", "list", "zero_n", "big_norm"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=12), st.sampled_from([None, 10.0, 1e30]))
def test_batched_checks_equal_single_checks(kinds, bound):
    results = [_result(k, i) for i, k in enumerate(kinds)]
    batched = validate_updates(results, EXPECTED, bound)
    single = [validate_update(r, EXPECTED, bound) for r in results]
    assert batched == single
    for k, reason in zip(kinds, batched, strict=True):
        if k in ("nan", "inf"):
            assert "non-finite" in reason
        if k == "huge":
            # finite entries are never called non-finite; only a norm bound below their norm rejects them
            assert (reason is None) == (bound is None or bound > 3e20 * P**0.5)
        if k == "ok":
            assert reason is None


def test_messages_name_what_is_wrong():
    r = validate_updates([_result("nan", 0), _result("inf", 1), _result("zero_n", 2)], EXPECTED)
    assert r[0] == "update has 1 non-finite entries (NaN or Inf)"
    assert r[1] == "update has 2 non-finite entries (NaN or Inf)"
    assert r[2] == "num_examples must be a positive int, got 0"
    assert validate_update(_result("long", 3), EXPECTED) == f"update has shape ({P + 1},), expected ({P},)"


def test_rows_of_one_tensor_are_not_copied_and_others_are_stacked():
    base = torch.randn(4, P)
    rows = [base[i] for i in range(4)]
    assert stack_updates(rows) is base
    # a permuted or partial set of rows is not the base tensor: it is stacked in the given order
    out = stack_updates([rows[1], rows[0], rows[2], rows[3]])
    assert out is not base
    torch.testing.assert_close(out, base[[1, 0, 2, 3]])
    out = stack_updates(rows[:3])
    torch.testing.assert_close(out, base[:3])
    separate = [torch.randn(P) for _ in range(3)]
    torch.testing.assert_close(stack_updates(separate), torch.stack(separate))


def test_weighted_mean_of_rows_matches_float64_reference():
    base = torch.randn(5, P)
    results = [ClientResult(i, n, base[i], {}) for i, n in enumerate([1, 3, 5, 7, 9])]
    w = np.array([1, 3, 5, 7, 9], dtype=np.float64)
    expected = (w[:, None] * base.double().numpy()).sum(0) / w.sum()
    np.testing.assert_allclose(weighted_mean_update(results).numpy(), expected, rtol=1e-12)
