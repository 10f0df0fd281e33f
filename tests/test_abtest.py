"""`mlops abtest`: known answers for every statistic, an A/A simulation, the experiment and model-comparison
verdicts, and the CLI's exit codes and JSON."""

from __future__ import annotations

import io as stdio
import json
import math
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, register_args
from conftest import sample_train as train
from rich.console import Console
from scipy import stats as sp
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from mlops_cli import comparison, experiment, render, stats
from mlops_cli.registry import Registry
from mlops_cli.report import Report

# --- known answers: published examples --------------------------------------------------------------------


def test_two_proportions_matches_statsmodels_docstring_example():
    # statsmodels proportions_ztest docstring: count [5, 12], nobs [83, 99] -> p-value 0.159
    from statsmodels.stats.proportion import proportions_ztest

    control, treatment = stats.Summary(83, 5 / 83, 0.0), stats.Summary(99, 12 / 99, 0.0)
    result = stats.two_proportions(control, treatment)
    assert round(result["p_value"], 3) == 0.159
    z, p = proportions_ztest(np.array([5, 12]), np.array([83, 99]))
    assert result["statistic"] == pytest.approx(-z, rel=1e-12)  # statsmodels tests first - second
    assert result["p_value"] == pytest.approx(p, rel=1e-12)
    for ours, theirs in (("greater", "smaller"), ("less", "larger")):
        one_sided = stats.two_proportions(control, treatment, alternative=ours)["p_value"]
        assert one_sided == pytest.approx(
            proportions_ztest(np.array([5, 12]), np.array([83, 99]), alternative=theirs)[1], rel=1e-12
        )


def test_mann_whitney_matches_scipy_docstring_example():
    # scipy.stats.mannwhitneyu docstring: males vs females, U1 = 17, exact two-sided p = 0.1111
    males, females = [19, 22, 16, 29, 24], [20, 11, 17, 12]
    result = stats.mann_whitney(females, males)
    assert result["statistic"] == 17
    assert result["p_value"] == pytest.approx(0.1111, abs=5e-5)
    assert result["prob_superiority"] == pytest.approx(17 / 20)


def test_wilcoxon_matches_scipy_docstring_example():
    # scipy.stats.wilcoxon docstring: these 15 differences give statistic 24 and p = 0.041259765625 (exact)
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    result = stats.wilcoxon(d)
    assert result["statistic"] == 24
    assert result["p_value"] == pytest.approx(0.041259765625, rel=1e-9)


def test_wilcoxon_drops_zero_differences_and_handles_all_zero():
    assert stats.wilcoxon(np.zeros(10)) == {"statistic": 0.0, "p_value": 1.0, "n_nonzero": 0}
    d = np.r_[np.zeros(5), np.arange(1, 80) * np.where(np.arange(79) % 3 == 0, -1, 1)]
    expected = sp.wilcoxon(d[d != 0], method="approx")
    assert stats.wilcoxon(d)["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)


def test_mcnemar_matches_r_presidential_approval_example():
    # R's mcnemar.test(matrix(c(794, 86, 150, 570), nrow = 2)) (Agresti 1990, p. 350):
    #   McNemar's chi-squared = 16.818, df = 1, p-value = 4.115e-05   (correct = TRUE, the default)
    #   McNemar's chi-squared = 17.356, df = 1, p-value = 3.099e-05   (correct = FALSE)
    corrected = stats.mcnemar(86, 150)
    assert corrected["method"] == "chi-square, continuity corrected"
    assert corrected["statistic"] == pytest.approx(16.818, abs=5e-4)
    assert corrected["p_value"] == pytest.approx(4.115e-05, rel=5e-4)
    plain = stats.mcnemar(86, 150, correction=False)
    assert plain["statistic"] == pytest.approx(17.356, abs=5e-4)
    assert plain["p_value"] == pytest.approx(3.099e-05, rel=5e-4)


def test_mcnemar_small_counts_are_exact_and_no_discordant_pairs_mean_no_evidence():
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    for b, c in ((3, 12), (0, 7), (10, 10), (1, 0)):
        ours = stats.mcnemar(b, c)
        assert ours["method"] == "exact binomial"
        assert ours["p_value"] == pytest.approx(sm_mcnemar([[50, b], [c, 40]], exact=True).pvalue, rel=1e-12)
    big = stats.mcnemar(30, 60)
    assert big["p_value"] == pytest.approx(
        sm_mcnemar([[50, 30], [60, 40]], exact=False, correction=True).pvalue, rel=1e-12
    )
    assert stats.mcnemar(0, 0) == {"b": 0, "c": 0, "method": "no discordant pairs", "statistic": 0.0, "p_value": 1.0}


# --- known answers: computed with scipy / statsmodels ------------------------------------------------------


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_scipy(alternative):
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 40), rng.exponential(10.8, 65)
    ours = stats.welch(stats.Summary.of(a), stats.Summary.of(b), alpha=0.1, alternative=alternative)
    theirs = sp.ttest_ind(b, a, equal_var=False, alternative=alternative)
    assert ours["statistic"] == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-10)
    assert ours["df"] == pytest.approx(theirs.df, rel=1e-10)
    ci = theirs.confidence_interval(0.9)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_summary_from_sums_equals_summary_of_values():
    x = np.random.default_rng(0).gamma(2.0, 3.0, 500)
    direct, summed = stats.Summary.of(x), stats.Summary.from_sums(len(x), x.sum(), (x**2).sum())
    assert summed.n == direct.n
    assert summed.mean == pytest.approx(direct.mean, rel=1e-12)
    assert summed.var == pytest.approx(direct.var, rel=1e-9)


def test_unpooled_interval_and_non_inferiority_match_statsmodels():
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep
    from statsmodels.stats.weightstats import ttest_ind

    control, treatment = stats.Summary(400, 0.30, 0.0), stats.Summary(420, 0.33, 0.0)
    ours = stats.two_proportions(control, treatment)
    low, high = confint_proportions_2indep(139, 420, 120, 400, compare="diff", method="wald")
    assert treatment.mean * 420 == pytest.approx(138.6)
    # statsmodels works on counts; use exact counts for the comparison
    ours = stats.two_proportions(stats.Summary(400, 120 / 400, 0.0), stats.Summary(420, 139 / 420, 0.0))
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((low, high), rel=1e-10)
    ni = stats.non_inferiority(ours["difference"], ours["se"], 0.05)
    sm = test_proportions_2indep(139, 420, 120, 400, value=-0.05, compare="diff", method="wald", alternative="larger")
    assert ni["p_value"] == pytest.approx(sm.pvalue, rel=1e-9)

    rng = np.random.default_rng(5)
    a, b = rng.normal(5, 1, 80), rng.normal(4.9, 1.5, 90)
    welch = stats.welch(stats.Summary.of(a), stats.Summary.of(b))
    ni = stats.non_inferiority(welch["difference"], welch["se"], 0.3, df=welch["df"])
    _, p, _ = ttest_ind(b, a, alternative="larger", usevar="unequal", value=-0.3)
    assert ni["p_value"] == pytest.approx(p, rel=1e-9)


def test_relative_lift_interval_is_the_delta_method():
    """The delta-method variance is grad' Sigma grad; check it against a numerical gradient of mt/mc - 1,
    and check the interval's coverage over simulated experiments."""
    control, treatment = stats.Summary(500, 4.0, 9.0), stats.Summary(450, 4.6, 16.0)
    result = stats.welch(control, treatment)

    def lift(mc, mt):
        return mt / mc - 1

    h = 1e-6
    grad = np.array(
        [(lift(4.0 + h, 4.6) - lift(4.0 - h, 4.6)) / (2 * h), (lift(4.0, 4.6 + h) - lift(4.0, 4.6 - h)) / (2 * h)]
    )
    se = math.sqrt(grad @ np.diag([9.0 / 500, 16.0 / 450]) @ grad)
    z = sp.norm.ppf(0.975)
    assert result["relative_lift"] == pytest.approx(0.15)
    assert (result["relative_ci_low"], result["relative_ci_high"]) == pytest.approx(
        (0.15 - z * se, 0.15 + z * se), rel=1e-6
    )
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(1000):
        a, b = rng.normal(4.0, 3.0, 500), rng.normal(4.6, 4.0, 450)
        r = stats.welch(stats.Summary.of(a), stats.Summary.of(b))
        covered += r["relative_ci_low"] <= 0.15 <= r["relative_ci_high"]
    assert 0.93 <= covered / 1000 <= 0.97


def test_sample_ratio_matches_scipy_chisquare():
    counts, shares = [5100, 4900, 10150], [1, 1, 2]
    ours = stats.sample_ratio(counts, shares)
    expected = np.array(shares) / 4 * sum(counts)
    theirs = sp.chisquare(counts, expected)
    assert ours["statistic"] == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-12)
    assert ours["df"] == 2


@pytest.mark.parametrize("method,sm_method", [("holm", "holm"), ("bh", "fdr_bh"), ("bonferroni", "bonferroni")])
def test_corrections_match_statsmodels(method, sm_method):
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.001, 0.04]
    assert stats.adjust(p, method) == pytest.approx(list(multipletests(p, method=sm_method)[1]), rel=1e-12)
    with_gap = stats.adjust([0.01, math.nan, 0.03], method)
    assert math.isnan(with_gap[1])
    assert [with_gap[0], with_gap[2]] == pytest.approx(list(multipletests([0.01, 0.03], method=sm_method)[1]))
    assert stats.adjust(p, "none") == p


def test_power_mde_and_sample_size_match_statsmodels():
    from statsmodels.stats.power import NormalIndPower

    sigma, n, effect = 2.0, 300, 0.35
    se = sigma * math.sqrt(2 / n)
    for alternative, sm_alt in (("two-sided", "two-sided"), ("greater", "larger")):
        ours = stats.power(effect, se, alpha=0.05, alternative=alternative)
        theirs = NormalIndPower().power(effect / sigma, n, 0.05, ratio=1, alternative=sm_alt)
        assert ours == pytest.approx(theirs, rel=1e-9)
    mde = stats.mde(se, target_power=0.8)
    assert NormalIndPower().power(mde / sigma, n, 0.05) == pytest.approx(0.8, abs=1e-4)
    needed = stats.n_per_group(sigma**2, sigma**2, 0.5, target_power=0.9)
    assert NormalIndPower().power(0.5 / sigma, needed, 0.05) >= 0.9
    assert NormalIndPower().power(0.5 / sigma, needed - 1, 0.05) < 0.9
    assert needed == math.ceil(NormalIndPower().solve_power(0.5 / sigma, power=0.9, alpha=0.05))


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 60), rng.normal(0.2, 1, 60)
    ours = stats.paired_t(b - a)
    theirs = sp.ttest_rel(b, a)
    ci = theirs.confidence_interval()
    assert ours["statistic"] == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-10)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)


def _delong_by_pairs(positive, scores):
    """The original DeLong et al. (1988) structural components, O(m n) pairwise: the reference answer."""
    pos, neg = scores[:, positive], scores[:, ~positive]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return psi.mean(axis=(1, 2)), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_fast_delong_equals_pairwise_delong_with_ties():
    rng = np.random.default_rng(7)
    positive = rng.random(400) < 0.3
    a = np.round(positive + rng.normal(0, 1.0, 400), 1)  # rounding makes ties, which count half
    b = np.round(positive + rng.normal(0, 0.8, 400), 1)
    aucs, cov = stats.delong_covariance(positive, np.vstack([a, b]))
    ref_aucs, ref_cov = _delong_by_pairs(positive, np.vstack([a, b]))
    assert aucs == pytest.approx(ref_aucs, rel=1e-12)
    assert cov == pytest.approx(ref_cov, rel=1e-9)
    assert aucs == pytest.approx([roc_auc_score(positive, a), roc_auc_score(positive, b)], rel=1e-12)
    result = stats.delong(positive, a, b)
    se = math.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
    assert result["se"] == pytest.approx(se, rel=1e-9)
    assert result["p_value"] == pytest.approx(2 * sp.norm.sf(abs(result["difference"]) / se), rel=1e-9)
    assert result["ci_low"] < result["difference"] < result["ci_high"]


def test_delong_identical_scores_is_no_evidence():
    positive = np.arange(20) % 2 == 0
    scores = np.linspace(0, 1, 20)
    result = stats.delong(positive, scores, scores)
    assert result["difference"] == 0 and result["p_value"] == 1.0


# --- the false-positive rate under no true difference ------------------------------------------------------


def test_false_positive_rate_is_alpha_when_nothing_differs():
    """1,000 seeded A/A experiments per test: each must reject at alpha 0.05 between 3% and 7% of the time."""
    rng = np.random.default_rng(2024)
    sims = 1000
    rejected = {"welch": 0, "two_proportions": 0, "delong": 0}
    for _ in range(sims):
        a, b = rng.lognormal(0, 1, 200), rng.lognormal(0, 1, 200)  # skewed, as revenue is
        rejected["welch"] += stats.welch(stats.Summary.of(a), stats.Summary.of(b))["p_value"] < 0.05
        ca, cb = rng.binomial(1000, 0.12), rng.binomial(1000, 0.12)
        rejected["two_proportions"] += (
            stats.two_proportions(stats.Summary(1000, ca / 1000, 0.0), stats.Summary(1000, cb / 1000, 0.0))["p_value"]
            < 0.05
        )
        positive = rng.random(300) < 0.4
        signal = positive * 1.0
        rejected["delong"] += (
            stats.delong(positive, signal + rng.normal(0, 1, 300), signal + rng.normal(0, 1, 300))["p_value"] < 0.05
        )
    for name, count in rejected.items():
        assert 0.03 <= count / sims <= 0.07, (name, count / sims)


# --- A. experiments ------------------------------------------------------------------------------------------


def _units(n=4000, rates=None, seed=0, split=None):
    rng = np.random.default_rng(seed)
    rates = rates or {"control": 0.10, "treatment": 0.15}
    names = list(rates)
    variant = rng.choice(names, n, p=split)
    p = np.array([rates[v] for v in variant])
    converted = (rng.random(n) < p).astype(int)
    revenue = converted * rng.lognormal(3, 0.5, n)
    return pd.DataFrame(
        {"variant": variant, "converted": converted, "revenue": revenue, "latency": rng.normal(200, 30, n)}
    )


def _options(**kwargs):
    return experiment.ExperimentOptions(**{"variant_column": "variant", "metrics": ["converted"], **kwargs})


def test_experiment_treatment_wins_and_results_are_complete():
    report = experiment.experiment(_units(), _options(metrics=["converted", "revenue"], mde={"*": (0.1, True)}))
    r = report.results
    assert report.passed and r["verdict"] == "treatment_better" and r["winner"] == "treatment" and r["valid"]
    first = r["metrics"][0]
    assert first["primary"] and first["type"] == "binary" and first["test"] == "two_proportion_z"
    assert r["metrics"][1]["type"] == "continuous" and r["metrics"][1]["test"] == "welch_t"
    assert first["ci_low"] <= first["difference"] <= first["ci_high"]
    assert first["relative_ci_low"] <= first["relative_lift"] <= first["relative_ci_high"]
    assert set(first["power"]) == {"achieved", "mde", "mde_relative", "mde_target", "n_per_group_for_mde"}
    assert first["power"]["n_per_group_for_mde"] > 0
    assert first["power"]["mde_target"] == pytest.approx(0.1 * first["control"]["mean"])
    assert r["srm"]["p_value"] > 0.001 and not r["srm"]["mismatch"]
    json.dumps(Report("abtest", results=r).envelope(), allow_nan=True)  # plain data all the way down


def test_no_difference_is_exit_1():
    data = _units(rates={"control": 0.10, "treatment": 0.10}, seed=1)
    report = experiment.experiment(data, _options())
    assert not report.passed and report.results["verdict"] == "no_significant_difference"
    assert report.results["winner"] is None


def test_sample_ratio_mismatch_invalidates_even_a_winner():
    data = _units(n=6000, split=[0.45, 0.55], seed=2)
    report = experiment.experiment(data, _options())
    r = report.results
    assert r["srm"]["mismatch"] and r["srm"]["p_value"] < 0.001 and not r["valid"]
    assert r["verdict"] == "inconclusive" and not report.passed
    assert all(c["reason"] == "sample ratio mismatch" for c in r["metrics"])
    # declared as intended, the same split is valid
    fine = experiment.experiment(data, _options(expected_split="45/55"))
    assert fine.results["valid"]
    named = experiment.experiment(data, _options(expected_split="treatment=55/control=45"))
    assert named.results["srm"]["p_value"] == pytest.approx(fine.results["srm"]["p_value"])


def test_below_min_samples_is_inconclusive():
    report = experiment.experiment(_units(n=150), _options(min_samples=100))
    assert report.results["verdict"] == "inconclusive" and not report.passed
    assert report.results["metrics"][0]["reason"].startswith("insufficient data")


def test_aggregated_input_gives_the_same_answer_as_units():
    units = _units(seed=4)
    rows = []
    for (variant, _day), g in units.assign(day=np.arange(len(units)) % 3).groupby(["variant", "day"]):
        rows.append(
            {
                "variant": variant,
                "n": len(g),
                "converted_sum": g["converted"].sum(),
                "revenue_sum": g["revenue"].sum(),
                "revenue_sum_sq": (g["revenue"] ** 2).sum(),
            }
        )
    aggregated = pd.DataFrame(rows).assign(note="daily export")  # three rows per variant (days) that add up
    options = _options(metrics=["converted", "revenue"])
    a, b = experiment.experiment(units, options).results, experiment.experiment(aggregated, options).results
    assert b["input_format"] == "aggregated" and a["input_format"] == "units"
    for x, y in zip(a["metrics"], b["metrics"], strict=True):
        assert y["type"] == x["type"]
        for key in ("difference", "ci_low", "ci_high", "p_value", "relative_lift", "relative_ci_low"):
            assert y[key] == pytest.approx(x[key], rel=1e-8), key
    assert a["srm"]["counts"] == b["srm"]["counts"]


def test_several_treatments_are_corrected_together():
    data = _units(n=6000, rates={"control": 0.10, "b": 0.125, "c": 0.10, "d": 0.11}, seed=5)
    for correction, sm_method in (("holm", "holm"), ("bh", "fdr_bh"), ("none", None)):
        r = experiment.experiment(data, _options(metrics=["converted", "revenue"], correction=correction)).results
        raw = [c["p_value"] for c in r["metrics"]]
        adjusted = [c["p_value_adjusted"] for c in r["metrics"]]
        if sm_method is None:
            assert adjusted == raw
        else:
            from statsmodels.stats.multitest import multipletests

            assert adjusted == pytest.approx(list(multipletests(raw, method=sm_method)[1]), rel=1e-12)
        assert len(r["metrics"]) == 6 and r["treatments"] == ["b", "c", "d"]


def test_lower_is_better_flips_the_verdict():
    data = _units(seed=6)
    data.loc[data["variant"] == "treatment", "latency"] -= 10
    r = experiment.experiment(data, _options(metrics=["latency"], lower_is_better=["latency"])).results
    assert r["verdict"] == "treatment_better" and r["metrics"][0]["difference"] < 0
    r = experiment.experiment(data, _options(metrics=["latency"])).results
    assert r["verdict"] == "treatment_worse"


def _fixed(control: tuple[int, int], treatment: tuple[int, int]) -> pd.DataFrame:
    """Per-unit rows with exact conversion counts: (n, conversions) per variant."""
    rows = [("control", int(i < control[1])) for i in range(control[0])]
    rows += [("treatment", int(i < treatment[1])) for i in range(treatment[0])]
    return pd.DataFrame(rows, columns=["variant", "converted"])


def test_non_inferiority_margin():
    data = _fixed((4000, 400), (4000, 390))  # -0.25 points, standard error about 0.67 points
    shown = experiment.experiment(data, _options(margins={"*": (0.02, False)}))
    assert shown.passed and shown.results["verdict"] == "non_inferior"
    ni = shown.results["metrics"][0]["non_inferiority"]
    assert -0.02 < ni["lower_bound"] < 0 and ni["p_value_adjusted"] < 0.05
    not_shown = experiment.experiment(data, _options(margins={"*": (0.001, False)}))
    assert not not_shown.passed and not_shown.results["verdict"] == "non_inferiority_not_shown"
    relative = experiment.experiment(data, _options(margins={"converted": (0.2, True)}))  # 20% of 0.10 = 0.02
    assert relative.results["metrics"][0]["non_inferiority"]["margin"] == pytest.approx(0.02)
    inferior = experiment.experiment(_fixed((4000, 600), (4000, 400)), _options(margins={"*": (0.01, False)}))
    assert inferior.results["verdict"] == "inferior" and not inferior.passed


def test_mann_whitney_beside_welch():
    r = experiment.experiment(_units(), _options(metrics=["revenue"], mann_whitney=True)).results
    c = r["metrics"][0]
    assert c["test"] == "welch_t" and set(c["mann_whitney"]) == {"statistic", "p_value", "prob_superiority"}


def test_bad_experiment_inputs_are_input_errors():
    from mlops_cli.errors import InvalidData, SchemaMismatch

    data = _units(n=400)
    with pytest.raises(SchemaMismatch):
        experiment.experiment(data, _options(metrics=["nope"]))
    with pytest.raises(InvalidData):
        experiment.experiment(data, _options(metrics=["revenue"], metric_type="binary"))
    with pytest.raises(InvalidData):
        experiment.experiment(data, _options(control="missing"))
    with pytest.raises(InvalidData):
        experiment.experiment(data, _options(expected_split="30/30/40"))
    with pytest.raises(InvalidData):
        experiment.experiment(data[data["variant"] == "control"], _options())


@pytest.mark.parametrize(
    "bad",
    [
        {"alpha": 0.0},
        {"alpha": math.nan},
        {"power": 1.0},
        {"power": math.nan},
        {"alternative": "bigger"},
        {"correction": "bonferroni"},
        {"metric_type": "ordinal"},
        {"metrics": []},
        {"expected_split": "fifty/fifty"},
    ],
)
def test_bad_experiment_options_are_input_errors_with_a_hint(bad):
    """Options are user input: exit 3 with what to do, never a ValueError (exit 5, "a bug")."""
    from mlops_cli.errors import InputError

    with pytest.raises(InputError) as caught:
        experiment.experiment(_units(n=400), _options(**bad))
    assert caught.value.exit_code == 3 and caught.value.hint


@pytest.mark.parametrize("bad", [{"min_improvement": -0.01}, {"min_improvement": math.nan}, {"alpha": 1.5}])
def test_bad_comparison_thresholds_are_input_errors_with_a_hint(tmp_path, labelled_rows, bad):
    """Checked before any model is loaded, so the refs need not exist."""
    from mlops_cli.errors import InputError

    with pytest.raises(InputError) as caught:
        comparison.compare_models(Registry(tmp_path / "registry"), "a:1", "b:1", labelled_rows, "delayed", **bad)
    assert caught.value.exit_code == 3 and caught.value.hint


def test_parsers():
    assert experiment.parse_amounts(["0.01", "rev=2%"]) == {"*": (0.01, False), "rev": (0.02, True)}
    assert experiment.parse_split("20/80") == [20.0, 80.0]
    assert experiment.parse_split("a=1/b=3") == {"a": 1.0, "b": 3.0}
    for bad in ("50", "a=50/50", "x/y", "0/100"):
        with pytest.raises(ValueError):
            experiment.parse_split(bad)
    for bad in (["-1"], ["abc"], ["x=0"]):
        with pytest.raises(ValueError):
            experiment.parse_amounts(bad)


# --- A. CLI ----------------------------------------------------------------------------------------------------


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.parquet"
    _units().to_parquet(path)
    return path


def test_cli_experiment_exit_codes_and_json(cli, tmp_path, results_file):
    report = cli.json(
        "abtest",
        results_file,
        "--variant-column",
        "variant",
        "--metric",
        "converted",
        "--metric",
        "revenue",
        "--mde",
        "10%",
        "-o",
        tmp_path / "report.json",
    )
    assert report["status"] == "pass" and report["exit_code"] == 0 and report["command"] == "abtest"
    assert report["results"]["verdict"] == "treatment_better"
    assert report["inputs"][0]["rows"] == 4000 and len(report["inputs"][0]["sha256"]) == 64
    assert json.loads((tmp_path / "report.json").read_text())["results"] == report["results"]
    lost = cli.json(
        "abtest",
        results_file,
        "--variant-column",
        "variant",
        "--metric",
        "converted",
        "--alternative",
        "less",
        expect=1,
    )
    assert lost["status"] == "fail" and lost["results"]["verdict"] == "no_significant_difference"
    csv = tmp_path / "results.csv"
    _units().to_csv(csv, index=False)
    assert cli.json("abtest", csv, "--variant-column", "variant", "--metric", "converted")["exit_code"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--variant-column", "variant"],  # no --metric
        ["--metric", "converted"],  # no --variant-column
        ["--variant-column", "variant", "--metric", "converted", "--champion", "flights:1"],  # both modes
        ["--variant-column", "variant", "--metric", "converted", "--data", str(CURRENT)],  # a model-only option
        ["--variant-column", "variant", "--metric", "converted", "--expected-split", "fifty/fifty"],
        ["--variant-column", "variant", "--metric", "converted", "--mde", "lots"],
        ["--variant-column", "variant", "--metric", "converted", "--lower-is-better", "other"],
        ["--variant-column", "variant", "--metric", "converted", "--correction", "bonferroni"],
    ],
)
def test_cli_usage_errors_exit_2(cli, results_file, args):
    assert cli("abtest", results_file, *args).exit_code == 2


def test_cli_no_arguments_is_usage_error(cli):
    assert cli("abtest").exit_code == 2
    assert cli("abtest", "--champion", "flights:1", "--challenger", "flights:2").exit_code == 2  # no --data


def test_cli_bad_inputs_exit_3(cli, tmp_path, results_file):
    base = ["--variant-column", "variant", "--metric", "converted"]
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for path in (tmp_path / "missing.parquet", corrupt, empty):
        result = cli("abtest", path, *base)
        assert result.exit_code == 3, (path, result.stderr)
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert cli("abtest", results_file, "--variant-column", "nope", "--metric", "converted").exit_code == 3
    result = cli("abtest", results_file, "--variant-column", "variant", "--metric", "nope")
    assert result.exit_code == 3 and "no metric column 'nope'" in result.stderr
    assert "'converted'" in result.stderr  # the file's columns, not just the ones read
    error = cli.json(
        "abtest", results_file, "--variant-column", "variant", "--metric", "converted", "--control", "ghost", expect=3
    )
    assert error["status"] == "error" and "ghost" in error["messages"][0]


def test_cli_aggregated_csv_with_nan_cells_is_exit_3(cli, tmp_path):
    path = tmp_path / "agg.csv"
    path.write_text("variant,n,conv_sum\nA,1000,100\nB,,120\n")
    assert cli("abtest", path, "--variant-column", "variant", "--metric", "conv").exit_code == 3
    path.write_text("variant,n,conv_sum\nA,1000,100\nB,1000,140\n")
    report = cli.json("abtest", path, "--variant-column", "variant", "--metric", "conv", "--control", "A")
    assert report["results"]["input_format"] == "aggregated" and report["results"]["metrics"][0]["type"] == "binary"


# --- B. comparing two registered models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weak_model_file(tmp_path_factory, reference_frame):
    """A deliberately weak classifier on the same features: logistic regression on the departure hour only."""
    labelled = reference_frame[reference_frame["delayed"].notna()]
    model = Pipeline(
        [("columns", ColumnTransformer([("hour", "passthrough", ["sched_dep_hour"])])), ("model", LogisticRegression())]
    )
    model.fit(labelled[train.FEATURES], labelled["delayed"].astype(int))
    path = tmp_path_factory.mktemp("weak") / "weak.joblib"
    joblib.dump(model, path)
    return path


@pytest.fixture(scope="module")
def labelled_rows(current_frame):
    return current_frame.iloc[:6000]


@pytest.fixture
def two_models(cli, registered, weak_model_file):
    """flights:1 (the sample pipeline) and flights:2 (the weak model)."""
    cli.json(*register_args(weak_model_file, "--sample-size", "500"))
    return Registry(cli.registry)


def test_compare_models_the_better_model_wins(two_models, labelled_rows):
    report = comparison.compare_models(two_models, "flights:2", "flights:1", labelled_rows, "delayed", n_boot=200)
    r = report.results
    assert report.passed and r["challenger_wins"] and r["verdict"] == "challenger_better"
    assert r["metric"] == "roc_auc" and r["test"] == "delong"
    assert r["champion"]["version"] == "2" and r["challenger"]["version"] == "1"
    assert r["difference"] == pytest.approx(r["challenger"]["value"] - r["champion"]["value"])
    assert r["difference"] == pytest.approx(r["delong"]["difference"], rel=1e-9)
    assert (r["p_value"], r["ci_low"], r["ci_high"]) == (
        r["delong"]["p_value"],
        r["delong"]["ci_low"],
        r["delong"]["ci_high"],
    )
    for block in (r["champion"], r["challenger"]):
        assert {"accuracy", "roc_auc", "log_loss", "recall[0]", "recall[1]", "f1"} <= set(block)
        assert block["metrics"]["recall[1]"] == block["recall[1]"]
        assert block["value"] == block["roc_auc"]
    assert r["mcnemar"]["b"] + r["mcnemar"]["c"] > 0
    assert r["bootstrap"]["n_boot"] == 200 and r["bootstrap"]["ci_low"] < r["difference"] < r["bootstrap"]["ci_high"]
    assert r["paired_t"] is None and r["wilcoxon"] is None
    assert report.model["version"] == "1"

    reverse = comparison.compare_models(two_models, "flights:1", "flights:2", labelled_rows, "delayed", n_boot=200)
    assert not reverse.passed and reverse.results["verdict"] == "champion_better"


def test_compare_models_accepts_versions_and_min_improvement(two_models, labelled_rows):
    champion, challenger = two_models.resolve("flights:2"), two_models.resolve("flights:1")
    base = comparison.compare_models(two_models, champion, challenger, labelled_rows, n_boot=100)
    gain = base.results["improvement"]
    assert base.results["target"] == "delayed"  # from the champion's manifest
    too_small = comparison.compare_models(
        two_models, champion, challenger, labelled_rows, n_boot=100, min_improvement=gain * 1.01
    )
    assert too_small.results["verdict"] == "improvement_too_small" and not too_small.results["challenger_wins"]


@pytest.mark.parametrize(
    "metric,test",
    [
        ("accuracy", "mcnemar"),
        ("log_loss", "paired_t"),
        ("f1", "paired_bootstrap"),
        ("balanced_accuracy", "paired_bootstrap"),
    ],
)
def test_compare_models_primary_test_per_metric(two_models, labelled_rows, metric, test):
    r = comparison.compare_models(
        two_models, "flights:2", "flights:1", labelled_rows, "delayed", metric=metric, n_boot=100
    ).results
    assert r["test"] == test and r["metric"] == metric
    primary = {"mcnemar": r["mcnemar"], "paired_t": r["paired_t"], "paired_bootstrap": r["bootstrap"]}[test]
    assert r["p_value"] == primary["p_value"]
    if metric == "accuracy":
        b, c, n = r["mcnemar"]["b"], r["mcnemar"]["c"], r["n"]
        assert r["difference"] == pytest.approx((c - b) / n)
    if metric == "log_loss":  # lower is better; the t-test is on per-row log losses, exact for their mean
        assert not r["higher_is_better"] and r["paired_t"]["mean"] == pytest.approx(r["difference"])
        assert r["wilcoxon"]["loss"] == "log_loss"


def _regressors(tmp_path, cli):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 2))
    frame = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": 3 * x[:, 0] + x[:, 1] ** 2 + rng.normal(0, 1, 800)})
    data = tmp_path / "reg.parquet"
    frame.to_parquet(data)
    for name, model in (("good", LinearRegression()), ("bad", Ridge(alpha=5000.0))):
        path = tmp_path / f"{name}.joblib"
        joblib.dump(model.fit(frame[["x1", "x2"]], frame["y"]), path)
        cli.json("register", path, "--name", "wait", "--train-data", data, "--target", "y", "--sample-size", "100")
    return data


def test_compare_regressors_with_paired_t_and_wilcoxon(cli, tmp_path):
    data = _regressors(tmp_path, cli)
    report = cli.json(
        "abtest",
        "--champion",
        "wait:2",
        "--challenger",
        "wait:1",
        "--data",
        data,
        "--target",
        "y",
        "--metric",
        "mae",
        "--bootstrap",
        "100",
    )
    r = report["results"]
    assert r["verdict"] == "challenger_better" and r["test"] == "paired_t" and r["task"] == "regressor"
    assert r["paired_t"]["loss"] == "absolute_error" and r["wilcoxon"]["p_value"] < 0.05
    assert r["paired_t"]["mean"] == pytest.approx(r["difference"])
    rmse = cli.json("abtest", "--champion", "wait:2", "--challenger", "wait:1", "--data", data, "--bootstrap", "100")[
        "results"
    ]
    assert (
        rmse["metric"] == "rmse" and rmse["test"] == "paired_bootstrap" and rmse["paired_t"]["loss"] == "squared_error"
    )
    assert (
        cli("abtest", "--champion", "wait:2", "--challenger", "wait:1", "--data", data, "--metric", "auc").exit_code
        == 3
    )  # a classifier metric for regressors


def test_cli_models_exit_codes(cli, two_models, tmp_path):
    args = [
        "abtest",
        "--champion",
        "flights:2",
        "--challenger",
        "flights:1",
        "--data",
        CURRENT,
        "--target",
        "delayed",
        "--bootstrap",
        "100",
    ]
    won = cli.json(*args)
    assert won["exit_code"] == 0 and won["results"]["challenger_wins"] and won["model"]["version"] == "1"
    assert won["inputs"][0]["path"] == str(CURRENT)
    lost = cli.json(
        "abtest",
        "--champion",
        "flights:1",
        "--challenger",
        "flights:2",
        "--data",
        CURRENT,
        "--bootstrap",
        "100",
        expect=1,
    )
    assert lost["status"] == "fail" and not lost["results"]["challenger_wins"]
    assert cli("abtest", "--champion", "flights:1", "--challenger", "flights:9", "--data", CURRENT).exit_code == 4
    assert cli(*args[:-4], "--metric", "auc", "--metric", "f1").exit_code == 2
    assert cli(*args, "--metric", "precision").exit_code == 2
    assert cli(*args, "--variant-column", "v").exit_code == 2  # an experiment-only option
    no_target = tmp_path / "no_target.parquet"
    pd.read_parquet(CURRENT).drop(columns=["delayed"]).to_parquet(no_target)
    assert cli("abtest", "--champion", "flights:1", "--challenger", "flights:2", "--data", no_target).exit_code == 3
    no_features = tmp_path / "no_features.parquet"
    pd.read_parquet(CURRENT).drop(columns=["temp"]).to_parquet(no_features)
    assert cli("abtest", "--champion", "flights:1", "--challenger", "flights:2", "--data", no_features).exit_code == 3


def test_altered_artifact_is_exit_4(cli, two_models):
    artifact = two_models.resolve("flights:2").path / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"x")
    result = cli("abtest", "--champion", "flights:1", "--challenger", "flights:2", "--data", CURRENT)
    assert result.exit_code == 4 and "altered" in result.stderr


def test_tables_render(two_models, labelled_rows):
    console = Console(file=stdio.StringIO(), width=100)
    models = comparison.compare_models(two_models, "flights:2", "flights:1", labelled_rows, n_boot=50)
    render.render_abtest(models, console)
    online = experiment.experiment(
        _units(),
        _options(
            metrics=["converted", "revenue"], mann_whitney=True, margins={"revenue": (0.1, True)}, alternative="greater"
        ),
    )
    render.render_abtest(online, console)
    text = console.file.getvalue()
    assert "DeLong" in text and "treatment better" in text and "+∞" in text


def test_treatment_without_control_picks_control_from_the_rest():
    data = _units(rates={"a": 0.1, "b": 0.15, "c": 0.1}, seed=8)
    r = experiment.experiment(data, _options(treatments=["a"])).results
    assert r["control"] == "b" and r["treatments"] == ["a"] and len(r["metrics"]) == 1


def test_demo_outcomes_helper_derives_per_flight_outcomes():
    import outcomes  # sample_data/outcomes.py, on the path through conftest

    scores = pd.DataFrame(
        {
            "flight": [1, 2, 3, 4],
            "date": pd.to_datetime(["2013-06-01"] * 4),
            "delayed": [1.0, 0.0, None, 1.0],
            "prediction": [1, 1, 0, 0],
            "proba_0": [0.2, 0.4, 0.9, 0.7],
            "proba_1": [0.8, 0.6, 0.1, 0.3],
            "model_name": "flights",
            "model_version": ["1", "2", "1", "2"],
        }
    )
    out = outcomes.outcomes(scores)
    assert list(out["variant"]) == ["1", "2", "2"]  # the flight without an outcome is left out
    assert list(out["correct"]) == [1, 0, 0]
    assert out["brier"].to_numpy() == pytest.approx([0.04, 0.36, 0.49])


# --- found in review: power in the report, corrections that change a verdict, unbalanced groups, odd inputs ---


def _aggregated(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Pre-aggregated results from {variant: {metric: (n, mean, variance)}} (sum and sum of squares per variant)."""
    out = []
    for variant, metrics in rows.items():
        row: dict[str, Any] = {"variant": variant}
        for name, (n, mean, var) in metrics.items():
            row.update({"n": n, f"{name}_sum": n * mean, f"{name}_sum_sq": var * (n - 1) + n * mean**2})
        out.append(row)
    return pd.DataFrame(out)


def test_experiment_power_block_matches_statsmodels():
    from statsmodels.stats.power import NormalIndPower

    n, sd_c, sd_t, diff = 800, 2.0, 3.0, 0.3
    data = _aggregated({"control": {"m": (n, 10.0, sd_c**2)}, "treatment": {"m": (n, 10.0 + diff, sd_t**2)}})
    r = experiment.experiment(data, _options(metrics=["m"], mde={"*": (0.5, False)})).results["metrics"][0]
    # equal groups: Welch's standard error is that of two groups with the average variance
    sigma = math.sqrt((sd_c**2 + sd_t**2) / 2)
    power = NormalIndPower()
    assert r["power"]["achieved"] == pytest.approx(power.power(diff / sigma, n, 0.05), rel=1e-9)
    assert power.power(r["power"]["mde"] / sigma, n, 0.05) == pytest.approx(0.8, abs=1e-6)
    needed = r["power"]["n_per_group_for_mde"]
    assert needed == math.ceil(power.solve_power(0.5 / sigma, power=0.8, alpha=0.05))


def test_holm_correction_changes_the_verdict():
    # Two metrics with raw two-sided p near 0.03 and 0.04: each significant alone, neither after Holm (0.06, 0.06).
    data = _aggregated(
        {
            "control": {"a": (1000, 0.0, 1.0), "b": (1000, 0.0, 1.0)},
            "treatment": {"a": (1000, 0.0971, 1.0), "b": (1000, 0.0919, 1.0)},
        }
    )
    plain = experiment.experiment(data, _options(metrics=["a", "b"], correction="none"))
    held = experiment.experiment(data, _options(metrics=["a", "b"], correction="holm"))
    raw = [m["p_value"] for m in plain.results["metrics"]]
    assert 0.025 < raw[0] < 0.035 and 0.035 < raw[1] < 0.045
    assert plain.passed and [m["verdict"] for m in plain.results["metrics"]] == ["treatment_better"] * 2
    adjusted = [m["p_value_adjusted"] for m in held.results["metrics"]]
    assert adjusted == pytest.approx([max(2 * raw[0], raw[1])] * 2)
    assert not held.passed and [m["verdict"] for m in held.results["metrics"]] == ["no_significant_difference"] * 2


def test_min_samples_applies_to_the_smaller_group():
    data = _aggregated({"control": {"m": (5000, 1.0, 1.0)}, "treatment": {"m": (90, 2.0, 1.0)}})
    report = experiment.experiment(data, _options(metrics=["m"], min_samples=100, expected_split="5000/90"))
    assert report.results["valid"]
    assert report.results["metrics"][0]["verdict"] == "inconclusive" and not report.passed
    assert report.results["metrics"][0]["reason"].startswith("insufficient data")
    enough = experiment.experiment(data, _options(metrics=["m"], min_samples=90, expected_split="5000/90"))
    assert enough.passed and enough.results["metrics"][0]["verdict"] == "treatment_better"


def test_relative_interval_of_a_negative_control_mean_points_the_right_way():
    # control -10, treatment -8: the difference is +2 but the ratio - 1 is -0.2, so "greater" bounds it from above
    data = _aggregated({"control": {"m": (400, -10.0, 4.0)}, "treatment": {"m": (400, -8.0, 4.0)}})
    r = experiment.experiment(data, _options(metrics=["m"], alternative="greater")).results["metrics"][0]
    assert r["difference"] == pytest.approx(2.0) and r["relative_lift"] == pytest.approx(-0.2)
    assert r["ci_high"] == math.inf and r["ci_low"] < 2.0
    assert r["relative_ci_low"] == -math.inf and r["relative_ci_high"] > -0.2


def test_aggregated_fractional_sums_without_sum_of_squares_are_not_taken_for_a_rate():
    from mlops_cli.errors import SchemaMismatch

    data = pd.DataFrame({"variant": ["control", "treatment"], "n": [500, 500], "score_sum": [211.3, 240.9]})
    with pytest.raises(SchemaMismatch, match="score_sum_sq"):
        experiment.experiment(data, _options(metrics=["score"]))
    counts = data.assign(score_sum=[211, 241])  # whole counts of 0/1 values: a rate
    assert experiment.experiment(counts, _options(metrics=["score"])).results["metrics"][0]["type"] == "binary"
    declared = experiment.experiment(data, _options(metrics=["score"], metric_type="binary"))
    assert declared.results["metrics"][0]["type"] == "binary"


def test_odd_metric_and_variant_columns_are_input_errors():
    from mlops_cli.errors import InvalidData

    units = _units(n=400)
    dated = units.assign(when=pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(400), unit="h"))
    with pytest.raises(InvalidData, match="dates"):
        experiment.experiment(dated, _options(metrics=["when"]))
    nested = units.assign(variant=[[v] for v in units["variant"]])
    with pytest.raises(InvalidData, match="nested"):
        experiment.experiment(nested, _options())
    empty = units.assign(converted=np.nan)
    r = experiment.experiment(empty, _options(min_samples=1)).results["metrics"][0]
    assert r["type"] == "continuous" and r["verdict"] == "inconclusive"


def test_compare_models_refuses_labels_the_models_do_not_know(two_models, labelled_rows):
    from mlops_cli.errors import SchemaMismatch

    relabelled = labelled_rows.assign(delayed=labelled_rows["delayed"].replace({1.0: 7.0}))
    with pytest.raises(SchemaMismatch, match="not trained on"):
        comparison.compare_models(two_models, "flights:2", "flights:1", relabelled, "delayed", n_boot=50)
    some = labelled_rows.copy()
    some.loc[some.index[:5], "delayed"] = 2.0
    with pytest.raises(SchemaMismatch, match="5 labelled rows"):
        comparison.compare_models(two_models, "flights:2", "flights:1", some, "delayed", n_boot=50)
    fractional = labelled_rows.assign(delayed=labelled_rows["delayed"] * 0.7)
    with pytest.raises(SchemaMismatch, match="fractions"):
        comparison.compare_models(two_models, "flights:2", "flights:1", fractional, "delayed", n_boot=50)


def test_compare_models_says_why_it_is_inconclusive(two_models, labelled_rows):
    one_class = labelled_rows[labelled_rows["delayed"] == 0]
    report = comparison.compare_models(two_models, "flights:2", "flights:1", one_class, "delayed", n_boot=50)
    assert report.results["verdict"] == "inconclusive" and not report.passed
    assert any("one class only" in m for m in report.messages)
