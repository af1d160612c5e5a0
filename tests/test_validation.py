import pytest

from ppml._validation import Interval, Options, ParameterError, check_param


def test_message_format_names_parameter_owner_range_and_value():
    with pytest.raises(ParameterError) as exc:
        check_param("fraction_fit", 1.5, "FedAvg", Interval(float, 0, 1, "right"))
    assert str(exc.value) == (
        "The 'fraction_fit' parameter of FedAvg must be a float in the range (0, 1]. Got 1.5 instead."
    )
    assert exc.value.param == "fraction_fit"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, False),
        (1e-9, True),
        (1, True),
        (1.0000001, False),
        (float("nan"), False),
        (True, False),
        ("0.5", False),
    ],
)
def test_interval_left_open_right_closed(value, ok):
    interval = Interval(float, 0, 1, "right")
    assert interval.contains(value) is ok


def test_int_interval_rejects_floats_and_bools():
    interval = Interval(int, 1, None, "left")
    assert interval.contains(3)
    assert not interval.contains(3.0)
    assert not interval.contains(True)
    assert not interval.contains(0)


def test_or_of_constraints_and_options():
    check_param("batch_size", None, "X", Interval(int, 1, None), None)
    check_param("name", "a", "X", Options(("a", "b")))
    with pytest.raises(ParameterError, match=r"one of \{'a', 'b'\}. Got 'c' instead"):
        check_param("name", "c", "X", Options(("a", "b")))
