"""Whether a feature drifted, and how badly: the decision rule, its thresholds and the severity bands.

Decision rule (`--stattest auto`, the default), per feature:
  * large samples (both sides > 1,000 non-null values): effect size decides, because at that size a p-value flags
    shifts nobody cares about: numeric drift when Wasserstein / reference std >= 0.1, categorical when JS distance
    >= 0.1 (`--threshold` sets this effect threshold), provided the (corrected) KS / chi-square test is also
    significant at 0.05, which guards against sparse categories;
  * small samples: KS (numeric) or chi-square (categorical) p-value, corrected for the number of features (BH by
    default), below 0.05.
A change of 0.2 or more in the missing-value share, or in the share of infinite values, is drift on its own
(`decided_by: missing_share` / `inf_share`). Severity comes from the effect size: none / low / medium / high at the
bands in SEVERITY.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlops_cli.errors import InputError
from mlops_cli.runtime import LoadOptions

STATTESTS = ("auto", "ks", "psi", "wasserstein", "js", "chi2")
CORRECTIONS = ("bh", "bonferroni", "none")  # `--correction`; mlops_cli.stats.adjust computes them
LARGE_SAMPLE = 1000
MISSING_SHARE_CHANGE = 0.2
INF_SHARE_CHANGE = 0.2  # the share of +/-inf values is a signal of its own, like the missing share
# Default drift thresholds per statistic (p-value tests: alpha; distances: minimum effect).
THRESHOLDS = {"ks": 0.05, "chi2": 0.05, "psi": 0.2, "wasserstein": 0.1, "js": 0.1}
# Effect-size bands: below the first is none, then low, medium, high.
SEVERITY = {"wasserstein": (0.1, 0.2, 0.5), "js": (0.1, 0.2, 0.35), "psi": (0.1, 0.2, 0.25)}


@dataclass
class DriftOptions:
    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    target: str | None = None
    prediction_column: str | None = None
    stattest: str = "auto"
    threshold: float | None = None
    correction: str = "bh"
    drift_share: float = 0.5
    load: LoadOptions = LoadOptions()  # with a model: --runtime, --strict, --no-pickle

    def __post_init__(self) -> None:
        if self.stattest not in STATTESTS:
            raise InputError(f"unknown --stattest {self.stattest!r}", f"use one of {', '.join(STATTESTS)}")
        if self.correction not in CORRECTIONS:
            raise InputError(f"unknown --correction {self.correction!r}", "use bh, bonferroni or none")


def decide(rows: list[dict[str, Any]], options: DriftOptions) -> None:
    """Fill p_value (corrected), drifted, severity and decided_by for every compared feature."""
    from mlops_cli.stats import adjust

    tests = []
    for row in (r for r in rows if r["status"] == "ok"):
        s, numeric = row["statistics"], row["kind"] == "numeric"
        large = min(s["values_reference"], s["values_current"]) > LARGE_SAMPLE
        stat = options.stattest
        if stat == "auto":
            stat = ("wasserstein" if numeric else "js") if large else ("ks" if numeric else "chi2")
        elif numeric and stat == "chi2":
            stat = "ks"
        elif not numeric and stat in ("ks", "wasserstein"):
            stat = "chi2" if stat == "ks" else "js"
        row["decided_by"] = stat
        row["p_value_raw"] = s["ks_p_value"] if numeric else s["chi2_p_value"]
        tests.append(row)
    for row, adjusted in zip(tests, adjust([r["p_value_raw"] for r in tests], options.correction), strict=True):
        row["p_value"] = adjusted
        s, stat = row["statistics"], row["decided_by"]
        # In auto mode --threshold is the effect-size threshold; the tests keep their 0.05 level.
        auto_test = options.stattest == "auto" and stat in ("ks", "chi2")
        threshold = THRESHOLDS[stat] if options.threshold is None or auto_test else options.threshold
        effect_stat = "wasserstein" if row["kind"] == "numeric" else "js"
        effect = s["wasserstein_norm"] if effect_stat == "wasserstein" else s["js"]
        if stat in ("ks", "chi2"):
            drifted = adjusted < threshold
        else:
            value = s["wasserstein_norm"] if stat == "wasserstein" else s[stat]
            # Effect size decides, but never against the test: sparse categories inflate JS on small samples.
            drifted = value >= threshold and adjusted < THRESHOLDS["ks"]
            if stat == "psi":
                effect_stat, effect = "psi", value
        severity = _severity(effect_stat, effect)
        row["drifted"] = bool(drifted)
        row["severity"] = severity if drifted else "none"
        if drifted and severity == "none":
            row["severity"] = "low"
        row["threshold"] = threshold
    order = ("none", "low", "medium", "high")
    for row in rows:
        if row["status"] not in ("ok", "all_missing"):
            continue
        if row["status"] == "all_missing":
            row["drifted"] = False
        # Missing values and infinities are signals of their own, whatever the distribution of the rest says.
        for signal, limit in (("missing_share", MISSING_SHARE_CHANGE), ("inf_share", INF_SHARE_CHANGE)):
            change = row["statistics"].get(f"{signal}_change")
            if change is not None and abs(change) >= limit:
                severity = "high" if abs(change) >= 0.5 else "medium"
                row.update(drifted=True, decided_by=signal, severity=max(row["severity"], severity, key=order.index))
                break


def _severity(stat: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "high" if value is not None else "none"
    low, medium, high = SEVERITY.get(stat, SEVERITY["wasserstein"])
    return "high" if value >= high else "medium" if value >= medium else "low" if value >= low else "none"
