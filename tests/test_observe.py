"""--prom-file (node_exporter textfiles, checked by promtool) and webhook alerts (delivered to a real local HTTP
receiver started here: 200, 500 then 200, 429 with Retry-After, and one that never answers)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REFERENCE, Cli, register_args

from mlops_cli.observe import promfile
from mlops_cli.observe.alerts import Alert
from mlops_cli.observe.promfile import Run, Sample
from mlops_cli.report import Report


def promtool(path: Path) -> str:
    """The file's text, once `promtool check metrics` has accepted it without a single lint remark."""
    text = path.read_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
    return text


def values(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def series(name: str, command: str, model: str = "flights", **labels: str) -> str:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return f'{name}{{command="{command}",model="{model}"{extra}}}'


@pytest.fixture(scope="module")
def small(tmp_path_factory, current_frame) -> Path:
    """3,000 rows of the current data: enough for the large-sample rule, quick to score."""
    path = tmp_path_factory.mktemp("data") / "small.parquet"
    current_frame.head(3000).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory, model_file) -> Path:
    """flights:1 registered once for the module (with training data: a stored reference sample)."""
    root = tmp_path_factory.mktemp("observe") / "registry"
    Cli(root).json(*register_args(model_file))
    return root


@pytest.fixture
def reg(shared_registry, tmp_path) -> Cli:
    """A private copy of the module's registry (alert state and events are per test)."""
    root = tmp_path / "registry"
    shutil.copytree(shared_registry, root)
    return Cli(root)


# --- --prom-file -------------------------------------------------------------------------------------------------


def test_drift_report_textfile_holds_the_reports_verdict_and_passes_promtool(reg, tmp_path, small):
    prom = tmp_path / "drift.prom"
    report = reg.json("drift-report", "--model", "flights", small, "--target", "delayed", "--prom-file", prom)
    got = values(promtool(prom))
    summary = report["results"]["summary"]
    assert got[series("mlops_drift_detected", "drift-report")] == (summary["verdict"] == "drift") == 1
    assert got[series("mlops_drift_share_ratio", "drift-report")] == pytest.approx(summary["drifted_share"])
    assert got[series("mlops_job_input_rows", "drift-report")] == summary["rows"]["current"]
    drifted = [k for k, v in got.items() if k.startswith("mlops_drift_feature_drifted{") and v == 1]
    assert len(drifted) == summary["drifted"]
    humid = next(f for f in report["results"]["features"] if f["name"] == "humid")
    effect = got[series("mlops_drift_feature_effect", "drift-report", feature="humid")]
    assert effect == pytest.approx(humid["statistics"]["wasserstein_norm"])  # decided by wasserstein (large sample)
    assert got[series("mlops_prediction_drift_detected", "drift-report")] == 1
    auc = summary["performance"]["metrics"]["roc_auc"]["current"]
    assert got[series("mlops_performance_metric", "drift-report", metric="roc_auc")] == pytest.approx(auc)
    assert got[series("mlops_alerts_firing", "drift-report", severity="warning")] == 2  # dataset + prediction drift
    assert got[series("mlops_job_exit_code", "drift-report")] == 0
    assert got[series("mlops_job_passed", "drift-report")] == 1
    # --fail-on-drift: the verdict becomes the exit code, and the textfile says so; the run still counts as done.
    reg.json("drift-report", "--model", "flights", small, "--fail-on-drift", "--prom-file", prom, expect=1)
    got = values(promtool(prom))
    assert got[series("mlops_job_exit_code", "drift-report")] == 1
    assert got[series("mlops_job_passed", "drift-report")] == 0
    assert series("mlops_job_last_success_timestamp_seconds", "drift-report") in got


def test_an_error_run_leaves_last_success_where_it_was(reg, tmp_path, small):
    """A failed night shows as staleness: the error run carries the previous success over, and moves last_run."""
    prom = tmp_path / "score.prom"
    out = tmp_path / "out.parquet"
    report = reg.json("score-batch", "flights", small, out, "--prom-file", prom)
    first = values(promtool(prom))
    success = series("mlops_job_last_success_timestamp_seconds", "score-batch")
    assert first[series("mlops_job_input_rows", "score-batch")] == report["results"]["rows_read"]
    assert first[series("mlops_job_rejected_rows", "score-batch")] == report["results"]["rows_rejected"]
    assert first[series("mlops_alerts_firing", "score-batch", severity="critical")] == 0

    assert reg("score-batch", "flights", tmp_path / "missing.parquet", out, "--prom-file", prom).exit_code == 3
    second = values(promtool(prom))
    assert second[success] == first[success]
    last_run = series("mlops_job_last_run_timestamp_seconds", "score-batch")
    assert second[last_run] > first[last_run]
    assert second[series("mlops_job_exit_code", "score-batch")] == 3
    assert second[series("mlops_job_passed", "score-batch")] == 0
    assert second[series("mlops_alerts_firing", "score-batch", severity="critical")] == 1  # job_failed
    assert series("mlops_job_input_rows", "score-batch") not in second  # an error run read nothing worth stating

    # A registry error (exit 4) with no earlier file: no last-success line at all, and still a valid file.
    fresh = tmp_path / "fresh.prom"
    assert reg("score-batch", "nope", small, out, "--overwrite", "--prom-file", fresh).exit_code == 4
    got = values(promtool(fresh))
    assert not any(k.startswith("mlops_job_last_success") for k in got)
    assert got[series("mlops_job_exit_code", "score-batch", model="nope")] == 4


def test_a_run_that_fails_after_writing_its_textfile_keeps_the_old_success(reg, tmp_path, small, monkeypatch):
    """The report (-o) is written after the textfile: when that write fails (a disk that fills up at the last
    moment, injected here), the run is an error (exit 3) and the textfile it had already written must not claim a
    success."""
    from mlops_cli import io

    prom = tmp_path / "drift.prom"
    assert reg("drift-report", "--model", "flights", small, "--prom-file", prom, "-q").exit_code == 0
    success = series("mlops_job_last_success_timestamp_seconds", "drift-report")
    before = values(promtool(prom))[success]
    report, write_json = tmp_path / "report.json", io.write_json

    def full_disk(path, *args, **kwargs):
        if path == report:
            raise OSError(28, "No space left on device")
        return write_json(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_json", full_disk)
    result = reg("drift-report", "--model", "flights", small, "--prom-file", prom, "-o", report, "-q")
    assert result.exit_code == 3 and "No space left" in result.stderr, result.output
    after = values(promtool(prom))
    assert after[success] == before
    assert after[series("mlops_job_exit_code", "drift-report")] == 3


def test_crash_files_do_not_hold_the_webhook_url():
    from mlops_cli.cli._common import _redacted

    argv = ["mlops", "drift-report", "--alert-webhook", f"http://h/{SECRET}", f"--alert-webhook=http://h/{SECRET}", "x"]
    assert SECRET not in " ".join(_redacted(argv))
    assert _redacted(argv)[-1] == "x" and _redacted(argv)[1] == "drift-report"


def test_every_reporting_command_writes_a_textfile(reg, tmp_path, other_model_file, relaxed, small):
    reg.json("register", other_model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed")
    reg.json("models", "promote", "flights:1", "production")
    runs = {
        "smoke-test": ("smoke-test", "flights", "--rows", "200", "--iterations", "10"),
        "checklist": ("checklist", "flights:2", "--iterations", "10", "--policy", relaxed),
        "abtest": ("abtest", "--champion", "flights:1", "--challenger", "flights:2", "--data", small,
                   "--target", "delayed", "--bootstrap", "50"),
        "retrain": ("retrain", "run", "flights", "--data", small, "--target", "delayed", "--check-only"),
        "verify": ("verify",),
    }  # fmt: skip
    for command, args in runs.items():
        prom = tmp_path / f"{command}.prom"
        result = reg(*args, "--prom-file", prom, "--json")
        assert result.exit_code in (0, 1), (command, result.stdout, result.stderr)
        report = json.loads(result.stdout)
        got = values(promtool(prom))
        model = "" if command == "verify" else "flights"
        assert got[series("mlops_job_exit_code", command, model)] == result.exit_code
        assert series("mlops_job_last_success_timestamp_seconds", command, model) in got
        if command == "checklist":
            failed = got[series("mlops_checklist_items_failed", command)]
            assert failed == len(report["results"]["failed"])
        if command == "abtest":
            outcome = {k: v for k, v in got.items() if k.startswith("mlops_abtest_outcome")}
            assert outcome[series("mlops_abtest_outcome", command, verdict=report["results"]["verdict"])] == 1
            assert sum(outcome.values()) == 1 and len(outcome) > 1
        if command == "retrain":
            outcome = {k: v for k, v in got.items() if k.startswith("mlops_retrain_outcome")}
            decision = report["results"]["job"]["decision"]
            assert outcome[series("mlops_retrain_outcome", command, outcome=decision)] == 1
            assert sum(outcome.values()) == 1


def test_a_prom_file_in_a_missing_folder_is_refused_before_any_work(reg, tmp_path, small):
    out = tmp_path / "out.parquet"
    result = reg("score-batch", "flights", small, out, "--prom-file", tmp_path / "no" / "x.prom")
    assert result.exit_code == 3
    assert not out.exists()


def test_label_values_are_escaped(tmp_path):
    """Feature names come from the user's columns: quotes, backslashes and newlines must not break the file."""
    run = Run("some-command", "m", 0, 1.0, 2.5, Report("some-command"))
    odd = 'a "quoted"\\ name\nwith a newline'
    lines = [Sample("mlops_drift_feature_drifted", 1, {"feature": odd}), Sample("mlops_drift_share_ratio", 0.5)]
    path = tmp_path / "odd.prom"
    path.write_text(promfile.render(run, lines))
    text = promtool(path)
    assert 'feature="a \\"quoted\\"\\\\ name\\nwith a newline"' in text
    alerts = [Alert("x", "warning", True, "s"), Alert("y", "warning", False, "s")]
    got = values(promfile.render(run, promfile.samples(run, alerts)))
    assert got['mlops_job_duration_seconds{command="some-command",model="m"}'] == 1.5
    assert got['mlops_alerts_firing{command="some-command",model="m",severity="warning"}'] == 1


# --- webhook delivery -------------------------------------------------------------------------------------------

SECRET = "T0K3N-s3cr3t-path-part"


class Receiver:
    """A real HTTP server on 127.0.0.1 (port 0), in a thread. It answers from a script: (status, headers) per
    request, "hang" to never answer (until stopped), and the last entry repeats. Records every request."""

    def __init__(self, *script: tuple[int, dict[str, str]] | str) -> None:
        import http.server
        import threading

        self.script = list(script) or [(200, {})]
        self.requests: list[tuple[float, str, dict]] = []
        self.stop_event = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                import time

                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((time.monotonic(), self.path, json.loads(body)))
                step = receiver.script.pop(0) if len(receiver.script) > 1 else receiver.script[0]
                if step == "hang":
                    receiver.stop_event.wait(30)
                    return
                status, headers = step
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET}"

    @property
    def bodies(self) -> list[dict]:
        return [body for _, _, body in self.requests]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


FAST = dict(connect_s=1.0, read_s=1.0, total_s=5.0, attempts=5, backoff_s=0.05, max_backoff_s=0.2)


def test_a_500_is_retried_then_delivered():
    from mlops_cli.observe import webhook

    with Receiver((500, {}), (502, {}), (200, {})) as receiver:
        result = webhook.post(receiver.url, b'{"text": "x"}', webhook.Policy(**FAST))
    assert result.ok and result.attempts == 3 and result.status == 200
    assert [p for _, p, _ in receiver.requests] == [f"/hooks/{SECRET}"] * 3
    gaps = [b[0] - a[0] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the backoff doubles (lower bounds: a loaded machine adds to both)


def test_429_waits_what_retry_after_asks_unless_it_is_past_the_budget():
    from mlops_cli.observe import webhook

    with Receiver((429, {"Retry-After": "1"}), (200, {})) as receiver:
        result = webhook.post(receiver.url, b"{}", webhook.Policy(**FAST))
    assert result.ok and result.attempts == 2
    assert receiver.requests[1][0] - receiver.requests[0][0] >= 1.0

    with Receiver((429, {"Retry-After": "120"}), (200, {})) as receiver:
        result = webhook.post(receiver.url, b"{}", webhook.Policy(**FAST))
    assert not result.ok and result.attempts == 1 and result.seconds < 1.0  # no point waiting past the budget
    assert "Retry-After" in result.error and len(receiver.requests) == 1


def test_a_receiver_that_never_answers_costs_at_most_the_budget():
    import time

    from mlops_cli.observe import webhook

    policy = webhook.Policy(connect_s=0.5, read_s=0.4, total_s=1.5, attempts=10, backoff_s=0.05)
    with Receiver("hang") as receiver:
        start = time.monotonic()
        result = webhook.post(receiver.url, b"{}", policy)
        elapsed = time.monotonic() - start
    assert not result.ok and result.error == "timed out"
    assert result.attempts >= 2  # a read timeout is retried
    assert elapsed < 1.5 + 0.5


def test_a_refused_connection_is_retried_and_a_4xx_is_not():
    import socket

    from mlops_cli.observe import webhook

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = webhook.post(f"http://127.0.0.1:{port}/x", b"{}", webhook.Policy(**{**FAST, "attempts": 3}))
    assert not result.ok and result.attempts == 3 and result.error == "connection refused"

    with Receiver((404, {})) as receiver:
        result = webhook.post(receiver.url, b"{}", webhook.Policy(**FAST))
    assert not result.ok and result.attempts == 1 and result.status == 404


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_drift_alerts_once_when_it_starts_and_once_when_it_ends(reg, tmp_path, small, reference_frame):
    calm = tmp_path / "calm.parquet"
    reference_frame.sample(3000, random_state=1).to_parquet(calm)
    args = ("drift-report", "--model", "flights", "--alert-format", "alertmanager", "--json")
    with Receiver((200, {})) as receiver:
        first = reg(*args, small, "--alert-webhook", receiver.url)
        assert first.exit_code == 0  # drift without --fail-on-drift: reported, and alerted, not a failure
        assert len(receiver.requests) == 1
        body = receiver.bodies[0]
        assert body["version"] == "4" and body["status"] == "firing"
        firing = {a["labels"]["alertname"]: a for a in body["alerts"]}
        assert set(firing) == {"dataset_drift", "prediction_drift"}
        drift = firing["dataset_drift"]
        assert drift["status"] == "firing" and drift["labels"]["model"] == "flights"
        assert drift["labels"]["severity"] == "warning" and len(drift["fingerprint"]) == 16
        assert drift["endsAt"] == "0001-01-01T00:00:00Z"

        assert reg(*args, small, "--alert-webhook", receiver.url).exit_code == 0
        assert len(receiver.requests) == 1  # still drifting: nothing new to say

        calm_run = reg(*args, calm, "--alert-webhook", receiver.url)
        assert calm_run.exit_code == 0
        assert json.loads(calm_run.stdout)["results"]["summary"]["verdict"] == "no drift"
        assert len(receiver.requests) == 2
        resolved = receiver.bodies[1]
        assert resolved["status"] == "resolved"
        ended = {a["labels"]["alertname"]: a for a in resolved["alerts"]}
        assert "dataset_drift" in ended and ended["dataset_drift"]["status"] == "resolved"
        assert ended["dataset_drift"]["fingerprint"] == drift["fingerprint"]
        assert ended["dataset_drift"]["startsAt"] == drift["startsAt"] <= ended["dataset_drift"]["endsAt"]

        assert reg(*args, calm, "--alert-webhook", receiver.url).exit_code == 0
        assert len(receiver.requests) == 2  # resolved stays resolved, silently
    state = json.loads((reg.registry / "flights" / "alerts.json").read_text())
    assert {(a["command"], a["name"], a["firing"]) for a in state["alerts"]} >= {
        ("drift-report", "dataset_drift", False)
    }
    # The registry's own checks do not trip over the alert state.
    assert reg.json("verify")["results"]["warnings"] == 0
    assert [m["name"] for m in reg.json("models", "list")["results"]["models"]] == ["flights"]


def test_a_failed_delivery_keeps_the_exit_code_and_is_recorded_without_the_url(reg, tmp_path, small, monkeypatch):
    out = tmp_path / "out.parquet"
    report_file = tmp_path / "report.json"
    with Receiver((500, {})) as receiver:
        monkeypatch.setenv("MLOPS_ALERT_WEBHOOK", receiver.url)  # the crontab-friendly way
        missing = reg("score-batch", "flights", tmp_path / "missing.parquet", out, "--alert-format", "json",
                      "--alert-timeout", "1", "--json", "-o", report_file)  # fmt: skip
        assert missing.exit_code == 3  # the input error, not the delivery's
        assert len(receiver.requests) >= 2  # retried within the second
        assert receiver.bodies[0]["alerts"][0]["name"] == "job_failed"
        assert receiver.bodies[0]["alerts"][0]["summary"] == "mlops score-batch failed: input error (exit 3)"
        assert "missing.parquet" not in json.dumps(receiver.bodies)  # an error's message stays on this host
    report = json.loads(missing.stdout)
    assert report["status"] == "error" and any("alert delivery failed" in m for m in report["messages"])
    assert "alert delivery failed" in missing.stderr
    events = reg.json("models", "history", "flights")["results"]["events"]
    failed = [e for e in events if e["event"] == "alert_delivery_failed"]
    assert failed and failed[-1]["alerts"] == [{"name": "job_failed", "status": "firing", "severity": "critical"}]

    with Receiver((200, {})) as receiver:
        monkeypatch.setenv("MLOPS_ALERT_WEBHOOK", receiver.url)
        good = reg("score-batch", "flights", small, out, "--alert-format", "slack", "--json")
        assert good.exit_code == 0
        # Nobody heard it fire, so there is no end to announce; the failure itself is in the report and the log.
        assert len(receiver.requests) == 0
        again = reg("score-batch", "flights", tmp_path / "missing.parquet", out, "--overwrite", "--json")
        assert again.exit_code == 3
        assert "[CRITICAL]" in receiver.bodies[-1]["text"] and "job_failed" in receiver.bodies[-1]["text"]
        help_text = reg("score-batch", "--help").stdout
    _no_secret(missing.stdout, missing.stderr, good.stdout, good.stderr, again.stdout, again.stderr, help_text,
               report_file.read_text(), (reg.registry / "flights" / "events.jsonl").read_text(),
               (reg.registry / "flights" / "alerts.json").read_text())  # fmt: skip


def test_a_bad_webhook_url_is_a_usage_error_that_does_not_echo_it(reg, tmp_path, small):
    result = reg("score-batch", "flights", small, tmp_path / "o.parquet", "--alert-webhook", f"ftp://x/{SECRET}")
    assert result.exit_code == 2
    assert "http:// or https://" in result.stderr
    _no_secret(result.stdout, result.stderr)


def test_a_run_without_a_registered_model_keeps_its_state_apart(reg, tmp_path, small, reference_frame):
    ref = tmp_path / "ref.parquet"
    reference_frame.head(3000).to_parquet(ref)
    with Receiver((200, {})) as receiver:
        args = ("drift-report", ref, small, "--alert-webhook", receiver.url, "--alert-format", "json", "--json")
        assert reg(*args).exit_code == 0
        assert reg(*args).exit_code == 0
    assert len(receiver.requests) == 1
    assert receiver.bodies[0]["alerts"][0]["model"] == ""
    assert (reg.registry / ".alerts" / "alerts.json").is_file()
    assert reg.json("verify")["results"]["warnings"] == 0


def test_dedup_state_survives_runs_and_a_damaged_file_starts_afresh(tmp_path):
    from mlops_cli.observe import alerts

    root = tmp_path / "registry"
    drift = Alert("dataset_drift", "warning", True, "drift")

    def run(alert: Alert, deliver: bool = True) -> list[str]:
        with alerts.state(root, "") as store:
            notices = store.changes("", "drift-report", [alert], "2026-01-01T00:00:00Z")
            if deliver:
                store.delivered(notices)
        return [n.status for n in notices]

    assert run(drift, deliver=False) == ["firing"]  # not delivered: the next run tries again
    assert run(drift) == ["firing"]
    assert run(drift) == []
    (root / ".alerts" / "alerts.json").write_text("{not json")
    assert run(drift) == ["firing"]  # at worst, once more
    assert run(Alert("dataset_drift", "warning", False, "calm")) == ["resolved"]
    assert run(Alert("dataset_drift", "warning", False, "calm")) == []
    assert sorted(p.name for p in root.iterdir()) == [".alerts"]  # no model folder made for a model-less run
