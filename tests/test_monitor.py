"""`mlops monitor`: a window of the prediction log judged like drift-report judges a file, plus service levels and
the alert policy. The log here is what `mlops serve` writes (test_monitor_on_a_served_log runs the real server);
the other tests write the same columns from score-batch's output, so every figure can be recomputed by hand."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, Cli, register_args, run_mlops

from mlops_cli import io
from mlops_cli.online.predlog import DROPPED_KEY

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def cli(tmp_path_factory, model_file) -> Cli:
    """One registry for the module (monitor only reads it): flights:1 with evaluation metrics."""
    runner = Cli(tmp_path_factory.mktemp("monitor") / "registry")
    runner.json(*register_args(model_file, "--eval-data", CURRENT, "--bootstrap", "200"))
    return runner


@pytest.fixture(scope="module")
def scored(cli, tmp_path_factory) -> pd.DataFrame:
    """flights:1's answers for the current period, with score-batch's columns and every input column."""
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    cli.json("score-batch", "flights:1", CURRENT, out, "--keep-all", "--on-invalid", "null")
    return io.read_table(out)


def write_log(
    root: Path, frame: pd.DataFrame, *, at: dt.datetime, rows_per_request: int = 1, dropped: int = 0, name: str = "a"
) -> pd.DataFrame:
    """Write `frame` as one prediction-log file of the day `at` falls on, with the columns `mlops serve` adds. Rows
    are spread over the minute after `at`; each request of `rows_per_request` rows has one latency."""
    import pyarrow as pa

    n = len(frame)
    request = np.arange(n) // rows_per_request
    rng = np.random.default_rng(len(frame) + rows_per_request)
    latency = rng.gamma(2.0, 3.0, size=request.max() + 1)[request]
    log = frame.assign(
        request_id=[f"r{i}" for i in request],
        received_at=pd.Timestamp(at) + pd.to_timedelta(request * (60_000 // max(request.max() + 1, 1)), unit="ms"),
        latency_ms=latency,
        route=np.where(np.arange(n) % 10 == 0, "challenger", "champion"),
    )
    log["id"] = [f"row-{i}" for i in range(n)]
    path = root / at.strftime("%Y-%m-%d") / f"predictions-{at:%Y%m%dT%H%M%SZ}-w0-1-{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(log, preserve_index=False)
    with io.TableWriter(path, table.schema) as writer:
        writer.write(table)
        writer.annotate({DROPPED_KEY: str(dropped)})
    return log


def test_service_levels_recomputed_by_hand(cli, scored, tmp_path):
    logs = tmp_path / "logs"
    log = write_log(logs, scored.head(3000), at=NOW - dt.timedelta(hours=1), rows_per_request=3, dropped=7)
    report = cli.json("monitor", "flights:1", "--logs", logs)
    service = report["results"]["service"]
    assert service["rows"] == 3000 and service["requests"] == 1000
    per_request = log.drop_duplicates("request_id")["latency_ms"].to_numpy() / 1000
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert service["latency_seconds"][key] == pytest.approx(np.quantile(per_request, q), rel=1e-12)
    invalid = log["invalid_reason"].notna()
    assert service["invalid_rows"] == int(invalid.sum())
    assert service["invalid_share"] == pytest.approx(invalid.mean())
    assert service["invalid_by_reason"] == log.loc[invalid, "invalid_reason"].value_counts().to_dict()
    assert service["route_shares"]["challenger"] == pytest.approx((log["route"] == "challenger").mean())
    assert report["results"]["window"]["dropped_log_rows"] == 7
    fired = {a["name"]: a["firing"] for a in report["results"]["alerts"]}
    assert fired["dropped_log_rows"] is True and fired["min_volume"] is False


def test_drift_equals_drift_report_on_the_same_rows(cli, scored, tmp_path):
    """Data and prediction drift are drift-report's: the same numbers as `drift-report --model` on the window's
    rows with the logged probabilities as the prediction column."""
    logs = tmp_path / "logs"
    inside = write_log(logs, scored.iloc[:4000], at=NOW - dt.timedelta(hours=2))
    write_log(logs, scored.iloc[4000:], at=NOW - dt.timedelta(days=3), name="old")  # outside the 24h window
    monitored = cli.json("monitor", "flights:1", "--logs", logs)
    window_file = tmp_path / "window.parquet"
    io.write_table(window_file, inside.drop(columns=["received_at"]))
    direct = cli.json("drift-report", window_file, "--model", "flights:1", "--prediction-column", "proba_1")
    assert monitored["results"]["window"]["rows"] == 4000
    assert monitored["results"]["drift"]["features"] == direct["results"]["features"]
    ours, theirs = monitored["results"]["drift"]["summary"], direct["results"]["summary"]
    assert ours["prediction_drift"] == theirs["prediction_drift"] and ours["prediction_drift"]["name"] == "proba_1"
    assert {k: v for k, v in ours.items() if k != "only_in_current"} == {
        k: v for k, v in theirs.items() if k != "only_in_current"
    }


def test_labels_joined_give_drift_reports_performance(cli, scored, tmp_path):
    logs = tmp_path / "logs"
    log = write_log(logs, scored.iloc[:3000], at=NOW - dt.timedelta(hours=1))
    labels = tmp_path / "labels.csv"
    labelled = log[log["delayed"].notna()].sample(frac=0.8, random_state=1)
    labelled[["id", "delayed"]].rename(columns={"delayed": "outcome"}).to_csv(labels, index=False)
    report = cli.json(
        "monitor", "flights:1", "--logs", logs, "--labels", labels, "--label-column", "outcome", "--on", "id"
    )
    assert report["results"]["labels"]["matched_rows"] == len(labelled)
    # drift-report on the same labelled rows (valid ones: invalid rows got no answer to judge)
    rows = log.merge(labelled[["id"]], on="id").drop(columns=["received_at"])
    rows = rows[rows["invalid_reason"].isna()].rename(columns={"delayed": "outcome"})
    path = tmp_path / "labelled.parquet"
    io.write_table(path, rows)
    direct = cli.json(
        "drift-report", path, "--model", "flights:1", "--target", "outcome", "--prediction-column", "proba_1"
    )
    perf = report["results"]["drift"]["summary"]["performance"]
    assert perf["rows"] == len(rows)
    assert perf == direct["results"]["summary"]["performance"]
    assert any(a["name"] == "metric_drop" for a in report["results"]["alerts"])


def test_labels_that_are_ambiguous_are_refused(cli, scored, tmp_path):
    logs = tmp_path / "logs"
    log = write_log(logs, scored.iloc[:300], at=NOW - dt.timedelta(hours=1), rows_per_request=3)
    twice = tmp_path / "twice.csv"
    pd.DataFrame({"id": ["row-1", "row-1"], "y": [0, 1]}).to_csv(twice, index=False)
    result = cli("monitor", "flights:1", "--logs", logs, "--labels", twice, "--label-column", "y", "--on", "id")
    assert result.exit_code == 3 and "more than once" in result.stderr
    by_request = tmp_path / "by_request.csv"
    pd.DataFrame({"request_id": log["request_id"].unique(), "y": 0}).to_csv(by_request, index=False)
    result = cli("monitor", "flights:1", "--logs", logs, "--labels", by_request, "--label-column", "y")
    assert result.exit_code == 3 and "--on" in result.stderr


def test_only_the_window_is_read(cli, scored, tmp_path):
    logs = tmp_path / "logs"
    write_log(logs, scored.iloc[:500], at=NOW - dt.timedelta(hours=3))
    old = logs / "2020-01-01"
    old.mkdir()
    (old / "predictions-20200101T000000Z-w0-1-1.parquet").write_bytes(b"not parquet")  # never opened
    report = cli.json("monitor", "flights:1", "--logs", logs, "--window", "6h")
    assert report["results"]["window"]["rows"] == 500
    report = cli.json("monitor", "flights:1", "--logs", logs, "--window", "2h")
    assert report["results"]["window"]["rows"] == 0
    since = (NOW - dt.timedelta(hours=4)).isoformat()
    until = (NOW - dt.timedelta(hours=2, minutes=59)).isoformat()
    report = cli.json("monitor", "flights:1", "--logs", logs, "--since", since, "--until", until)
    assert report["results"]["window"]["rows"] == 500
    result = cli("monitor", "flights:1", "--logs", logs, "--since", "2020-01-01")  # reads the damaged day
    assert result.exit_code == 3 and "2020-01-01" in result.stderr


def test_an_empty_window_alerts_on_volume(cli, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()  # a server that answered nothing yet
    report = cli.json("monitor", "flights:1", "--logs", logs)
    assert report["results"]["window"]["rows"] == 0 and report["results"]["drift"] is None
    assert [a["name"] for a in report["results"]["alerts"] if a["firing"]] == ["min_volume"]
    report = cli.json("monitor", "flights:1", "--logs", logs, "--fail-on-alert", expect=1)
    assert report["status"] == "fail"


def test_policy_file_sets_the_rules(cli, scored, tmp_path):
    logs = tmp_path / "logs"
    write_log(logs, scored.iloc[:2000], at=NOW - dt.timedelta(hours=1))
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[rules.latency_p99]\nthreshold = 0.001\nseverity = 'critical'\n"
        "[rules.dataset_drift]\nenabled = false\n[rules.prediction_drift]\nenabled = false\n"
    )
    report = cli.json("monitor", "flights:1", "--logs", logs, "--policy", policy, "--fail-on-alert", expect=1)
    alerts = {a["name"]: a for a in report["results"]["alerts"]}
    assert alerts["latency_p99"]["firing"] and alerts["latency_p99"]["severity"] == "critical"
    assert "dataset_drift" not in alerts and "prediction_drift" not in alerts
    policy.write_text("[rules.latency_p99]\nthreshhold = 1\n")  # a typo must not silence a rule
    result = cli("monitor", "flights:1", "--logs", logs, "--policy", policy)
    assert result.exit_code == 3 and "threshhold" in result.stderr


def test_score_batch_output_is_a_window_of_its_own(cli, scored, tmp_path):
    path = tmp_path / "scores.parquet"
    io.write_table(path, scored)
    report = cli.json("monitor", "flights:1", "--logs", path)
    assert report["results"]["window"]["rows"] == len(scored)
    assert any("every row is in the window" in m for m in report["messages"])
    assert report["results"]["service"]["latency_seconds"] is None
    assert "latency_p99" not in {a["name"] for a in report["results"]["alerts"]}
    result = cli("monitor", "flights:1", "--logs", path, "--window", "1h")
    assert result.exit_code == 3 and "received_at" in result.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--logs", "missing-dir"), 3),
        (("--logs", ".", "--window", "soon"), 2),
        (("--logs", ".", "--since", "2026-12-02", "--until", "2026-12-01"), 2),
        (("--logs", ".", "--labels", "x.csv"), 2),
    ],
)
def test_bad_arguments(cli, args, code):
    result = cli("monitor", "flights:1", *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output


def test_monitor_on_a_served_log(cli, tmp_path):
    """The real thing: `mlops serve --log-dir`, requests with ids, SIGTERM; then monitor with labels joined."""
    from serving import Server, rows_of

    registry_dir = cli.registry
    rows = io.read_table(CURRENT).head(120)
    logs = tmp_path / "logs"
    with Server(registry_dir, "flights:1", "--log-dir", logs, tmp=tmp_path) as server:
        server.wait_ready()
        body = rows_of(rows)
        for i in range(0, len(body), 4):
            ids = [f"f{j}" for j in range(i, i + 4)]
            status, _, _ = server.post_json("/predict", {"rows": body[i : i + 4], "ids": ids})
            assert status == 200
        assert server.stop() == 0
    labels = tmp_path / "labels.parquet"
    io.write_table(labels, pd.DataFrame({"id": [f"f{j}" for j in range(len(rows))], "delayed": rows["delayed"]}))
    result = run_mlops(
        "monitor",
        "flights:1",
        "--logs",
        logs,
        "--labels",
        labels,
        "--label-column",
        "delayed",
        "--on",
        "id",
        "--json",
        registry=registry_dir,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    service = report["results"]["service"]
    assert service["rows"] == 120 and service["requests"] == 30
    assert service["version_shares"] == {"1": 1.0} and service["latency_seconds"]["p99"] > 0
    labelled = int(rows["delayed"].notna().sum())
    assert report["results"]["labels"]["matched_rows"] == labelled
    assert report["results"]["drift"]["summary"]["performance"]["rows"] == labelled


def test_monitor_textfile_and_alerts_go_out_once(cli, scored, tmp_path):
    """The window's metrics as a node_exporter textfile (promtool-clean, values from the report), and its alerts
    delivered through the webhook once when they start firing, not again while they keep firing."""
    from test_observe import Receiver, promtool, series, values

    logs = tmp_path / "logs"
    write_log(logs, scored.iloc[:2000], at=NOW - dt.timedelta(hours=1), dropped=3)
    prom = tmp_path / "monitor.prom"
    args = ("monitor", "flights:1", "--logs", logs, "--prom-file", prom, "--alert-format", "json", "--json")
    with Receiver((200, {})) as receiver:
        first = cli(*args, "--alert-webhook", receiver.url)
        assert first.exit_code == 0, first.stderr
        report = json.loads(first.stdout)
        firing = {a["name"] for a in report["results"]["alerts"] if a["firing"]}
        assert "dropped_log_rows" in firing
        assert len(receiver.requests) == 1
        sent = json.dumps(receiver.bodies[0])
        assert all(name in sent for name in firing)
        assert cli(*args, "--alert-webhook", receiver.url).exit_code == 0
        assert len(receiver.requests) == 1  # still firing: nothing new to say
    got = values(promtool(prom))
    service = report["results"]["service"]
    assert got[series("mlops_monitor_dropped_log_rows", "monitor", model="flights")] == 3
    assert got[series("mlops_job_input_rows", "monitor", model="flights")] == 2000
    p99 = got[series("mlops_monitor_latency_seconds", "monitor", model="flights", quantile="0.99")]
    assert p99 == pytest.approx(service["latency_seconds"]["p99"])
    drifted = report["results"]["drift"]["summary"]["verdict"] == "drift"
    assert got[series("mlops_drift_detected", "monitor", model="flights")] == float(drifted)
    assert got[series("mlops_alerts_firing", "monitor", model="flights", severity="warning")] == sum(
        1 for a in report["results"]["alerts"] if a["firing"] and a["severity"] == "warning"
    )
