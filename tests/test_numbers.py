"""The one number formatter of the tables and the HTML page: known answers and properties."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_cli.numbers import fmt, number


@pytest.mark.parametrize(
    "value,digits,text",
    [
        (1250.0, 4, "1,250"),
        (999.6, 4, "999.6"),
        (999.96, 4, "1,000"),
        (12345.6, 4, "12,346"),  # was 1.235e+04 in the tables
        (1234.6, 3, "1,235"),  # was 1.23e+03 (a latency budget in ms)
        (150.3, 2, "150"),  # was 1.5e+02
        (3.2188, 3, "3.22"),
        (0.1, 4, "0.1"),
        (0.0123, 4, "0.0123"),
        (0.012345, 4, "0.01235"),
        (0.00837, 3, "0.00837"),
        (0.000123456, 2, "0.00012"),
        (8.6e-07, 2, "8.6e-07"),
        (2.1e-05, 4, "2.1e-05"),
        (-0.05333, 4, "-0.05333"),
        (-0.0, 4, "0"),
        (0.0, 2, "0"),
        (0.99996, 4, "1"),
        (math.nan, 4, "–"),
        (math.inf, 4, "inf"),
        (-math.inf, 4, "-inf"),
    ],
)
def test_number_known_answers(value, digits, text):
    assert number(value, digits) == text
    assert fmt(value, digits) == text


def test_fmt_of_other_values():
    assert [fmt(None), fmt(True), fmt(False), fmt(1234567), fmt(0), fmt("gbm")] == [
        "–",
        "yes",
        "no",
        "1,234,567",
        "0",
        "gbm",
    ]


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 6))
def test_numbers_keep_their_digits_and_never_grow_an_exponent(value, digits):
    text = number(value, digits)
    assert "e+" not in text and "E" not in text
    if abs(value) >= 1e-4:
        assert "e" not in text
    assert float(text.replace(",", "")) == pytest.approx(value, rel=10 ** (1 - digits), abs=0)
