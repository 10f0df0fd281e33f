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
    assert {
        "register",
        "models list",
        "models show",
        "models promote",
        "models rollback",
        "models history",
        "serve",
    } <= set(COMMANDS)


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


def _imports(*argv) -> set[str]:
    """The modules `mlops ARGV` imports, in a fresh interpreter."""
    code = (
        f"import sys, runpy; sys.argv = ['mlops', *{[str(a) for a in argv]!r}]\n"
        "try:\n    runpy.run_module('mlops_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('MODULES=' + ','.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return set(out.strip().splitlines()[-1].removeprefix("MODULES=").split(","))


def _packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


# Start-up is counted in modules, not seconds, so a busy machine cannot make these flaky. Measured medians on this
# machine: `mlops --help` 0.12 s -> 0.06 s once help stopped rendering with rich (326 modules -> 160).
DATA_LIBRARIES = {"pandas", "sklearn", "scipy", "numpy", "pyarrow", "joblib"}
EXTRAS = {"uvicorn", "prometheus_client", "starlette", "onnxruntime", "skl2onnx", "skops", "httptools", "uvloop",
          "redis", "confluent_kafka", "dask", "distributed"}  # fmt: skip


def test_help_imports_no_heavy_library():
    """Plain help: typer and the command table. Not rich (typer renders help with it unless rich_markup_mode is
    None), not even the pydantic that typer 0.29 needs to convert parameter values."""
    modules = _imports("--help")
    assert not _packages(modules) & (DATA_LIBRARIES | EXTRAS | {"rich", "pydantic"})
    assert len(modules) < 200, len(modules)


@pytest.mark.parametrize("name", sorted({n.split()[0] for n in COMMANDS}))
def test_subcommand_help_imports_no_heavy_library(name):
    modules = _imports(name, "--help")
    assert not _packages(modules) & (DATA_LIBRARIES | EXTRAS | {"rich"})
    assert len(modules) < 320, len(modules)


def test_registry_commands_import_no_data_library_and_no_rich_with_json(tmp_path, model_file):
    """`models list/show/history/promote/rollback` read JSON files: no pandas, pyarrow, numpy, and with --json or -q
    no rich either (rich is imported only to print tables). pydantic comes with typer 0.29's parameter parsing."""
    registry = tmp_path / "registry"
    assert run_mlops("register", model_file, "--name", "m", "-q", registry=registry).returncode == 0
    for argv in (
        ("models", "list", "--json"),
        ("models", "show", "m", "--json"),
        ("models", "history", "m", "-q"),
        ("models", "promote", "m:1", "production", "--json"),
        ("models", "rollback", "m", "--json"),  # exit 4 (nothing to roll back to): the error path stays light too
    ):
        modules = _imports("--registry", registry, *argv)
        assert not _packages(modules) & (DATA_LIBRARIES | {"rich"}), argv
        assert len(modules) < 320, (argv, len(modules))


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
