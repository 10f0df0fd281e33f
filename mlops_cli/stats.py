"""The statistics behind `mlops abtest`: pure functions on arrays and summary statistics, no I/O, no reports.

Independent groups (online experiments): Welch's t-test, the two-proportion z-test, Mann-Whitney U, the sample
ratio mismatch chi-square, power and sample size, multiple-comparison corrections (for drift too).
Paired samples (two models on the same rows): McNemar, DeLong's test for two ROC AUCs, the paired t-test and the
Wilcoxon signed-rank test.

Every interval follows the test's alternative: two-sided at level 1 - alpha, or one-sided (the open end is
infinite) for `greater` / `less`. For Welch's t-test and the paired t-test the interval excludes zero exactly when
the test rejects at `alpha`. The two-proportion z-test (pooled standard error) and McNemar's test report a Wald
interval, so near the boundary the two can disagree; the verdict always follows the test's p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sp

ALTERNATIVES = ("two-sided", "greater", "less")
CORRECTIONS = ("holm", "bh", "none")  # what `mlops abtest --correction` offers
ADJUSTMENTS = ("holm", "bh", "bonferroni", "none")  # what adjust computes (drift offers bh, bonferroni, none)
MCNEMAR_EXACT_BELOW = 25  # discordant pairs under which the chi-square approximation is poor


@dataclass(frozen=True)
class Summary:
    """A group's n, mean and sample variance (ddof=1): all the independent-group tests need."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: Any) -> Summary:
        x = np.asarray(values, dtype=float)
        n = len(x)
        return cls(n, float(x.mean()) if n else math.nan, float(x.var(ddof=1)) if n > 1 else math.nan)

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Summary:
        """From pre-aggregated sums: sum of values and sum of squared values."""
        if n <= 0:
            return cls(0, math.nan, math.nan)
        mean = total / n
        var = max(total_sq - total * mean, 0.0) / (n - 1) if n > 1 else math.nan
        return cls(int(n), mean, var)

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.var == self.var else math.nan


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _p_value(statistic: float, alternative: str, dist: Any) -> float:
    """p-value of `statistic` under `dist` (a frozen scipy distribution symmetric about 0)."""
    if math.isnan(statistic):
        return math.nan
    if alternative == "greater":
        return float(dist.sf(statistic))
    if alternative == "less":
        return float(dist.cdf(statistic))
    return float(min(1.0, 2 * dist.sf(abs(statistic))))


def interval(estimate: float, se: float, alpha: float, alternative: str, dist: Any = None) -> tuple[float, float]:
    """The (1 - alpha) interval matching the test's alternative; one-sided intervals have an infinite end."""
    dist = dist if dist is not None else sp.norm
    if alternative == "two-sided":
        q = float(dist.ppf(1 - alpha / 2))
        return estimate - q * se, estimate + q * se
    q = float(dist.ppf(1 - alpha))
    if alternative == "greater":
        return estimate - q * se, math.inf
    return -math.inf, estimate + q * se


def _ratio_se(control: Summary, treatment: Summary) -> float:
    """Delta-method standard error of treatment.mean / control.mean - 1 (independent groups)."""
    mc, mt = control.mean, treatment.mean
    return math.sqrt(treatment.var / treatment.n / mc**2 + mt**2 * control.var / control.n / mc**4)


def _relative(control: Summary, treatment: Summary, alpha: float, alternative: str) -> dict[str, float]:
    if control.mean == 0 or math.isnan(control.mean):
        return {"relative_lift": math.nan, "relative_ci_low": math.nan, "relative_ci_high": math.nan}
    lift = treatment.mean / control.mean - 1
    se = _ratio_se(control, treatment)
    if control.mean < 0:  # dividing by a negative mean flips which way is "up"
        alternative = {"greater": "less", "less": "greater"}.get(alternative, alternative)
    low, high = interval(lift, se, alpha, alternative)
    return {"relative_lift": lift, "relative_ci_low": low, "relative_ci_high": high}


def welch(
    control: Summary, treatment: Summary, *, alpha: float = 0.05, alternative: str = "two-sided"
) -> dict[str, float]:
    """Welch's t-test of treatment - control, Welch-Satterthwaite df; absolute and relative (delta method) CIs."""
    _check_alternative(alternative)
    vc, vt = control.var / control.n, treatment.var / treatment.n
    se = math.sqrt(vc + vt)
    diff = treatment.mean - control.mean
    if se == 0:  # both groups constant: the difference is exact
        df = math.nan
        statistic = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else _p_value(statistic, alternative, sp.norm)
        low, high = diff, diff
    else:
        df = (vc + vt) ** 2 / (vc**2 / (control.n - 1) + vt**2 / (treatment.n - 1))
        statistic = diff / se
        dist = sp.t(df)
        p = _p_value(statistic, alternative, dist)
        low, high = interval(diff, se, alpha, alternative, dist)
    return {
        "difference": diff,
        "se": se,
        "statistic": statistic,
        "df": df,
        "p_value": p,
        "ci_low": low,
        "ci_high": high,
        **_relative(control, treatment, alpha, alternative),
    }


def two_proportions(
    control: Summary, treatment: Summary, *, alpha: float = 0.05, alternative: str = "two-sided"
) -> dict[str, float]:
    """Two-proportion z-test: pooled standard error for the test (the null says the rates are equal),
    unpooled (Wald) standard error for the interval of the difference; relative lift by the delta method."""
    _check_alternative(alternative)
    pc, pt = control.mean, treatment.mean
    nc, nt = control.n, treatment.n
    pooled = (pc * nc + pt * nt) / (nc + nt)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt))
    se = math.sqrt(pc * (1 - pc) / nc + pt * (1 - pt) / nt)
    diff = pt - pc
    if se_pooled == 0:  # both groups all 0 or all 1
        statistic, p = 0.0, 1.0
    else:
        statistic = diff / se_pooled
        p = _p_value(statistic, alternative, sp.norm)
    low, high = interval(diff, se, alpha, alternative)
    binomial = (Summary(nc, pc, pc * (1 - pc)), Summary(nt, pt, pt * (1 - pt)))
    return {
        "difference": diff,
        "se": se,
        "se_pooled": se_pooled,
        "statistic": statistic,
        "df": math.nan,
        "p_value": p,
        "ci_low": low,
        "ci_high": high,
        **_relative(*binomial, alpha, alternative),
    }


def non_inferiority(
    improvement: float, se: float, margin: float, *, alpha: float = 0.05, df: float = math.nan
) -> dict[str, float]:
    """One-sided test of H0: improvement <= -margin against H1: improvement > -margin.

    `improvement` is oriented so that positive means the treatment is better. Also tests the opposite
    direction (H1: improvement < -margin), which is what calls a treatment inferior.
    """
    dist = sp.t(df) if df == df and not math.isinf(df) else sp.norm
    if se == 0:
        statistic = math.copysign(math.inf, improvement + margin) if improvement + margin else 0.0
    else:
        statistic = (improvement + margin) / se
    q = float(dist.ppf(1 - alpha))
    return {
        "margin": margin,
        "statistic": statistic,
        "p_value": float(dist.sf(statistic)),
        "p_value_inferior": float(dist.cdf(statistic)),
        "lower_bound": improvement - q * se,
        "upper_bound": improvement + q * se,
    }


def mann_whitney(control: Any, treatment: Any, *, alternative: str = "two-sided") -> dict[str, float]:
    """Mann-Whitney U of treatment against control; `prob_superiority` = P(T > C) + P(T = C) / 2."""
    _check_alternative(alternative)
    x, y = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return {"statistic": math.nan, "p_value": math.nan, "prob_superiority": math.nan}
    if np.ptp(np.concatenate([x, y])) == 0:  # every value equal: no evidence either way
        u, p = len(x) * len(y) / 2, 1.0
    else:
        method = (
            "exact" if len(x) <= 8 and len(y) <= 8 and len(np.unique(np.r_[x, y])) == len(x) + len(y) else "asymptotic"
        )
        res = sp.mannwhitneyu(x, y, alternative=alternative, method=method)
        u, p = float(res.statistic), float(res.pvalue)
    return {"statistic": u, "p_value": p, "prob_superiority": u / (len(x) * len(y))}


def sample_ratio(counts: Sequence[int], shares: Sequence[float]) -> dict[str, float]:
    """Chi-square goodness of fit of the observed group sizes against the expected shares."""
    observed = np.asarray(counts, dtype=float)
    expected = np.asarray(shares, dtype=float)
    expected = expected / expected.sum() * observed.sum()
    if observed.sum() == 0:
        return {"statistic": math.nan, "df": len(observed) - 1, "p_value": math.nan}
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(observed) - 1
    return {"statistic": statistic, "df": df, "p_value": float(sp.chi2.sf(statistic, df))}


# --- power ---------------------------------------------------------------------------------------------------


def _z_alpha(alpha: float, alternative: str) -> float:
    return float(sp.norm.ppf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha))


def power(effect: float, se: float, *, alpha: float = 0.05, alternative: str = "two-sided") -> float:
    """Probability that a z-test with this standard error rejects when the true difference is `effect`."""
    if not se > 0:
        return math.nan
    z = _z_alpha(alpha, alternative)
    shift = effect / se
    if alternative == "greater":
        return float(sp.norm.cdf(shift - z))
    if alternative == "less":
        return float(sp.norm.cdf(-shift - z))
    return float(sp.norm.cdf(shift - z) + sp.norm.cdf(-shift - z))


def mde(se: float, *, alpha: float = 0.05, target_power: float = 0.8, alternative: str = "two-sided") -> float:
    """The smallest true difference this standard error detects with `target_power` (normal approximation)."""
    return (_z_alpha(alpha, alternative) + float(sp.norm.ppf(target_power))) * se


def n_per_group(
    var_control: float,
    var_treatment: float,
    effect: float,
    *,
    alpha: float = 0.05,
    target_power: float = 0.8,
    alternative: str = "two-sided",
) -> int | None:
    """Units per group (equal allocation) needed to detect a true difference `effect` with `target_power`."""
    if not effect or not var_control + var_treatment > 0:
        return None
    z = _z_alpha(alpha, alternative) + float(sp.norm.ppf(target_power))
    return int(math.ceil(z**2 * (var_control + var_treatment) / effect**2))


# --- multiple comparisons ------------------------------------------------------------------------------------


def adjust(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values: Holm or Bonferroni (family-wise error), Benjamini-Hochberg (false discovery rate) or none.
    NaN p-values (comparisons that were not tested) are left out of the family and stay NaN."""
    if method not in ADJUSTMENTS:
        raise ValueError(f"correction must be one of {ADJUSTMENTS}, got {method!r}")
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    if method == "none" or m == 0:
        return [float(v) for v in out]
    order = tested[np.argsort(p[tested], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, ranked * (m - np.arange(m))))
    elif method == "bonferroni":
        adjusted = np.minimum(1.0, ranked * m)
    else:
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
        adjusted = np.minimum(1.0, adjusted)
    out[order] = adjusted
    return [float(v) for v in out]


# --- paired tests --------------------------------------------------------------------------------------------


def mcnemar(b: int, c: int, *, exact_below: int = MCNEMAR_EXACT_BELOW, correction: bool = True) -> dict[str, Any]:
    """McNemar's test on the discordant pairs: b = only the first is right, c = only the second is right.

    Exact two-sided binomial test when b + c < `exact_below`, else chi-square with 1 df (with the continuity
    correction by default, as R's mcnemar.test). No discordant pair at all means no evidence: p = 1.
    """
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "method": "no discordant pairs", "statistic": 0.0, "p_value": 1.0}
    if n < exact_below:
        p = min(1.0, 2 * float(sp.binom.cdf(min(b, c), n, 0.5)))
        return {"b": b, "c": c, "method": "exact binomial", "statistic": float(min(b, c)), "p_value": p}
    statistic = (max(abs(b - c) - (1 if correction else 0), 0)) ** 2 / n
    method = "chi-square, continuity corrected" if correction else "chi-square"
    return {"b": b, "c": c, "method": method, "statistic": float(statistic), "p_value": float(sp.chi2.sf(statistic, 1))}


def paired_proportion_interval(b: int, c: int, n: int, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """(c - b) / n, the difference of two paired proportions, with its Wald interval."""
    diff = (c - b) / n
    se = math.sqrt(max((b + c) - (c - b) ** 2 / n, 0.0)) / n
    low, high = interval(diff, se, alpha, "two-sided")
    return diff, low, high


def _midranks(x: np.ndarray) -> np.ndarray:
    return sp.rankdata(x, method="average", axis=-1)


def delong_covariance(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k score rows and their covariance matrix, by the fast DeLong algorithm (Sun & Xu, 2014).

    `scores` is (k, n); `positive` a boolean mask of length n. O(k n log n) through midranks instead of the
    O(k m n) pairwise comparisons of the original structural components; ties count half.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    positive = np.asarray(positive, dtype=bool)
    pos, neg = scores[:, positive], scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two positive and two negative rows")
    tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.concatenate([pos, neg], axis=1))
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives it outranks
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives that outrank it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong(positive: Any, scores_a: Any, scores_b: Any, *, alpha: float = 0.05) -> dict[str, float]:
    """DeLong's test of AUC(b) - AUC(a) for two scores of the same rows, with its two-sided interval."""
    aucs, cov = delong_covariance(np.asarray(positive, dtype=bool), np.vstack([scores_a, scores_b]))
    diff = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se == 0:  # identical rankings: the AUCs are equal on every resample
        statistic, p = 0.0, 1.0 if diff == 0 else 0.0
    else:
        statistic = diff / se
        p = _p_value(statistic, "two-sided", sp.norm)
    low, high = interval(diff, se, alpha, "two-sided")
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "se": se,
        "statistic": statistic,
        "p_value": p,
        "ci_low": low,
        "ci_high": high,
    }


def paired_t(differences: Any, *, alpha: float = 0.05) -> dict[str, float]:
    """One-sample t-test of paired differences against 0, with the two-sided interval of their mean."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if not se > 0:
        p = 1.0 if mean == 0 else math.nan
        return {
            "mean": mean,
            "se": se,
            "statistic": 0.0 if mean == 0 else math.nan,
            "df": n - 1,
            "p_value": p,
            "ci_low": mean,
            "ci_high": mean,
        }
    dist = sp.t(n - 1)
    statistic = mean / se
    low, high = interval(mean, se, alpha, "two-sided", dist)
    return {
        "mean": mean,
        "se": se,
        "statistic": statistic,
        "df": n - 1,
        "p_value": _p_value(statistic, "two-sided", dist),
        "ci_low": low,
        "ci_high": high,
    }


def wilcoxon(differences: Any) -> dict[str, float]:
    """Wilcoxon signed-rank test of paired differences (zero differences dropped, as Wilcoxon proposed)."""
    d = np.asarray(differences, dtype=float)
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return {"statistic": 0.0, "p_value": 1.0, "n_nonzero": 0}
    exact = len(nonzero) <= 50 and len(np.unique(np.abs(nonzero))) == len(nonzero)
    res = sp.wilcoxon(nonzero, method="exact" if exact else "approx")
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n_nonzero": int(len(nonzero))}
