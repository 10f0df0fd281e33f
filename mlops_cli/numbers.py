"""Numbers as people read them: one formatter for the terminal tables (render.py) and the HTML page (html.py)."""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"  # None and NaN


def fmt(value: Any, digits: int = 4) -> str:
    """Any report value as text: – for None and NaN, yes/no for booleans, numbers by `number`, the rest by str."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value, digits)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def number(value: float, digits: int = 4) -> str:
    """`digits` significant digits at a glance: 12,346 and 999.6, never 1.235e+04; 0.01235; an exponent only below
    1e-4 (2.1e-05), where zeros would hide the digits."""
    if value != value:
        return MISSING
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    value += 0.0  # -0.0 prints as 0
    if value == 0:
        return "0"
    if abs(value) < 1e-4:
        return f"{value:.{digits}g}"
    # Fixed point with as many decimals as the significant digits need: `g` without its exponent above 1e4.
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
