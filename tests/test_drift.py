"""drift-report: statistics against scipy, known drift on the sample data, controls, robustness, outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, REFERENCE
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_cli import drift, io
from mlops_cli import stats as mlops_stats
from mlops_cli.drift import reporting
from mlops_cli.drift import stats as drift_stats
from mlops_cli.errors import InputError

FEATURES = "carrier,origin,dest,sched_dep_hour,day_of_week,distance,temp,dewp,humid,wind_speed,precip,pressure,visib"


@pytest.mark.parametrize("n, m, seed", [(50, 80, 0), (3_000, 2_000, 1), (20_000, 15_000, 2), (12_000, 40_000, 3)])
def test_numeric_statistics_equal_scipy(n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(0.05, 1.1, size=m)
    a[:10] = b[:10] = 0.5  # ties across the two samples
    ours = drift_stats.numeric_stats(a, b)
    ks = stats.ks_2samp(a, b)
    assert ours["ks"] == pytest.approx(ks.statistic, abs=1e-9)
    assert ours["ks_p_value"] == pytest.approx(ks.pvalue, abs=1e-9, rel=1e-9)
    assert ours["wasserstein"] == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-9)


def test_categorical_statistics_equal_scipy():
    rng = np.random.default_rng(4)
    ref = pd.Series(rng.choice(list("abcde"), 5_000, p=[0.4, 0.3, 0.15, 0.1, 0.05]))
    cur = pd.Series(rng.choice(list("abcdf"), 3_000, p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    ours = drift_stats.categorical_stats(ref, cur)
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
        assert drift_stats.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)


def test_psi_known_answer_and_empty_bin_rule():
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert drift_stats.psi(p, q) == pytest.approx(0.25 * np.log(0.5) * -1 + 0.25 * np.log(1.5))
    assert np.isfinite(drift_stats.psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])))


def test_benjamini_hochberg_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert mlops_stats.adjust(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1].tolist())
    assert mlops_stats.adjust(p, "bonferroni") == pytest.approx(multipletests(p, method="bonferroni")[1].tolist())


@pytest.mark.parametrize("correction", ["bh", "bonferroni", "none"])
def test_drift_corrects_p_values_with_the_one_adjust(reference_frame, current_frame, correction):
    options = drift.DriftOptions(features=FEATURES.split(","), correction=correction)
    rows, _ = drift.compare(reference_frame.head(500), current_frame.head(500), options)
    tested = [r for r in rows if r["status"] == "ok"]
    assert len(tested) > 5
    adjusted = mlops_stats.adjust([r["p_value_raw"] for r in tested], correction)
    assert [r["p_value"] for r in tested] == adjusted


def test_drift_keeps_its_own_corrections():
    with pytest.raises(InputError):
        drift.DriftOptions(correction="holm")  # abtest's default, not one of drift's


def test_zero_inflated_column_shows_a_change_in_the_point_mass():
    rng = np.random.default_rng(6)
    ref = np.where(rng.random(50_000) < 0.8, 0.0, rng.exponential(0.1, 50_000))
    cur = np.where(rng.random(50_000) < 0.5, 0.0, rng.exponential(0.1, 50_000))  # rainy hours: 20% -> 50%
    same = np.where(rng.random(50_000) < 0.8, 0.0, rng.exponential(0.1, 50_000))
    assert drift_stats.numeric_stats(ref, cur)["psi"] > 0.2  # the zero bin alone carries it
    assert drift_stats.numeric_stats(ref, same)["psi"] < 0.01
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
            "flag": rng.random(n) < 0.3,
        }
    )
    cur = ref.drop(columns=["gone"]).assign(all_nan=np.nan, constant=1.0, user_id=[f"v{i}" for i in range(n)])
    a, b = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    tags = [[1, 2], [3], [], None] * (n // 4)  # a list column (Parquet's nested types)
    ref.assign(tags=tags).to_parquet(a)
    cur.assign(tags=tags[::-1]).to_parquet(b)
    report = cli.json("drift-report", a, b)
    rows = _features(report)
    summary = report["results"]["summary"]
    assert rows["gone"]["status"] == "missing_in_current" and rows["gone"]["drifted"] is None
    # Nothing on either side: listed, not a test, so it does not dilute the drifted share.
    assert rows["all_nan"]["status"] == "empty" and rows["all_nan"]["drifted"] is None
    assert summary["not_compared"]["all_nan"] == "empty" and summary["tested"] == 3  # x, constant, flag
    assert rows["constant"]["drifted"] is False and "constant" in rows["constant"]["note"]
    assert rows["user_id"]["kind"] == "identifier" and rows["user_id"]["status"] == "skipped"
    assert rows["flag"]["kind"] == "categorical" and rows["flag"]["drifted"] is False
    assert rows["tags"]["kind"] == "nested" and rows["tags"]["status"] == "skipped"
    assert any("gone" in m for m in report["messages"])


def test_a_real_mixed_type_column_is_compared_as_text_and_says_so():
    values = [1, "a", 2.5, None] * 500  # Python objects of three types in one column (only in-memory frames)
    rows, summary = drift.compare(
        pd.DataFrame({"mixed": values}), pd.DataFrame({"mixed": values[::-1]}), drift.DriftOptions()
    )
    row = rows[0]
    assert row["kind"] == "categorical" and row["status"] == "ok" and row["drifted"] is False
    assert "mixed types ['float', 'int', 'str']" in row["note"]
    assert row["statistics"]["missing_share_reference"] == pytest.approx(0.25)
    assert summary["tested"] == 1


def test_numbers_in_reference_and_text_in_current_is_a_type_mismatch_row(cli, tmp_path):
    a, b = tmp_path / "ref.csv", tmp_path / "cur.csv"
    pd.DataFrame({"x": np.arange(100) / 7, "y": np.arange(100) / 3}).to_csv(a, index=False)
    pd.DataFrame({"x": ["oops"] * 100, "y": np.arange(100) / 3}).to_csv(b, index=False)
    rows = _features(cli.json("drift-report", a, b))
    assert rows["x"]["status"] == "type_mismatch" and rows["x"]["drifted"] is None
    assert "current values are not numeric" in rows["x"]["note"]
    assert rows["y"]["status"] == "ok"


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
    # Drift that matters to this model first: drifted features by importance, then the rest by importance.
    features = report["results"]["features"]
    flags = [f["drifted"] for f in features]
    assert flags == sorted(flags, reverse=True) and True in flags and False in flags
    for group in (True, False):
        weights = [f["importance"] for f in features if f["drifted"] is group]
        assert weights == sorted(weights, reverse=True), group
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


# --- column kinds --------------------------------------------------------------------------------------------


def test_an_int_column_read_as_floats_on_one_side_is_the_same_categories(cli, tmp_path, current_frame):
    """day_of_week is int8 in the reference; one null in current makes it float there (1.0, 2.0, ...)."""
    cur = current_frame.sample(5_000, random_state=0)
    cur["day_of_week"] = cur["day_of_week"].astype(float)
    cur.loc[cur.index[0], "day_of_week"] = np.nan
    path = tmp_path / "cur.parquet"
    io.write_table(path, cur)
    rows = _features(cli.json("drift-report", REFERENCE, path, "--features", "day_of_week"))
    s = rows["day_of_week"]["statistics"]
    assert s["new_categories"] == {} and s["vanished_categories"] == {} and s["categories"] == 7
    assert s["js"] < 0.05 and rows["day_of_week"]["drifted"] is False
    assert drift_stats.categorical_stats(pd.Series([1, 2]), pd.Series([2.0, 1.0, np.nan]))["js"] == 0


def test_integer_ids_are_identifiers_and_ordinary_integers_are_not(reference_frame):
    n = 5_000
    ref = reference_frame.head(n).assign(row_id=np.arange(n))
    cur = reference_frame.iloc[n : 2 * n].assign(row_id=np.arange(n, 2 * n))  # new ids every day
    features = ["row_id", "distance", "flight", "sched_dep_hour"]
    rows, summary = drift.compare(ref, cur, drift.DriftOptions(features=features))
    by_name = {r["name"]: r for r in rows}
    assert by_name["row_id"]["kind"] == "identifier" and by_name["row_id"]["drifted"] is None
    assert "row_id" in summary["not_compared"]
    assert by_name["distance"]["kind"] == "numeric" and by_name["flight"]["kind"] == "numeric"
    assert by_name["sched_dep_hour"]["kind"] == "numeric"
    # A small sample of an ordinary integer column is fairly unique too (distance: ~68% in 100 rows): still a feature.
    small, _ = drift.compare(ref.head(100), cur.head(100), drift.DriftOptions(features=["distance"]))
    assert small[0]["kind"] == "numeric"


def test_dates_are_listed_not_compared(cli, tmp_path):
    import datetime as dt

    n = 500
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i % 60) for i in range(n)]
    ref = pd.DataFrame(
        {"day": days, "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), "h"), "x": np.arange(n) / 3}
    )
    cur = ref.assign(day=[d + dt.timedelta(days=100) for d in days], when=ref["when"] + pd.Timedelta(days=100))
    for ext in ("parquet", "csv"):  # date32 in Parquet; ISO dates in CSV: both arrive as datetime.date objects
        a, b = tmp_path / f"ref.{ext}", tmp_path / f"cur.{ext}"
        io.write_table(a, ref)
        io.write_table(b, cur)
        rows = _features(cli.json("drift-report", a, b))
        for name in ("day", "when"):
            assert rows[name]["kind"] == "datetime" and rows[name]["status"] == "skipped", (ext, name)
            assert rows[name]["drifted"] is None, (ext, name)


def test_infinite_values_are_counted_and_are_a_signal(cli, tmp_path):
    rng = np.random.default_rng(9)
    n = 4_000
    ref = pd.DataFrame({"x": np.where(rng.random(n) < 0.01, np.inf, rng.normal(size=n))})
    cur = pd.DataFrame({"x": np.where(rng.random(n) < 0.3, -np.inf, rng.normal(size=n))})
    a, b = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    ref.to_parquet(a)
    cur.to_parquet(b)
    result = cli("drift-report", a, b, "--json")
    assert result.exit_code == 0 and "RuntimeWarning" not in result.stderr
    row = _features(json.loads(result.stdout))["x"]
    s = row["statistics"]
    assert s["inf_share_reference"] == pytest.approx(np.isinf(ref["x"]).mean())
    assert s["inf_share_current"] == pytest.approx(np.isinf(cur["x"]).mean())
    assert s["inf_share_change"] == pytest.approx(s["inf_share_current"] - s["inf_share_reference"])
    # -inf is outside the reference range (the reference had +inf only); the finite values are not.
    assert s["out_of_range_share"] == pytest.approx(np.isneginf(cur["x"]).mean(), abs=0.01)
    assert row["drifted"] and row["decided_by"] == "inf_share"


def test_numeric_override_on_a_text_column_says_it_is_not_numeric(reference_frame, current_frame):
    rows, _ = drift.compare(
        reference_frame, current_frame, drift.DriftOptions(features=["carrier"], numeric=["carrier"])
    )
    assert rows[0]["status"] == "type_mismatch" and rows[0]["note"].startswith("not numeric in the reference")


def test_large_or_small_counts_non_null_values_not_rows(reference_frame, current_frame):
    ref, cur = reference_frame.head(5_000).copy(), current_frame.head(5_000).copy()
    for frame in (ref, cur):
        frame.loc[frame.index[500:], "temp"] = np.nan  # 5,000 rows, under 500 values
    rows, _ = drift.compare(ref, cur, drift.DriftOptions(features=["temp", "dewp"]))
    by_name = {r["name"]: r for r in rows}
    assert by_name["temp"]["decided_by"] == "ks" and by_name["temp"]["statistics"]["values_reference"] <= 500
    assert by_name["dewp"]["decided_by"] == "wasserstein"


# --- options and messages ------------------------------------------------------------------------------------


def test_ignore_applies_with_features_and_with_model(cli, registered):
    report = cli.json("drift-report", REFERENCE, CURRENT, "--features", "temp,dewp,origin", "--ignore", "dewp")
    assert set(_features(report)) == {"temp", "origin"}
    report = cli.json("drift-report", CURRENT, "--model", "flights:1", "--ignore", "temp,carrier")
    assert "temp" not in _features(report) and "carrier" not in _features(report)
    assert "dewp" in _features(report)


def test_threshold_in_auto_mode_is_the_effect_size_threshold(reference_frame, current_frame):
    features = ["temp", "humid", "distance", "origin", "dest"]
    small = drift.DriftOptions(features=features)
    default, _ = drift.compare(reference_frame.head(300), current_frame.head(300), small)
    strict, _ = drift.compare(
        reference_frame.head(300), current_frame.head(300), drift.DriftOptions(features=features, threshold=0.01)
    )
    # Small samples are decided by the tests at 0.05 whatever --threshold says.
    assert [(r["name"], r["drifted"], r["threshold"]) for r in default] == [
        (r["name"], r["drifted"], r["threshold"]) for r in strict
    ]
    assert all(r["threshold"] == 0.05 for r in strict)
    rows, _ = drift.compare(reference_frame, current_frame, drift.DriftOptions(features=features, threshold=0.5))
    by_name = {r["name"]: r for r in rows}
    assert by_name["temp"]["threshold"] == 0.5 and by_name["temp"]["drifted"]  # Wasserstein/std > 3
    assert by_name["humid"]["drifted"] is False  # about 0.35: drift at the default 0.1, not at 0.5
    assert by_name["dest"]["threshold"] == 0.5 and by_name["dest"]["drifted"] is False


def test_columns_only_in_current_and_tiny_samples_get_messages(cli, tmp_path, current_frame):
    extra, one = tmp_path / "extra.parquet", tmp_path / "one.parquet"
    io.write_table(extra, current_frame.assign(surprise=1.5))
    io.write_table(one, current_frame.head(1))
    report = cli.json("drift-report", REFERENCE, extra)
    assert report["results"]["summary"]["only_in_current"] == ["surprise"]
    assert any("only in CURRENT" in m and "surprise" in m for m in report["messages"])
    report = cli.json("drift-report", REFERENCE, one, "--features", "temp,carrier")
    assert any(m.startswith("CURRENT has only 1 row") for m in report["messages"])


def test_without_a_model_the_summary_still_has_prediction_and_performance(cli):
    summary = cli.json("drift-report", REFERENCE, CURRENT, "--features", "temp")["results"]["summary"]
    assert summary["prediction_drift"] is None and summary["performance"] is None


def test_prediction_column_without_a_model(cli, tmp_path, reference_frame, current_frame):
    a, b = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    io.write_table(a, reference_frame.assign(score=reference_frame["temp"] / 100))
    io.write_table(b, current_frame.assign(score=current_frame["temp"] / 100))
    report = cli.json("drift-report", a, b, "--prediction-column", "score")
    pred = report["results"]["summary"]["prediction_drift"]
    assert pred["name"] == "score" and pred["drifted"] and pred["kind"] == "numeric"
    assert "score" not in _features(report)
    report = cli.json("drift-report", REFERENCE, b, "--prediction-column", "score")
    assert report["results"]["summary"]["prediction_drift"] is None
    assert any("no column 'score' in REFERENCE" in m for m in report["messages"])


def test_the_thread_pool_changes_nothing(reference_frame, current_frame, monkeypatch):
    features = FEATURES.split(",")
    monkeypatch.setattr(reporting, "WORKERS", 1)
    serial = drift.compare(reference_frame, current_frame, drift.DriftOptions(features=features))
    monkeypatch.setattr(reporting, "WORKERS", 2)
    monkeypatch.setattr(reporting, "PARALLEL_ROWS", 0)
    parallel = drift.compare(reference_frame, current_frame, drift.DriftOptions(features=features))
    assert json.dumps(serial, sort_keys=True) == json.dumps(parallel, sort_keys=True)


def test_quantiles_of_sorted_data_equal_numpy():
    rng = np.random.default_rng(10)
    for n in (1, 2, 7, 1_000):
        x = np.sort(rng.normal(size=n))
        q = np.linspace(0, 1, 11)
        assert drift_stats._quantiles(x, q).tolist() == np.quantile(x, q).tolist()


# --- with a model --------------------------------------------------------------------------------------------


def test_a_model_feature_missing_from_current_skips_predictions_not_the_report(
    cli, registered, tmp_path, current_frame
):
    path = tmp_path / "cur.parquet"
    io.write_table(path, current_frame.drop(columns=["temp"]))
    report = cli.json("drift-report", path, "--model", "flights:1")
    rows, summary = _features(report), report["results"]["summary"]
    assert rows["temp"]["status"] == "missing_in_current" and rows["dewp"]["drifted"] is not None
    assert summary["prediction_drift"] is None and summary["performance"] is None
    assert any("prediction drift and performance skipped" in m and "temp" in m for m in report["messages"])


def test_prediction_column_with_a_model_is_compared_without_rescoring(
    cli, registered, tmp_path, current_frame, model_file
):
    import joblib

    model = joblib.load(model_file)
    cur = current_frame.assign(score=model.predict_proba(current_frame[FEATURES.split(",")])[:, 1])
    path = tmp_path / "cur.parquet"
    io.write_table(path, cur.drop(columns=["distance"]))  # the model could not score this: the column says it all
    report = cli.json("drift-report", path, "--model", "flights:1", "--prediction-column", "score")
    pred = report["results"]["summary"]["prediction_drift"]
    assert pred["name"] == "score" and pred["kind"] == "numeric" and pred["drifted"] is not None
    assert pred["mean_current"] == pytest.approx(cur["score"].mean())
    assert report["results"]["summary"]["performance"] is None
    rescored = cli.json("drift-report", CURRENT, "--model", "flights:1")["results"]["summary"]["prediction_drift"]
    assert pred["statistics"]["ks"] == pytest.approx(rescored["statistics"]["ks"])  # same predictions, same answer


def test_performance_drop_ci_combines_recorded_and_current_uncertainty(cli, registered):
    perf = cli.json("drift-report", CURRENT, "--model", "flights:1")["results"]["summary"]["performance"]
    recorded = registered["results"]["eval_metrics"]
    for name, m in perf["metrics"].items():
        rec = recorded[name]
        se_rec, se_cur = (rec["ci_high"] - rec["ci_low"]) / 3.92, (m["current_ci"][1] - m["current_ci"][0]) / 3.92
        half = 1.96 * np.hypot(se_rec, se_cur)
        assert m["drop_ci"] == pytest.approx([m["drop"] - half, m["drop"] + half]), name
        assert m["recorded_ci"] == [rec["ci_low"], rec["ci_high"]]
        assert m["drop_ci"][1] - m["drop_ci"][0] > m["current_ci"][1] - m["current_ci"][0]  # wider than one side


def test_performance_needs_30_labelled_rows(cli, registered, tmp_path, current_frame):
    cur = current_frame.head(3_000).copy()
    cur.loc[cur.index[20:], "delayed"] = np.nan
    path = tmp_path / "cur.parquet"
    io.write_table(path, cur)
    report = cli.json("drift-report", path, "--model", "flights:1")
    assert report["results"]["summary"]["performance"] is None
    assert any("performance skipped: 20 labelled rows" in m for m in report["messages"])


@pytest.mark.parametrize("cached", ["[1, 2]", '{"temp": "high"}', '{"temp": 0.1}', "not json", '{"temp": true}'])
def test_a_bad_importance_cache_is_recomputed(cli, registered, registry_dir, cached):
    path = registry_dir / "flights" / "cache" / "1" / "importance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cached)
    report = cli.json("drift-report", CURRENT, "--model", "flights:1", "--features", "temp,dewp")
    assert report["results"]["summary"]["weighted_drifted_share"] is not None
    importance = json.loads(path.read_text())
    assert set(importance) == set(FEATURES.split(",")) and all(isinstance(v, float) for v in importance.values())


# --- outputs -------------------------------------------------------------------------------------------------


def test_table_folds_long_names_and_keeps_every_column_at_80(tmp_path, reference_frame, current_frame):
    import io as stdio

    from rich.console import Console

    from mlops_cli import render

    long = "temperature_fahrenheit_at_origin_airport_mean"  # 45 characters
    a, b = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    io.write_table(a, reference_frame[["temp", "dewp", "origin"]].rename(columns={"temp": long}))
    io.write_table(b, current_frame[["temp", "dewp", "origin"]].rename(columns={"temp": long}))
    report = drift.report(None, b, reference_path=a)
    buffer = stdio.StringIO()
    render.render_drift(report, Console(file=buffer, width=80))
    text = buffer.getvalue()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("feature"))
    for column in ("feature", "drift", "by", "effect", "p-value", "missing Δ", "importance"):
        assert column in header, column
    width = header.index("drift")
    body = lines[lines.index(header) + 2 :]
    assert long in "".join(line[:width].strip() for line in body[:4])  # folded over lines, every character kept
    assert "…" not in text and all(len(line) <= 80 for line in lines)
    assert "0.1/0.2/0.5" in text  # the severity bands, under the verdict


def test_html_lists_categories_predictions_and_readable_axes(cli, registered, tmp_path):
    page = tmp_path / "drift.html"
    cli.json("drift-report", CURRENT, "--model", "flights:1", "--html", page)
    text = page.read_text()
    assert "new: " in text and "vanished: " in text  # dest has both, with their shares
    assert "prediction: proba_1" in text and text.count("<svg") == 14  # 13 features and the predictions
    assert "e+0" not in text and "{'wasserstein'" not in text
    airports = ["Fort Lauderdale-Hollywood International", "Chicago O'Hare International", "JFK"]
    rng = np.random.default_rng(11)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    io.write_table(a, pd.DataFrame({"airport": rng.choice(airports, 2_000), "amount": rng.normal(5e3, 1e3, 2_000)}))
    io.write_table(b, pd.DataFrame({"airport": rng.choice(airports, 2_000), "amount": rng.normal(5e3, 1e3, 2_000)}))
    other = tmp_path / "other.html"
    cli.json("drift-report", a, b, "--html", other)
    text = other.read_text()
    assert "<title>Fort Lauderdale-Hollywood International</title>Fort Lauder…</text>" in text
    assert "e+0" not in text
