"""Meta-tests: every command has help text and a README section; --help stays light; tables render."""

import io as stdio
import json
import subprocess
import sys

import pytest
import typer
from conftest import ROOT, run_mlops
from rich.console import Console

from mlops_cli import __version__, render
from mlops_cli.cli import app
from mlops_cli.report import Report


def _commands(command=None, prefix=()):
    command = command or typer.main.get_command(app)
    for name, sub in getattr(command, "commands", {}).items():
        path = (*prefix, name)
        if getattr(sub, "commands", None):
            yield from _commands(sub, path)
        else:
            yield " ".join(path), sub


COMMANDS = dict(_commands())


def test_the_command_table_is_complete():
    assert {"register", "models list", "models show", "models promote", "models rollback", "models history"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_and_a_readme_entry(name):
    command = COMMANDS[name]
    assert command.help and len(command.help.strip()) > 20, name
    assert (
        f"mlops {name}" in (ROOT / "README.md").read_text()
        or f"`mlops {name.split()[0]}" in (ROOT / "README.md").read_text()
    ), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help(cli, name):
    result = cli(*name.split(), "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_help_imports_no_heavy_library():
    code = (
        "import sys, runpy; sys.argv = ['mlops', '--help']\n"
        "try:\n    runpy.run_module('mlops_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('pandas', 'sklearn', 'scipy', 'pyarrow') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY="


@pytest.mark.parametrize("name", sorted({n.split()[0] for n in COMMANDS}))
def test_subcommand_help_imports_no_heavy_library(name):
    code = (
        f"import sys, runpy; sys.argv = ['mlops', {name!r}, '--help']\n"
        "try:\n    runpy.run_module('mlops_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(m for m in ('pandas', 'sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY="


def test_version_and_module_entry_point():
    result = run_mlops("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mlops {__version__}"


def test_no_color_and_json_pipe(tmp_path, model_file):
    registry = tmp_path / "registry"
    result = run_mlops("register", model_file, "--name", "m", "--json", registry=registry, env={"NO_COLOR": "1"})
    assert result.returncode == 0 and json.loads(result.stdout)["results"]["created"] is True
    listed = run_mlops("models", "list", registry=registry, env={"NO_COLOR": "1"})
    assert "\x1b[" not in listed.stdout and "m" in listed.stdout


def test_registry_from_environment(tmp_path, model_file):
    registry = tmp_path / "from-env"
    result = run_mlops("register", model_file, "--name", "m", "-q", env={"MLOPS_REGISTRY": str(registry)})
    assert result.returncode == 0 and (registry / "m" / "versions" / "1" / "manifest.json").is_file()


def test_tables_render_at_fixed_width(cli, registered):
    report = cli.json("models", "show", "flights")
    buffer = stdio.StringIO()
    render.render_manifest(Report("models show", results=report["results"]), Console(file=buffer, width=100))
    text = buffer.getvalue()
    assert "flights:1" in text and "temp" in text and "roc_auc" in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--nope"], "No such option: --nope"),
        (["models", "promote"], "Missing argument 'REF'"),
        (["drift-report", "a.parquet", "--stattest", "foo"], "'foo' is not one of"),
        (["drift-report", "a.parquet", "--threshold", "-1"], "--threshold"),
        (["score-batch", "m", "in.csv", "out.parquet", "--format", "xml"], "'xml' is not one of"),
        (["retrain", "m", "--data", "d.csv", "--target", "y", "--trigger", "foo"], "'foo' is not one of"),
        (["register", "m.joblib", "--name", "m", "--eval-data", "e.csv"], "needs --target"),
        (["smoke-test", "m", "--output-min", "1", "--output-max", "0"], "above --output-max"),
    ],
)
def test_usage_errors_are_one_line_and_an_envelope_with_json(tmp_path, args, fragment):
    """Exit 2 keeps the conventions: one line on stderr, and a JSON envelope on stdout with --json."""
    result = run_mlops(*args, registry=tmp_path / "registry")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and fragment in result.stderr
    result = run_mlops(*args, "--json", registry=tmp_path / "registry")
    report = json.loads(result.stdout)
    assert result.returncode == 2 and report["status"] == "error" and report["exit_code"] == 2
    assert fragment in report["messages"][0]
