"""Shared fixtures: the sample data, a small trained example model, a registry in tmp_path, and CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlops_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
REFERENCE = SAMPLE / "reference.parquet"
CURRENT = SAMPLE / "current.parquet"
CURRENT_CSV = SAMPLE / "current.csv"
sys.path.insert(0, str(SAMPLE))

import train as sample_train  # noqa: E402  (sample_data/train.py: the example pipeline)


@pytest.fixture(scope="session")
def reference_frame():
    from mlops_cli import io

    return io.read_table(REFERENCE)


@pytest.fixture(scope="session")
def current_frame():
    from mlops_cli import io

    return io.read_table(CURRENT)


def _fit_sample_model(tmp_path_factory, reference_frame, max_iter: int, name: str) -> Path:
    import joblib

    labelled = reference_frame[reference_frame["delayed"].notna()]
    model = sample_train.build(max_iter=max_iter).fit(labelled[sample_train.FEATURES], labelled["delayed"].astype(int))
    path = tmp_path_factory.mktemp("models") / name
    joblib.dump(model, path)
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory, reference_frame) -> Path:
    """The sample pipeline, kept small (30 boosting rounds) so the suite stays fast."""
    return _fit_sample_model(tmp_path_factory, reference_frame, 30, "flights.joblib")


@pytest.fixture(scope="session")
def other_model_file(tmp_path_factory, reference_frame) -> Path:
    """A second, different artifact of the same pipeline (for promote/rollback)."""
    return _fit_sample_model(tmp_path_factory, reference_frame, 20, "flights-v2.joblib")


@pytest.fixture
def relaxed(tmp_path) -> Path:
    """A checklist policy with a latency budget no busy test machine misses (latency has its own tests)."""
    path = tmp_path / "relaxed.toml"
    path.write_text("[budgets]\nlatency_p99_ms = 2000\n")
    return path


@pytest.fixture
def registry_dir(tmp_path) -> Path:
    return tmp_path / "registry"


class Cli:
    """Runs `mlops` in-process against one registry and parses `--json` output."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        self.runner = CliRunner()

    def __call__(self, *args: Any, registry: bool = True) -> Any:
        argv = (["--registry", str(self.registry)] if registry else []) + [str(a) for a in args]
        return self.runner.invoke(app, argv, catch_exceptions=False)

    def json(self, *args: Any, expect: int = 0) -> dict[str, Any]:
        result = self(*args, "--json")
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def cli(registry_dir) -> Cli:
    return Cli(registry_dir)


def register_args(model_file: Path, *extra: Any) -> tuple[Any, ...]:
    """`mlops register MODEL --name flights` with the Jan-Apr training data: how most tests' registries start."""
    return ("register", model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed", *extra)


@pytest.fixture
def registered(cli, model_file) -> dict[str, Any]:
    """flights:1, registered with training and evaluation data (the full manifest)."""
    return cli.json(*register_args(model_file, "--eval-data", CURRENT, "--bootstrap", "200"))


def run_mlops(*args: Any, registry: Path | None = None, timeout: float = 300, **kwargs: Any):
    """`python -m mlops_cli` as a real process (for exit codes, signals and concurrency)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}
    argv = [sys.executable, "-m", "mlops_cli"] + (["--registry", str(registry)] if registry else [])
    return subprocess.run(
        argv + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


def edit_manifest_as_registered(model_dir: Path, version: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit a version's manifest into one a registration could have written (under another scikit-learn, say): the
    `registered` event's sha256 and the event chain after it are recomputed, so the registry accepts it as genuine.
    Tests of tampering edit the manifest alone, and expect it refused."""
    from mlops_cli import eventlog, io

    path = model_dir / "versions" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    lines, prev = [], None
    for line in (model_dir / "events.jsonl").read_bytes().splitlines():
        event = json.loads(line)
        if event["event"] == "registered" and event["version"] == version:
            event["manifest_sha256"] = io.sha256_file(path)
        line = json.dumps({**event, "prev": prev}, sort_keys=True).encode()
        lines.append(line + b"\n")
        prev = eventlog.line_hash(line)
    (model_dir / "events.jsonl").write_bytes(b"".join(lines))
