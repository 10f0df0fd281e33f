"""End to end with the real components: Prometheus scrapes a running `mlops serve`, node_exporter's textfile collector
reads the `--prom-file` a real `mlops drift-report` wrote, and Prometheus evaluates deploy/prometheus/alerts.yml.

Debian's `prometheus` and `prometheus-node-exporter` (the Makefile's system target installs them) run on 127.0.0.1
with temporary storage, started and stopped here. Prometheus's configuration is deploy/prometheus/prometheus.yml with
its targets pointed at these processes and 1 s intervals. The test asks Prometheus's HTTP API, as Grafana would.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from conftest import CURRENT, REFERENCE, ROOT, Cli
from serving import Server, rows_of
from test_ops_files import DASHBOARD, PROMETHEUS, expressions

from mlops_cli import io

pytestmark = pytest.mark.slow
T = TypeVar("T")
PREDICTIONS, ROWS_EACH = 5, 4  # good /predict requests the test sends, and rows in each
DRIFT_ROWS = 2_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A program for the test's lifetime: stopped at the end, whatever happened."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _alive(process: subprocess.Popen[bytes], log: Path) -> None:
    """A program that exited early fails the test with its log, rather than a wait running out."""
    if process.poll() is not None:
        raise AssertionError(f"{process.args[0]} exited with {process.returncode}: {log.read_text()[-2000:]}")


def _get(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 while Prometheus starts: close its connection, let _wait retry
        exc.close()
        raise


def _wait(what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll until check() returns something (not None); fail with the last thing seen."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError as exc:  # not listening yet
            found, last = None, exc
        if found is not None:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last})")


class Stack:
    """The processes and what the test did to them."""

    drift: dict[str, Any]  # the drift-report's JSON report
    drift_ran: tuple[float, float]  # before it started, after it ended

    def __init__(self, port: int) -> None:
        self.port = port

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = _get(self.port, "/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The one sample of an instant query, or None while there is none."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, expected: float, timeout: float = 30) -> None:
        _wait(f"{expr} == {expected}", lambda: True if self.value(expr) == expected else None, timeout)


def _prometheus_config(serve: int, node: int, rules: Path) -> dict[str, Any]:
    """The example config, its targets on the test's ports, 1 s intervals, the rules by absolute path."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    config.pop("alerting")  # no Alertmanager here: /api/v1/alerts shows what would be sent
    ports = {"mlops-serve": serve, "node": node}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports.pop(job['job_name'])}"]}]
    assert not ports, f"prometheus.yml lacks the jobs {ports}"
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_file) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ops")
    registry = tmp / "registry"
    cli = Cli(registry)
    cli.json("register", model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed")
    cli.json("models", "promote", "flights:1", "production")
    current = io.read_table(CURRENT)
    data = tmp / "current.parquet"
    current.head(DRIFT_ROWS).to_parquet(data)
    textfiles = tmp / "textfiles"
    textfiles.mkdir()
    report = tmp / "drift-report.json"

    with contextlib.ExitStack() as running:
        # The nightly job, as cron runs it: a real process that writes its textfile where node_exporter reads. It
        # runs while the server and Prometheus start.
        started = time.time()
        job = running.enter_context(
            _process(
                [sys.executable, "-m", "mlops_cli", "--registry", str(registry), "drift-report", str(data),
                 "--model", "flights@production", "-q", "-o", str(report),
                 "--prom-file", str(textfiles / "mlops-drift-report-flights.prom")],
                tmp / "drift-report.log",
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )  # fmt: skip
        server = running.enter_context(Server(registry, "flights@production", "--log-dir", tmp / "log", tmp=tmp))
        running.callback(server.stop)  # SIGTERM: the workers drain and exit with the server
        node = _free_port()
        exporter = running.enter_context(
            _process(
                ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node}", "--collector.disable-defaults",
                 "--collector.textfile", f"--collector.textfile.directory={textfiles}"],
                tmp / "node-exporter.log",
            )
        )  # fmt: skip
        server.wait_ready()
        port = _free_port()
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(_prometheus_config(server.port, node, PROMETHEUS / "alerts.yml")))
        prometheus_process = running.enter_context(
            _process(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                tmp / "prometheus.log",
            )
        )  # fmt: skip

        def ready() -> Any:
            _alive(exporter, tmp / "node-exporter.log")
            _alive(prometheus_process, tmp / "prometheus.log")
            return _get(port, "/api/v1/status/buildinfo")

        _wait("Prometheus ready", ready)
        # The traffic starts once Prometheus has scraped the idle server, so its rates see the requests.
        prometheus = Stack(port)
        prometheus.wait_value('up{job="mlops-serve"}', 1)
        rows = rows_of(current.head(PREDICTIONS * ROWS_EACH))
        for i in range(PREDICTIONS):
            status, _, body = server.post_json("/predict", {"rows": rows[i * ROWS_EACH : (i + 1) * ROWS_EACH]})
            assert status == 200, body
        status, _, _ = server.request("POST", "/predict", b'{"rows": [', {"content-type": "application/json"})
        assert status == 400
        assert job.wait(120) == 0, (tmp / "drift-report.log").read_text()
        prometheus.drift, prometheus.drift_ran = json.loads(report.read_text()), (started, time.time())
        yield prometheus


def test_prometheus_scrapes_what_serve_answered(stack):
    stack.wait_value('sum(mlops_serve_requests_total{handler="/predict"})', PREDICTIONS + 1)
    assert stack.value('sum(mlops_serve_requests_total{handler="/predict", code="200"})') == PREDICTIONS
    assert stack.value('sum(mlops_serve_requests_total{handler="/predict", code="400"})') == 1
    assert stack.value('sum(mlops_serve_request_duration_seconds_count{handler="/predict"})') == PREDICTIONS + 1
    assert stack.value('sum(mlops_serve_rows_total{outcome="scored"})') == PREDICTIONS * ROWS_EACH
    assert stack.value("sum(mlops_serve_predicted_score_count)") == PREDICTIONS * ROWS_EACH
    assert stack.value("min(mlops_serve_ready)") == 1
    info = stack.query('mlops_serve_model_info{role="champion"} == 1')
    assert [(s["metric"]["model"], s["metric"]["version"]) for s in info] == [("flights", "1")]
    # exported at 0 from the start: the increase() of MlopsServeSwitchFailed / MlopsServeLogRowsDropped sees a first 1
    assert stack.value('sum(mlops_serve_alias_switches_total{result="failed"})') == 0
    assert stack.value('sum(mlops_serve_log_rows_total{result="dropped"})') == 0


def test_prometheus_reads_the_prom_file_through_node_exporter(stack):
    labels = 'command="drift-report", model="flights"'
    stack.wait_value(f"mlops_job_exit_code{{{labels}}}", 0)
    assert stack.value('node_textfile_scrape_error{job="node"}') == 0  # node_exporter parsed the file
    success = stack.value(f"mlops_job_last_success_timestamp_seconds{{{labels}}}")
    started, ended = stack.drift_ran
    assert success is not None and started - 1 <= success <= ended + 1
    summary = stack.drift["results"]["summary"]
    assert stack.value(f"mlops_job_input_rows{{{labels}}}") == summary["rows"]["current"] == DRIFT_ROWS
    assert stack.value(f"mlops_drift_detected{{{labels}}}") == (summary["verdict"] == "drift")
    share = stack.value(f"mlops_drift_share_ratio{{{labels}}}")
    assert share is not None and math.isclose(share, summary["drifted_share"])
    drifted = stack.query(f"mlops_drift_feature_drifted{{{labels}}} == 1")
    assert sorted(s["metric"]["feature"] for s in drifted) == sorted(summary["drifted_features"])
    assert len(stack.query(f"mlops_drift_feature_effect{{{labels}}}")) == summary["tested"]


def test_alert_rules_load_healthy_and_fire_on_the_drift(stack):
    names = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]}  # fmt: skip

    def evaluated() -> list[dict[str, Any]] | None:
        groups = _get(stack.port, "/api/v1/rules", type="alert")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None

    rules = _wait("every rule evaluated", evaluated)
    assert {rule["name"] for rule in rules} == names
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]

    def firing() -> set[str] | None:
        alerts = _get(stack.port, "/api/v1/alerts")["data"]["alerts"]
        found = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        return found if {"MlopsDataDrift", "MlopsPredictionDrift"} <= found else None

    found = _wait("the drift alerts fire", firing)
    # the server is up, ready and answering: none of its alerts fires
    assert not {name for name in found if name.startswith("MlopsServe")}, found
    assert "MlopsJobStale" not in found and "MlopsJobFailed" not in found


def test_every_dashboard_query_runs_and_the_main_panels_have_data(stack):
    variables = {"$__rate_interval": "30s", "${datasource}": "", "$job": ".*", "$instance": ".*", "$model": ".*"}
    expected = {"Ready", "Model version served", "Requests by code", "Prediction latency", "Rows by route and outcome",
                "Predicted score distribution", "Time since last success", "Duration", "Drift share",
                "Per-feature drift effect", "Drifted features"}  # fmt: skip
    queries = []
    for where, expr in expressions(json.loads(DASHBOARD.read_text())):
        if expr.startswith("label_values("):
            continue  # Grafana's own function; its selector is checked by tests/test_ops_files.py
        for name, value in variables.items():
            expr = expr.replace(name, value)
        queries.append((where.removeprefix("panel ").strip("'"), expr))
    assert expected <= {where for where, _ in queries}

    def missing() -> set[str]:
        # stack.query fails on any query Prometheus rejects; a rate needs two scrapes after the traffic
        return expected & {where for where, expr in queries if not stack.query(expr)}

    _wait("every main panel has data", lambda: True if not missing() else None, timeout=15)
