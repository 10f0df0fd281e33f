"""The ready-made operations files (deploy/prometheus, deploy/grafana) are valid and speak of metrics that exist.

Prometheus's own checker does the rules and the config (`promtool check rules|config`), and `promtool test rules`
runs the unit tests that show each alert firing. The Grafana dashboard has no checker of its own here: every PromQL
expression in it is reduced to the metric names it reads, and each must be one that `mlops serve` or `--prom-file`
exports (tests/test_ops_e2e.py also runs every expression against a real Prometheus).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mlops.json"
SEVERITIES = {"critical", "warning", "info"}
# Series Prometheus makes itself: `up` per scrape target, `ALERTS` per alert of its rules.
PROMETHEUS_OWN = {"up": "gauge", "ALERTS": "gauge"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --- what the code exports ----------------------------------------------------------------------------------------

_SERVE_NAMES = """
import json, sys
from mlops_cli.online import metrics
metrics.use_folder(sys.argv[1])
from prometheus_client.metrics import MetricWrapperBase
found = {}
collectors = [c for c in vars(metrics.Metrics()).values() if isinstance(c, MetricWrapperBase)]
for collector in collectors:
    for family in collector.describe():
        found[family.name + ("_total" if family.type == "counter" else "")] = family.type
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, str]:
    """Metric name -> type, for everything mlops exports: the serve Metrics (made in a fresh interpreter with its
    own multiprocess folder, as a worker makes them) and the job textfile metrics."""
    folder = tmp_path_factory.mktemp("multiproc")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_NAMES, str(folder)], capture_output=True, text=True, env=env, check=True
    )
    serve = json.loads(done.stdout)
    assert "mlops_serve_requests_total" in serve and serve["mlops_serve_request_duration_seconds"] == "histogram"
    return {**serve, **job_metrics(), **PROMETHEUS_OWN}


def job_metrics() -> dict[str, str]:
    """The names `--prom-file` writes (mlops_cli/observe/promfile.py)."""
    from mlops_cli.observe import promfile

    return dict.fromkeys(promfile.HELP, "gauge")  # every name the textfile writer knows; all gauges


# --- reading PromQL -----------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
             "inf", "nan", "atan2"}  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (as written: a histogram's _bucket/_sum/_count kept)."""
    variable = _LABEL_VALUES.match(expr)  # Grafana's label_values(SELECTOR, LABEL)
    if variable:
        expr = variable.group(1)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries: [5m], [$__rate_interval], [1h:5m]
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers (their values are strings, already gone)
    text = _GROUPING.sub("", text)
    return {
        name for name, call in _IDENTIFIER.findall(text) if not call and name not in _KEYWORDS
    }  # an identifier followed by "(" is a function or an aggregation


def unknown_names(expr: str, exported: dict[str, str]) -> set[str]:
    unknown = set()
    for name in metric_names(expr):
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if name in exported or (base is not None and exported.get(base) == "histogram"):
            continue
        unknown.add(name)
    return unknown


@pytest.mark.parametrize(
    "expr, names",
    [
        ('sum by (code) (rate(mlops_serve_requests_total{job=~"$job", code=~"5.."}[$__rate_interval]))',
         {"mlops_serve_requests_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 0.25", {"a_bucket"}),
        ("time() - last_success > 26 * 3600", {"last_success"}),
        ('a / ignoring (class) group_left sum by (v) (rate(b{x="y z"}[1h:5m] offset 5m))', {"a", "b"}),
        ('ALERTS{alertname=~"Mlops.*", alertstate="firing"} and on (instance) up == bool 0', {"ALERTS", "up"}),
        ('label_values(mlops_serve_requests_total{job=~"$job"}, instance)', {"mlops_serve_requests_total"}),
        ("1e3 * x_total + nan", {"x_total"}),
    ],
)  # fmt: skip
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


def test_a_misspelled_or_missing_metric_is_caught(exported):
    assert unknown_names("rate(mlops_serve_request_total[5m])", exported) == {"mlops_serve_request_total"}
    assert unknown_names("mlops_serve_requests_total_bucket", exported) == {"mlops_serve_requests_total_bucket"}
    assert unknown_names("mlops_serve_batch_rows_sum / mlops_serve_batch_rows_count", exported) == set()


# --- Prometheus: rules, their unit tests, the example config ------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=60)


def test_alert_rules_pass_promtool_check():
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_pass_their_unit_tests():
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_prometheus_config_is_valid():
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert "mlops-serve" in {job["job_name"] for job in config["scrape_configs"]}  # MlopsServeDown's job


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_alert_has_a_severity_a_summary_and_a_description():
    rules = _rules()
    assert len(rules) >= 10
    for rule in rules:
        severity = rule["labels"]["severity"]
        assert severity in SEVERITIES or severity == "{{ $labels.severity }}", rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40, rule["alert"]


def test_every_alert_is_shown_firing_by_a_unit_test():
    fired = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in _rules()} == fired


def test_alert_rules_read_only_exported_metrics(exported):
    for rule in _rules():
        assert not unknown_names(rule["expr"], exported), rule["alert"]


# --- Grafana ------------------------------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def test_dashboard_expressions_read_only_exported_metrics(exported):
    found = expressions(_dashboard())
    assert len(found) >= 25
    read = set()
    for where, expr in found:
        assert not unknown_names(expr, exported), (where, expr, unknown_names(expr, exported))
        read |= metric_names(expr)
    # the panels the dashboard promises are there
    for name in ("mlops_serve_requests_total", "mlops_serve_request_duration_seconds_bucket",
                 "mlops_serve_in_flight_requests", "mlops_serve_rows_total", "mlops_serve_invalid_rows_total",
                 "mlops_serve_predicted_score_bucket", "mlops_serve_model_info", "mlops_serve_alias_switches_total",
                 "mlops_job_last_success_timestamp_seconds", "mlops_job_duration_seconds", "mlops_job_input_rows",
                 "mlops_job_rejected_rows", "mlops_drift_share_ratio", "mlops_drift_feature_effect",
                 "mlops_alerts_firing"):  # fmt: skip
        assert name in read, name


def test_dashboard_uses_a_prometheus_datasource_variable_everywhere():
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, variable["name"]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_panels_have_unique_ids_and_do_not_overlap():
    dashboard = _dashboard()
    assert dashboard["uid"] == "mlops" and dashboard["schemaVersion"] >= 36
    all_panels = panels(dashboard)
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in all_panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {(box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])}
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells
