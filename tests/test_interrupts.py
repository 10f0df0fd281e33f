"""Commit windows: a signal never cuts a commit in half, in one thread or many, in-process and in real processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import joblib
import pytest
from conftest import CURRENT, ROOT, run_mlops

from mlops_cli import interrupts
from mlops_cli.cli import _common
from mlops_cli.errors import Interrupted
from mlops_cli.registry import Registry


@pytest.fixture
def delivered():
    """Windows honoured, with a recorder in place of the CLI's `deliver`."""
    calls: list[tuple[int, str]] = []
    interrupts.install(lambda signum: calls.append((signum, threading.current_thread().name)))
    yield calls
    interrupts.uninstall()


def test_without_a_cli_a_window_costs_nothing():
    interrupts.uninstall()
    assert interrupts.commit_window() is interrupts.commit_window()  # one shared nullcontext, nothing counted
    assert interrupts.defer(signal.SIGTERM) is False


def test_a_signal_inside_nested_windows_waits_for_the_outermost(delivered):
    assert interrupts.defer(signal.SIGTERM) is False  # no window open: the CLI acts at once
    with interrupts.commit_window():
        with interrupts.commit_window():
            assert interrupts.defer(signal.SIGTERM) is True
            assert interrupts.defer(signal.SIGINT) is True  # a second signal changes nothing
        assert delivered == []  # the inner window closed, the outer is still open
    assert delivered == [(signal.SIGTERM, threading.current_thread().name)]
    with interrupts.commit_window():
        pass
    assert len(delivered) == 1  # delivered once, then forgotten


def test_windows_in_many_threads_deliver_once_when_the_last_closes(delivered):
    entered = threading.Barrier(9)
    release = threading.Event()

    def commit() -> None:
        with interrupts.commit_window():
            entered.wait(5)
            release.wait(5)
        for _ in range(2_000):  # and churn: the count must come back to zero exactly
            with interrupts.commit_window():
                pass

    threads = [threading.Thread(target=commit, name=f"w{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    entered.wait(5)
    assert interrupts.defer(signal.SIGTERM) is True
    release.set()
    for thread in threads:
        thread.join(10)
    assert [s for s, _ in delivered] == [signal.SIGTERM] and delivered[0][1].startswith("w")
    assert interrupts.defer(signal.SIGTERM) is False  # every window closed


def test_the_cli_handler_waits_for_a_window_open_in_another_thread():
    """The CLI's handler defers; the worker that closes the last window hands the signal back to the main thread,
    which raises Interrupted only then."""
    entered, release = threading.Event(), threading.Event()
    finished = []

    def commit() -> None:
        with interrupts.commit_window():
            entered.set()
            release.wait(5)
            finished.append(True)

    restore = _common._interruptible()
    try:
        worker = threading.Thread(target=commit)
        worker.start()
        assert entered.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (main) thread: deferred, no exception
        time.sleep(0.05)
        release.set()
        with pytest.raises(Interrupted) as caught:
            for _ in range(500):
                time.sleep(0.01)
        worker.join(5)
        assert caught.value.signum == signal.SIGTERM and finished == [True]
    finally:
        restore()
    assert interrupts.commit_window() is interrupts.commit_window()  # uninstalled with the handlers


# --- real processes ---------------------------------------------------------------------------------------------

# Runs the CLI after wrapping one function (MODULE.ATTR): its first call completes, then prints MARK on stderr and
# sleeps, so the test's signal lands at that exact point.
HARNESS = textwrap.dedent("""
    import importlib, sys, time
    target, argv = sys.argv[1], sys.argv[2:]
    module_name, _, attr = target.rpartition(".")
    module = importlib.import_module(module_name)
    real, calls = getattr(module, attr), []

    def marked(*args, **kwargs):
        result = real(*args, **kwargs)
        if not calls:
            calls.append(1)
            sys.stderr.write("MARK\\n")
            sys.stderr.flush()
            time.sleep(1.5)
        return result

    setattr(module, attr, marked)
    sys.argv = ["mlops", *argv]
    from mlops_cli import main
    main()
""")


def _interrupt_at(target: str, *args, signals=(signal.SIGTERM,), ignored=()) -> subprocess.CompletedProcess:
    """Run mlops, send `signals` once `target` has been called; `ignored` signals are ignored from the start (as
    `nohup` leaves SIGHUP)."""
    argv = [sys.executable, "-c", HARNESS, target, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def ignore() -> None:
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
    lines = []
    while (line := proc.stderr.readline()) and line != "MARK\n":
        lines.append(line)
    assert line == "MARK\n", (proc.wait(60), lines)
    for signum in signals:
        proc.send_signal(signum)
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "".join(lines) + stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "target, published",
    [
        ("os.fsync", False),  # the artifact's fsync in staging, before publishing: nothing is published
        ("os.rename", True),  # the version folder has just appeared: its event and alias must follow it
    ],
)
def test_sigterm_during_register_leaves_the_whole_version_and_its_events_or_nothing(
    tmp_path, model_file, target, published
):
    registry_dir = tmp_path / "registry"
    args = ["--registry", registry_dir, "register", model_file, "--name", "flights", "--alias", "production", "-q"]
    # Ctrl-C after SIGTERM: a second signal must not cut the commit or the clean-up short.
    result = _interrupt_at(target, *args, signals=(signal.SIGTERM, signal.SIGINT))
    assert result.returncode == 143, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: interrupted by SIGTERM")
    registry = Registry(registry_dir)
    versions = registry.versions("flights") if (registry_dir / "flights" / "versions").is_dir() else []
    events = registry.events("flights") if versions else []
    if published:
        assert [v.version for v in versions] == ["1"]
        registry.verify(versions[0])
        assert [(e["event"], e.get("version") or e.get("to")) for e in events] == [
            ("registered", "1"),
            ("alias_moved", "1"),
        ]
        assert registry.aliases("flights") == {"production": "1"}
    else:
        assert versions == [] and not (registry_dir / "flights" / "events.jsonl").exists()
        assert not (registry_dir / "flights" / "aliases.json").exists()
    staging = registry_dir / "flights" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        "mlops_cli.io.check_output",  # before any work: the error envelope is what gets written
        "os.fchmod",  # the temporary file exists, nothing written to it yet
        "os.fsync",  # the report is in the temporary file, not yet committed
        "os.link",  # committed (-o without --overwrite links the file into place), the folder not yet synced
    ],
)
def test_sigterm_during_the_report_write_never_leaves_a_partial_file(tmp_path, target):
    """Whenever the signal lands in writing `-o FILE`, FILE is whole JSON or absent, no temporary file is left, and
    stdout holds one JSON document."""
    out = tmp_path / "report.json"
    result = _interrupt_at(target, "--registry", tmp_path / "registry", "models", "list", "--json", "-o", out)
    assert result.returncode == 143, result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "registry"] in ([], ["report.json"])
    if out.exists():
        written = json.loads(out.read_text())
        assert written["command"] == "models list"
    assert json.loads(result.stdout)["command"] == "models list"


@pytest.mark.slow
def test_sighup_stops_a_command_as_sigterm_does_with_exit_129(tmp_path):
    """A closed terminal (SIGHUP) no longer kills a command outright: it stops cleanly, one line, exit 128 + 1."""
    out = tmp_path / "report.json"
    args = ("--registry", tmp_path / "registry", "models", "list", "--json", "-o", out)
    result = _interrupt_at("mlops_cli.io.check_output", *args, signals=(signal.SIGHUP,))
    assert result.returncode == 129, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: interrupted by SIGHUP")
    assert json.loads(result.stdout)["exit_code"] == 129


@pytest.mark.slow
def test_under_nohup_sighup_is_still_ignored(tmp_path):
    """`nohup mlops …`: SIGHUP was ignored when the command started, so a closed terminal must not stop it."""
    out = tmp_path / "report.json"
    args = ("--registry", tmp_path / "registry", "models", "list", "--json", "-o", out)
    result = _interrupt_at("mlops_cli.io.check_output", *args, signals=(signal.SIGHUP,), ignored=(signal.SIGHUP,))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["exit_code"] == 0 and json.loads(out.read_text())["exit_code"] == 0


def test_a_model_that_writes_to_fd_1_cannot_corrupt_json_in_a_real_process(tmp_path, model_file):
    """Under CliRunner only sys.stdout can be swapped; a real process also points fd 1 at stderr, so a C library or
    os.write(1, ...) in model code lands there too."""
    import broken_models

    path = tmp_path / "fd1.joblib"
    joblib.dump(broken_models.WritesToFd1(joblib.load(model_file)), path)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    registry = tmp_path / "registry"
    assert run_mlops("register", path, "--name", "fd1", "-q", registry=registry, env=env).returncode == 0
    result = run_mlops("score-batch", "fd1", CURRENT, tmp_path / "scores.parquet", "--json", registry=registry, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["command"] == "score-batch"
    assert "written to fd 1" in result.stderr and "printed by the model" in result.stderr
