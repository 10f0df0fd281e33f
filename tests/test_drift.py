"""drift-report: statistics against scipy, known drift on the sample data, controls, robustness, outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, REFERENCE
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_cli import drift, io

FEATURES = "carrier,origin,dest,sched_dep_hour,day_of_week,distance,temp,dewp,humid,wind_speed,precip,pressure,visib"


@pytest.mark.parametrize("n, m, seed", [(50, 80, 0), (3_000, 2_000, 1), (20_000, 15_000, 2), (12_000, 40_000, 3)])
def test_numeric_statistics_equal_scipy(n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(0.05, 1.1, size=m)
    a[:10] = b[:10] = 0.5  # ties across the two samples
    ours = drift.numeric_stats(a, b)
    ks = stats.ks_2samp(a, b)
    assert ours["ks"] == pytest.approx(ks.statistic, abs=1e-9)
    assert ours["ks_p_value"] == pytest.approx(ks.pvalue, abs=1e-9, rel=1e-9)
    assert ours["wasserstein"] == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-9)


def test_categorical_statistics_equal_scipy():
    rng = np.random.default_rng(4)
    ref = pd.Series(rng.choice(list("abcde"), 5_000, p=[0.4, 0.3, 0.15, 0.1, 0.05]))
    cur = pd.Series(rng.choice(list("abcdf"), 3_000, p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    ours = drift.categorical_stats(ref, cur)
    cats = sorted(set(ref) | set(cur))
    table = np.array([[(ref == c).sum() for c in cats], [(cur == c).sum() for c in cats]])
    chi2, p, _, _ = stats.chi2_contingency(table)
    assert ours["chi2"] == pytest.approx(chi2, abs=1e-9) and ours["chi2_p_value"] == pytest.approx(p, abs=1e-12)
    expected_js = jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2)
    assert ours["js"] == pytest.approx(expected_js, abs=1e-9)
    assert ours["new_categories"] == {"f": pytest.approx((cur == "f").mean())}
    assert ours["vanished_categories"] == {"e": pytest.approx((ref == "e").mean())}


def test_js_distance_equals_scipy_on_random_histograms():
    rng = np.random.default_rng(5)
    for _ in range(20):
        p, q = rng.random(12), rng.random(12)
        p[rng.integers(0, 12)] = 0
        assert drift.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)


def test_psi_known_answer_and_empty_bin_rule():
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert drift.psi(p, q) == pytest.approx(0.25 * np.log(0.5) * -1 + 0.25 * np.log(1.5))
    assert np.isfinite(drift.psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])))


def test_benjamini_hochberg_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert drift.adjust(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1].tolist())
    assert drift.adjust(p, "bonferroni") == pytest.approx(multipletests(p, method="bonferroni")[1].tolist())


def test_zero_inflated_column_shows_a_change_in_the_point_mass():
    rng = np.random.default_rng(6)
    ref = np.where(rng.random(50_000) < 0.8, 0.0, rng.exponential(0.1, 50_000))
    cur = np.where(rng.random(50_000) < 0.5, 0.0, rng.exponential(0.1, 50_000))  # rainy hours: 20% -> 50%
    same = np.where(rng.random(50_000) < 0.8, 0.0, rng.exponential(0.1, 50_000))
    assert drift.numeric_stats(ref, cur)["psi"] > 0.2  # the zero bin alone carries it
    assert drift.numeric_stats(ref, same)["psi"] < 0.01
    rows, _ = drift.compare(
        pd.DataFrame({"precip": ref}), pd.DataFrame({"precip": cur}), drift.DriftOptions(stattest="psi")
    )
    assert rows[0]["drifted"] and rows[0]["decided_by"] == "psi"


def _features(report):
    return {f["name"]: f for f in report["results"]["features"]}


def test_known_drift_on_the_sample_data(cli):
    report = cli.json("drift-report", REFERENCE, CURRENT, "--features", FEATURES)
    rows = _features(report)
    for name in ("temp", "dewp"):
        assert rows[name]["drifted"] and rows[name]["severity"] == "high", name
        assert rows[name]["statistics"]["ks"] > 0.5
    for name in ("distance", "sched_dep_hour", "day_of_week"):
        assert rows[name]["drifted"] is False, name
        assert {"statistics", "p_value", "severity", "decided_by", "kind"} <= set(rows[name])
    assert report["results"]["summary"]["verdict"] == "drift" and report["exit_code"] == 0


def test_fail_on_drift_exit_code(cli):
    report = cli.json("drift-report", REFERENCE, CURRENT, "--features", FEATURES, "--fail-on-drift", expect=1)
    assert report["status"] == "fail"


def test_no_drift_control_two_halves_of_one_period(cli, tmp_path, reference_frame):
    shuffled = reference_frame.sample(frac=1.0, random_state=7)
    half = len(shuffled) // 2
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    io.write_table(a, shuffled.iloc[:half])
    io.write_table(b, shuffled.iloc[half:])
    report = cli.json("drift-report", a, b, "--features", FEATURES, "--fail-on-drift")
    assert report["results"]["summary"]["verdict"] == "no drift"
    assert report["results"]["summary"]["drifted"] == 0


@pytest.mark.parametrize(
    "rows, resamples, max_reports_with_a_flag",
    [
        # Small halves are decided by the BH-corrected tests: under this global null the chance that a report flags
        # any feature is at most about alpha (5%); 12 of 120 is well above the expected 6 and far below a broken 50%.
        (400, 120, 12),
        # Large halves are decided by effect size AND the corrected test: a flag should essentially never happen.
        (5_000, 20, 0),
    ],
)
def test_false_alarm_rate_over_no_drift_resamples(reference_frame, rows, resamples, max_reports_with_a_flag):
    """Two random halves of one period: nothing changed, so neither the dataset verdict nor (nearly) any feature
    may say drift. The rates measured here are quoted in the README."""
    frame = reference_frame[FEATURES.split(",")]
    verdicts, reports_with_a_flag = 0, 0
    for seed in range(resamples):
        shuffled = frame.sample(n=2 * rows, random_state=seed)
        _, summary = drift.compare(shuffled.iloc[:rows], shuffled.iloc[rows:], drift.DriftOptions())
        verdicts += summary["verdict"] == "drift"
        reports_with_a_flag += summary["drifted"] > 0
    assert verdicts == 0
    assert reports_with_a_flag <= max_reports_with_a_flag


def test_small_samples_are_decided_by_corrected_tests(reference_frame, current_frame):
    rows, _ = drift.compare(
        reference_frame.head(300), current_frame.head(300), drift.DriftOptions(features=["temp", "distance", "origin"])
    )
    by_name = {r["name"]: r for r in rows}
    assert by_name["temp"]["decided_by"] == "ks" and by_name["temp"]["drifted"]
    assert by_name["origin"]["decided_by"] == "chi2"


def test_robustness_cases_each_get_a_row(cli, tmp_path):
    rng = np.random.default_rng(8)
    n = 2_000
    ref = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "all_nan": np.nan,
            "constant": 1.0,
            "gone": rng.normal(size=n),
            "user_id": [f"u{i}" for i in range(n)],
            "mixed": [1, "a"] * (n // 2),
            "flag": rng.random(n) < 0.3,
        }
    )
    cur = ref.drop(columns=["gone"]).assign(all_nan=np.nan, constant=1.0, user_id=[f"v{i}" for i in range(n)])
    a, b = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    tags = [[1, 2], [3], [], None] * (n // 4)  # a list column (Parquet's nested types)
    ref.assign(mixed=ref["mixed"].astype(str), tags=tags).to_parquet(a)
    cur.assign(mixed=cur["mixed"].astype(str), tags=tags[::-1]).to_parquet(b)
    report = cli.json("drift-report", a, b)
    rows = _features(report)
    assert rows["gone"]["status"] == "missing_in_current" and rows["gone"]["drifted"] is None
    assert rows["all_nan"]["status"] == "all_missing" and rows["all_nan"]["drifted"] is False
    assert rows["constant"]["drifted"] is False
    assert rows["user_id"]["kind"] == "identifier" and rows["user_id"]["status"] == "skipped"
    assert rows["flag"]["kind"] == "categorical" and rows["flag"]["drifted"] is False
    assert rows["mixed"]["kind"] == "categorical"
    assert rows["tags"]["kind"] == "nested" and rows["tags"]["status"] == "skipped"
    assert any("gone" in m for m in report["messages"])


def test_all_nan_in_current_only_is_drift(cli, tmp_path, reference_frame):
    cur = reference_frame.head(3000).assign(temp=np.nan)
    path = tmp_path / "cur.parquet"
    io.write_table(path, cur)
    rows = _features(cli.json("drift-report", REFERENCE, path, "--features", "temp,distance"))
    assert rows["temp"]["drifted"] and rows["temp"]["decided_by"] == "missing_share"


def test_single_row_and_empty_current(cli, tmp_path, current_frame):
    one, empty = tmp_path / "one.parquet", tmp_path / "empty.parquet"
    io.write_table(one, current_frame.head(1))
    io.write_table(empty, current_frame.head(0))
    report = cli.json("drift-report", REFERENCE, one, "--features", "temp,carrier")
    assert all(r["decided_by"] in ("ks", "chi2") for r in report["results"]["features"])
    result = cli("drift-report", REFERENCE, empty)
    assert result.exit_code == 3 and "no rows" in result.stderr


def test_reference_from_the_registry_with_prediction_drift_and_importance(cli, registered, registry_dir):
    report = cli.json("drift-report", CURRENT, "--model", "flights:1")
    summary = report["results"]["summary"]
    assert summary["verdict"] == "drift" and summary["weighted_drifted_share"] is not None
    assert summary["prediction_drift"]["name"] == "proba_1" and summary["prediction_drift"]["drifted"]
    assert summary["performance"]["metrics"]["roc_auc"]["recorded"] == pytest.approx(
        registered["results"]["eval_metrics"]["roc_auc"]["value"]
    )
    importance = registry_dir / "flights" / "cache" / "1" / "importance.json"
    assert importance.is_file() and set(json.loads(importance.read_text())) == set(FEATURES.split(","))
    features = report["results"]["features"]
    weights = [f["importance"] for f in features]
    assert weights == sorted(weights, reverse=True)  # what matters to this model comes first
    assert cli("models", "show", "flights:1").exit_code == 0  # the cache did not touch the version's files


def test_no_reference_is_an_input_error(cli):
    result = cli("drift-report", CURRENT)
    assert result.exit_code == 3 and "no reference" in result.stderr


def test_a_target_missing_from_current_is_an_input_error(cli):
    result = cli("drift-report", REFERENCE, CURRENT, "--target", "delay")  # a typo for `delayed`
    assert result.exit_code == 3 and "no target column 'delay'" in result.stderr


def test_html_is_self_contained_and_lists_every_feature(cli, tmp_path):
    page = tmp_path / "drift.html"
    cli.json("drift-report", REFERENCE, CURRENT, "--features", FEATURES, "--html", page)
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "<svg" in text and "DRIFT" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for name in FEATURES.split(","):
        assert f"<td>{name}</td>" in text
    result = cli("drift-report", REFERENCE, CURRENT, "--html", page)
    assert result.exit_code == 3 and "already exists" in result.stderr
