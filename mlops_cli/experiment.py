"""Online experiments: did the treatment win? One row per unit, or n / sum / sum of squares per variant, in; every
treatment against control on every metric out, with a sample ratio mismatch check, power, and a correction for the
number of comparisons.

The statistics themselves live in `mlops_cli.stats`; this module turns data into their inputs and their outputs
into verdicts. Comparing two registered models is `mlops_cli.comparison`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io, stats
from mlops_cli.errors import EmptyInput, InputError, InvalidData, SchemaMismatch
from mlops_cli.report import Report

if TYPE_CHECKING:
    import pandas as pd

SRM_THRESHOLD = 0.001
METRIC_TYPES = ("auto", "binary", "continuous")

# Verdicts of one comparison. A treatment "wins" with the first two.
BETTER, NON_INFERIOR = "treatment_better", "non_inferior"
NO_DIFFERENCE, NOT_SHOWN = "no_significant_difference", "non_inferiority_not_shown"
INCONCLUSIVE, INFERIOR, WORSE = "inconclusive", "inferior", "treatment_worse"
VERDICT_ORDER = (BETTER, NON_INFERIOR, NO_DIFFERENCE, NOT_SHOWN, INCONCLUSIVE, INFERIOR, WORSE)
WINNING = (BETTER, NON_INFERIOR)


@dataclass
class ExperimentOptions:
    """What `mlops abtest RESULTS` takes. `mde` and `margins` map a metric (or `*` for all) to an absolute
    value, or to a share of the control mean when `relative` (see `parse_amounts`)."""

    variant_column: str
    metrics: list[str]
    control: str | None = None
    treatments: list[str] | None = None
    metric_type: str = "auto"
    alpha: float = 0.05
    alternative: str = "two-sided"
    expected_split: str | None = None
    margins: dict[str, tuple[float, bool]] = field(default_factory=dict)
    min_samples: int = 100
    mde: dict[str, tuple[float, bool]] = field(default_factory=dict)
    power: float = 0.8
    correction: str = "holm"
    mann_whitney: bool = False
    lower_is_better: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Options are user input (a CLI flag, a script's argument): a bad one is exit 3, never a bug.
        for name, value, usual in (("alpha", self.alpha, 0.05), ("power", self.power, 0.8)):
            if not 0 < value < 1:  # NaN fails this too
                raise InputError(
                    f"{name} must lie strictly between 0 and 1, got {value}", f"the usual {name} is {usual}"
                )
        for name, given, choices in (
            ("alternative", self.alternative, stats.ALTERNATIVES),
            ("correction", self.correction, stats.CORRECTIONS),
            ("metric type", self.metric_type, METRIC_TYPES),
        ):
            if given not in choices:
                raise InputError(f"unknown {name} {given!r}", f"use one of {', '.join(choices)}")
        if not self.metrics:
            raise InputError("no metric column named", "name at least one metric column")
        if self.expected_split is not None:
            try:
                parse_split(self.expected_split)  # read again in `_srm`; checked here, before the data is read
            except ValueError as exc:
                raise InputError(f"expected split: {exc}", "give shares like 50/50 or control=50/treatment=50") from exc
        self.metrics = list(dict.fromkeys(self.metrics))


_AMOUNT = re.compile(r"(?:(?P<metric>[^=]+)=)?(?P<value>[-+0-9.eE]+)(?P<pct>%?)")


def parse_amounts(values: Sequence[str] | None) -> dict[str, tuple[float, bool]]:
    """Parse `[METRIC=]VALUE[%]` items: `0.01` (absolute, every metric), `rev=2%` (2% of rev's control mean).
    Raises ValueError on anything else."""
    out: dict[str, tuple[float, bool]] = {}
    for item in values or []:
        match = _AMOUNT.fullmatch(item.strip())
        if not match:
            raise ValueError(f"expected [METRIC=]NUMBER[%], got {item!r}")
        value = float(match["value"])
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{item!r}: must be a positive number")
        relative = bool(match["pct"])
        out[match["metric"] or "*"] = (value / 100 if relative else value, relative)
    return out


def parse_split(text: str) -> list[float] | dict[str, float]:
    """`50/50`, `34/33/33` (control first, then treatments in report order) or `a=50/b=50`. ValueError if bad."""
    parts = [p.strip() for p in text.split("/") if p.strip()]
    named = all("=" in p for p in parts)
    if len(parts) < 2 or (not named and any("=" in p for p in parts)):
        raise ValueError(f"expected shares like 50/50 or control=50/treatment=50, got {text!r}")
    try:
        values = [float(p.split("=", 1)[1] if named else p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"{text!r}: shares must be numbers") from exc
    if any(not v > 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"{text!r}: shares must be positive")
    if named:
        return {p.split("=", 1)[0].strip(): v for p, v in zip(parts, values, strict=True)}
    return values


def experiment_file(path: Path, options: ExperimentOptions, *, fmt: str | None = None) -> Report:
    """Read the results file (only the columns needed) and analyse it."""
    names = set(io.schema(path, fmt).names)
    if options.variant_column not in names:
        raise SchemaMismatch(
            f"{path}: no variant column {options.variant_column!r}", f"columns are {sorted(names)[:20]}"
        )
    absent = [m for m in options.metrics if m not in names and f"{m}_sum" not in names]
    if absent:  # named here, where the file's own columns are known (only the needed ones are read below)
        raise SchemaMismatch(
            f"{path}: no metric column {absent[0]!r} (nor the pre-aggregated {absent[0]}_sum)",
            f"columns are {sorted(names)[:20]}",
        )
    wanted = [options.variant_column]
    for metric in options.metrics:
        wanted += [c for c in (metric, "n", f"{metric}_n", f"{metric}_sum", f"{metric}_sum_sq") if c in names]
    frame = io.read_table(path, columns=list(dict.fromkeys(wanted)), fmt=fmt)
    report = experiment(frame, options)
    report.inputs = [io.fingerprint(path, rows=len(frame))]
    return report


@dataclass
class _Group:
    """One variant's data for one metric: its summary, and its raw values when the input is per unit."""

    summary: stats.Summary
    missing: int = 0
    values: np.ndarray | None = None


def experiment(data: pd.DataFrame, options: ExperimentOptions) -> Report:
    """Compare every treatment with control on every metric; verdicts per comparison and for the experiment."""
    messages: list[str] = []
    variant_col = options.variant_column
    if variant_col not in data.columns:
        raise SchemaMismatch(f"no variant column {variant_col!r}", f"columns are {list(data.columns)[:20]}")
    aggregated = _is_aggregated(data, options.metrics)
    labels = _labels(data[variant_col])
    if labels.isna().any():
        messages.append(f"{int(labels.isna().sum()):,} rows have no variant and were left out")
    data = data[labels.notna()]
    labels = labels[labels.notna()]
    if data.empty:
        raise EmptyInput(f"no rows with a value in {variant_col!r}", "check the variant column")
    control, treatments = _arms(sorted(set(labels), key=_natural), options, messages)
    arms = [control, *treatments]

    if aggregated:
        groups, units = _aggregated_groups(data, labels, arms, options)
    else:
        groups, units = _unit_groups(data, labels, arms, options, messages)
    types = {m: _metric_type(m, [groups[m][a] for a in arms], options.metric_type, aggregated) for m in options.metrics}

    srm = _srm(units, arms, options.expected_split)
    valid = not srm["mismatch"]
    comparisons = [
        _compare(
            metric,
            types[metric],
            groups[metric][control],
            groups[metric][t],
            control,
            t,
            primary=(metric == options.metrics[0]),
            options=options,
        )
        for metric in options.metrics
        for t in treatments
    ]
    _decide(comparisons, options, valid)

    primary = [c for c in comparisons if c["primary"]]
    winners = sorted((c for c in primary if c["verdict"] in WINNING), key=lambda c: -c["improvement"])
    winner = winners[0] if winners else None
    verdict = winner["verdict"] if winner else min((c["verdict"] for c in primary), key=VERDICT_ORDER.index)
    if not valid:
        messages.append(
            f"sample ratio mismatch (p = {srm['p_value']:.2g} < {SRM_THRESHOLD}): the split differs "
            "from the expected one, so the experiment is invalid; find out why before reading any result"
        )
    results = {
        "mode": "experiment",
        "verdict": verdict,
        "winner": winner["variant"] if winner else None,
        "valid": valid,
        "primary_metric": options.metrics[0],
        "control": control,
        "treatments": treatments,
        "input_format": "aggregated" if aggregated else "units",
        "alpha": options.alpha,
        "alternative": options.alternative,
        "correction": options.correction,
        "min_samples": options.min_samples,
        "target_power": options.power,
        "srm": srm,
        "metrics": comparisons,
    }
    return Report("abtest", results=results, passed=winner is not None and valid, messages=messages)


def _labels(column: pd.Series) -> pd.Series:
    """Each row's variant label, computed once per distinct value (a million rows hold a handful)."""
    import pandas as pd

    try:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
    except TypeError as exc:  # lists, maps, structs: unhashable
        raise InvalidData(
            f"variant column {column.name!r} holds nested values (lists, maps or structs)",
            "use a column of plain labels",
        ) from exc
    labels = np.array([_label(u) for u in uniques] + [None], dtype=object)
    return pd.Series(labels[codes], index=column.index, dtype=object)


def _label(value: Any) -> str | None:
    """Variant labels are compared as text; 1.0 read back from a nullable integer column is `1`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    return text if text != "" else None


def _natural(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _arms(variants: list[str], options: ExperimentOptions, messages: list[str]) -> tuple[str, list[str]]:
    def known(name: str, what: str) -> str:
        if name not in variants:
            raise InvalidData(
                f"no {what} variant {name!r} in column {options.variant_column!r}",
                f"variants are {', '.join(variants)}",
            )
        return name

    chosen = [known(t, "treatment") for t in options.treatments or []]
    if options.control is not None:
        control = known(options.control, "control")
    elif "control" in variants and "control" not in chosen:
        control = "control"
    else:
        candidates = [v for v in variants if v not in chosen] or variants
        control = candidates[0]
        messages.append(f"no --control given: using {control!r} (the first variant in sorted order) as control")
    if options.treatments:
        treatments = list(dict.fromkeys(chosen))
        if control in treatments:
            raise InvalidData(f"variant {control!r} is both control and a treatment", "pick one role for it")
    else:
        treatments = [v for v in variants if v != control]
    if not treatments:
        raise InvalidData(
            f"only one variant ({control!r}) in column {options.variant_column!r}",
            "an experiment needs a control and at least one treatment",
        )
    return control, treatments


def _is_aggregated(data: pd.DataFrame, metric_names: list[str]) -> bool:
    columns = set(data.columns)
    per_unit = [m for m in metric_names if m in columns]
    summed = [m for m in metric_names if m not in columns and f"{m}_sum" in columns]
    missing = [m for m in metric_names if m not in per_unit and m not in summed]
    if missing:
        raise SchemaMismatch(
            f"no metric column {missing[0]!r} (nor the pre-aggregated {missing[0]}_sum)",
            f"columns are {sorted(map(str, columns))[:20]}",
        )
    if per_unit and summed:
        raise SchemaMismatch(
            "the results mix per-unit metric columns and pre-aggregated ones",
            "use one row per unit, or n / METRIC_sum / METRIC_sum_sq per variant",
        )
    if summed and "n" not in columns and any(f"{m}_n" not in columns for m in summed):
        raise SchemaMismatch(
            "pre-aggregated results need an `n` column (units per variant)", "add n, or METRIC_n per metric"
        )
    return bool(summed)


def _numeric(column: pd.Series, name: str, what: str = "metrics must be numbers or 0/1") -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
        raise InvalidData(f"column {name!r} holds dates or durations, not numbers", what)
    try:
        values = pd.to_numeric(column, errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise InvalidData(f"column {name!r} is not numeric ({exc})", what) from exc
    if np.isinf(values).any():
        raise InvalidData(f"column {name!r} holds infinite values", "remove or cap them")
    return values


def _unit_groups(
    data: pd.DataFrame, labels: pd.Series, arms: list[str], options: ExperimentOptions, messages: list[str]
) -> tuple[dict[str, dict[str, _Group]], dict[str, int]]:
    label_array = labels.to_numpy(dtype=object)
    units = {a: int((label_array == a).sum()) for a in arms}
    groups: dict[str, dict[str, _Group]] = {}
    for metric in options.metrics:
        values = _numeric(data[metric], metric)
        groups[metric] = {}
        for arm in arms:
            arm_values = values[label_array == arm]
            present = arm_values[~np.isnan(arm_values)]
            groups[metric][arm] = _Group(stats.Summary.of(present), len(arm_values) - len(present), present)
        missing = sum(g.missing for g in groups[metric].values())
        if missing:
            messages.append(f"{metric}: {missing:,} rows without a value were left out of its comparison")
    return groups, units


def _aggregated_groups(
    data: pd.DataFrame, labels: pd.Series, arms: list[str], options: ExperimentOptions
) -> tuple[dict[str, dict[str, _Group]], dict[str, int]]:
    """Rows of n / METRIC_sum / METRIC_sum_sq per variant; several rows of a variant (days, shards) add up."""
    wanted = [f"{m}{suffix}" for m in options.metrics for suffix in ("_n", "_sum", "_sum_sq")]
    columns = [c for c in data.columns if c == "n" or c in wanted]
    numeric = (
        data[columns]
        .apply(
            lambda col: _numeric(
                col,
                col.name,
                "counts and sums must be numbers"
                if col.name == "n" or col.name.endswith("_n")
                else "sums must be numbers",
            )
        )
        .assign(_variant=labels.to_numpy())
    )
    if numeric[columns].isna().any().any():
        raise InvalidData("pre-aggregated results have empty cells", "every variant row needs n and the sums")
    sums = numeric.groupby("_variant").sum()
    units: dict[str, int] = {}
    groups: dict[str, dict[str, _Group]] = {m: {} for m in options.metrics}
    for arm in arms:
        row = sums.loc[arm]
        if "n" in row:
            units[arm] = _count(row["n"], "n")
        for metric in options.metrics:
            n = _count(row[f"{metric}_n"] if f"{metric}_n" in row else row["n"], f"{metric}_n")
            total = float(row[f"{metric}_sum"])
            sum_sq_col = f"{metric}_sum_sq"
            if sum_sq_col in row:
                total_sq = float(row[sum_sq_col])
            elif options.metric_type == "binary" or (
                options.metric_type == "auto" and 0 <= total <= n and float(total).is_integer()
            ):
                # 0/1 values: the sum of squares is the sum. A fractional sum is not a count of successes, so a
                # continuous metric in [0, 1] is never mistaken for a rate without being told.
                total_sq = total
            else:
                raise SchemaMismatch(
                    f"no {sum_sq_col} column for the metric {metric!r}, and its sums are not counts of 0/1 values",
                    "add the per-variant sum of squared values, or --metric-type binary for a 0/1 metric",
                )
            if n > 1 and total_sq * n < total * total * (1 - 1e-9):
                raise InvalidData(
                    f"{metric}: for variant {arm!r} the sum of squares is smaller than sum²/n",
                    f"check the {metric}_sum and {sum_sq_col} columns",
                )
            groups[metric][arm] = _Group(stats.Summary.from_sums(n, total, total_sq))
        units.setdefault(arm, groups[options.metrics[0]][arm].summary.n)
    return groups, units


def _count(value: float, name: str) -> int:
    if value < 0 or not float(value).is_integer():
        raise InvalidData(f"column {name!r} must hold whole, non-negative counts, got {value}", "check the file")
    return int(value)


def _metric_type(metric: str, groups: list[_Group], requested: str, aggregated: bool) -> str:
    def is_binary(g: _Group) -> bool:
        s = g.summary
        if g.values is not None:
            return bool(np.isin(g.values, (0.0, 1.0)).all())
        total = s.mean * s.n if s.n else 0.0
        total_sq = s.var * (s.n - 1) + total * s.mean if s.n > 1 else total
        return s.n == 0 or (0 <= total <= s.n and abs(total_sq - total) <= 1e-6 * max(1.0, total))

    zero_one = all(is_binary(g) for g in groups)
    if requested == "binary" and not zero_one:
        raise InvalidData(
            f"{metric!r} is declared binary but holds values other than 0 and 1", "use --metric-type continuous or auto"
        )
    if requested == "auto":
        # A metric with no values at all is not called binary: nothing shows it is.
        return "binary" if zero_one and any(g.summary.n for g in groups) else "continuous"
    return requested


def _srm(units: dict[str, int], arms: list[str], expected: str | None) -> dict[str, Any]:
    if expected is None:
        shares = [1.0] * len(arms)
    else:
        split = parse_split(expected)
        if isinstance(split, dict):
            unknown = sorted(set(split) - set(arms)) or sorted(set(arms) - set(split))
            if unknown:
                raise InvalidData(
                    f"--expected-split names {', '.join(split)} but the variants analysed are {', '.join(arms)}",
                    "name every variant once",
                )
            shares = [split[a] for a in arms]
        elif len(split) != len(arms):
            raise InvalidData(
                f"--expected-split has {len(split)} shares for {len(arms)} variants ({', '.join(arms)})",
                "give one share per variant: control first, then the treatments in that order",
            )
        else:
            shares = split
    total = sum(shares)
    result = stats.sample_ratio([units[a] for a in arms], shares)
    return {
        "counts": {a: units[a] for a in arms},
        "expected_shares": {a: s / total for a, s in zip(arms, shares, strict=True)},
        "statistic": result["statistic"],
        "df": result["df"],
        "p_value": result["p_value"],
        "threshold": SRM_THRESHOLD,
        "mismatch": bool(result["p_value"] < SRM_THRESHOLD),
    }


def _amount(table: dict[str, tuple[float, bool]], metric: str, control_mean: float) -> float | None:
    entry = table.get(metric, table.get("*"))
    if entry is None:
        return None
    value, relative = entry
    return value * abs(control_mean) if relative else value


def _compare(
    metric: str,
    kind: str,
    control: _Group,
    treatment: _Group,
    control_name: str,
    treatment_name: str,
    *,
    primary: bool,
    options: ExperimentOptions,
) -> dict[str, Any]:
    c, t = control.summary, treatment.summary
    higher = metric not in options.lower_is_better
    entry: dict[str, Any] = {
        "metric": metric,
        "variant": treatment_name,
        "type": kind,
        "primary": primary,
        "better": "higher" if higher else "lower",
        "control": {"variant": control_name, "n": c.n, "mean": c.mean, "std": c.std, "missing": control.missing},
        "treatment": {"variant": treatment_name, "n": t.n, "mean": t.mean, "std": t.std, "missing": treatment.missing},
        "test": "two_proportion_z" if kind == "binary" else "welch_t",
        "ci_level": 1 - options.alpha,
    }
    testable = c.n >= 2 and t.n >= 2
    if testable:
        test = (stats.two_proportions if kind == "binary" else stats.welch)(
            c, t, alpha=options.alpha, alternative=options.alternative
        )
    else:
        test = dict.fromkeys(
            (
                "difference",
                "se",
                "statistic",
                "df",
                "p_value",
                "ci_low",
                "ci_high",
                "relative_lift",
                "relative_ci_low",
                "relative_ci_high",
            ),
            math.nan,
        )
        test["difference"] = t.mean - c.mean if c.n and t.n else math.nan
    entry.update(
        {
            k: test[k]
            for k in (
                "difference",
                "ci_low",
                "ci_high",
                "relative_lift",
                "relative_ci_low",
                "relative_ci_high",
                "statistic",
                "df",
                "p_value",
            )
        }
    )
    entry["improvement"] = entry["difference"] if higher else -entry["difference"]
    se = test["se"]

    entry["mann_whitney"] = None
    if options.mann_whitney and kind == "continuous" and control.values is not None and testable:
        entry["mann_whitney"] = stats.mann_whitney(control.values, treatment.values, alternative=options.alternative)

    margin = _amount(options.margins, metric, c.mean)
    entry["non_inferiority"] = None
    if margin is not None and testable:
        df = test["df"] if kind == "continuous" else math.nan
        entry["non_inferiority"] = stats.non_inferiority(entry["improvement"], se, margin, alpha=options.alpha, df=df)

    target = _amount(options.mde, metric, c.mean)
    needed = None
    if target is not None and testable:
        if kind == "binary":
            shifted = min(max(c.mean + (target if higher else -target), 0.0), 1.0)
            needed = stats.n_per_group(
                c.var,
                shifted * (1 - shifted),
                target,
                alpha=options.alpha,
                target_power=options.power,
                alternative=options.alternative,
            )
        else:
            needed = stats.n_per_group(
                c.var, t.var, target, alpha=options.alpha, target_power=options.power, alternative=options.alternative
            )
    mde = (
        stats.mde(se, alpha=options.alpha, target_power=options.power, alternative=options.alternative)
        if testable
        else math.nan
    )
    entry["power"] = {
        "achieved": stats.power(entry["difference"], se, alpha=options.alpha, alternative=options.alternative)
        if testable
        else math.nan,
        "mde": mde,
        "mde_relative": mde / abs(c.mean) if c.mean else math.nan,
        "mde_target": target,
        "n_per_group_for_mde": needed,
    }
    return entry


def _decide(comparisons: list[dict[str, Any]], options: ExperimentOptions, valid: bool) -> None:
    """Adjust the p-values over the whole family of comparisons, then give each comparison its verdict."""
    for c in comparisons:
        enough = min(c["control"]["n"], c["treatment"]["n"]) >= options.min_samples
        c["reason"] = None
        if not valid:
            c["reason"] = "sample ratio mismatch"
        elif not enough:
            c["reason"] = (
                f"insufficient data: {min(c['control']['n'], c['treatment']['n']):,} units in the smaller "
                f"group, fewer than --min-samples {options.min_samples:,}"
            )
        c["_tested"] = c["reason"] is None

    def family(key: str, getter: Any) -> None:
        raw = [getter(c) if c["_tested"] else math.nan for c in comparisons]
        for c, adjusted in zip(comparisons, stats.adjust(raw, options.correction), strict=True):
            c[key] = adjusted

    family("p_value_adjusted", lambda c: c["p_value"])
    with_margin = [c for c in comparisons if c["non_inferiority"] is not None]
    family("_ni", lambda c: c["non_inferiority"]["p_value"] if c["non_inferiority"] else math.nan)
    family("_inferior", lambda c: c["non_inferiority"]["p_value_inferior"] if c["non_inferiority"] else math.nan)
    for c in with_margin:
        c["non_inferiority"]["p_value_adjusted"] = c["_ni"]
        c["non_inferiority"]["p_value_inferior_adjusted"] = c["_inferior"]

    for c in comparisons:
        if not c["_tested"]:
            c["verdict"] = INCONCLUSIVE
        elif c["non_inferiority"] is not None:
            c["verdict"] = (
                NON_INFERIOR if c["_ni"] < options.alpha else INFERIOR if c["_inferior"] < options.alpha else NOT_SHOWN
            )
        elif c["p_value_adjusted"] < options.alpha:
            c["verdict"] = BETTER if c["improvement"] > 0 else WORSE
        elif math.isnan(c["p_value_adjusted"]):
            c["verdict"] = INCONCLUSIVE
            c["reason"] = "the test is undefined for these data (no variance)"
        else:
            c["verdict"] = NO_DIFFERENCE
        for key in ("_tested", "_ni", "_inferior"):
            del c[key]
