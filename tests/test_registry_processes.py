"""Promises about processes, tested with real processes: concurrent registers and kill -9 mid-register."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, register_args, run_mlops

from mlops_cli import io
from mlops_cli.registry import Registry

WORKER = textwrap.dedent("""
    import sys, tempfile, joblib
    from pathlib import Path
    from sklearn.dummy import DummyRegressor
    from mlops_cli.register import RegisterOptions, register
    from mlops_cli.registry import Registry

    registry, worker, count = Registry(Path(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
    tmp = Path(tempfile.mkdtemp())
    for i in range(count):
        model = DummyRegressor(strategy="constant", constant=worker * 1000 + i).fit([[0.0]], [0.0])
        path = tmp / f"m{i}.joblib"
        joblib.dump(model, path)  # distinct bytes per registration
        version, created = register(registry, path, "shared", RegisterOptions(reason=f"worker {worker}"))
        assert created
        print(version.version, flush=True)
""")


@pytest.mark.slow
def test_eight_processes_registering_25_versions_each(tmp_path):
    registry = tmp_path / "registry"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(registry), str(w), "25"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(8)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    handed_out = [v for out, _ in outputs for v in out.split()]
    assert len(handed_out) == 200 and len(set(handed_out)) == 200  # no number handed out twice
    versions = Registry(registry).versions("shared")
    assert sorted(int(v.version) for v in versions) == list(range(1, 201))
    for version in versions:
        Registry(registry).verify(version)
    events = Registry(registry).events("shared")
    assert sorted(int(e["version"]) for e in events if e["event"] == "registered") == list(range(1, 201))
    # Appends from eight processes still form one unbroken chain, and every manifest matches its event.
    result = run_mlops("verify", "shared", "--json", registry=registry)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)["results"]["models"][0]
    assert (report["problems"], report["warnings"], report["chained"], report["events"]) == ([], [], True, 200)


def _assert_registry_consistent(registry_dir):
    """No visible version without a complete manifest whose hashes verify."""
    registry = Registry(registry_dir)
    versions_dir = registry_dir / "flights" / "versions"
    if not versions_dir.exists():
        return 0
    for path in versions_dir.iterdir():
        manifest = json.loads((path / "manifest.json").read_text())  # exists and parses, or this fails
        registry.verify(registry.resolve(f"flights:{path.name}"))
        assert manifest["version"] == path.name
    return len(list(versions_dir.iterdir()))


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_no_half_written_version(tmp_path, model_file):
    registry_dir = tmp_path / "registry"
    args = [*register_args(model_file, "--allow-duplicate", "-q")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "mlops_cli", "--registry", str(registry_dir)] + [str(a) for a in args]
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, timeout=300)
    duration = time.perf_counter() - start
    completed = 1
    # Kill at moments spread over the whole run: import, reading, profiling, writing, publishing.
    for fraction in (0.15, 0.35, 0.55, 0.7, 0.8, 0.88, 0.94, 0.98):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        completed += proc.returncode == 0
        assert _assert_registry_consistent(registry_dir) >= completed
    # The lock died with its holders: the next register works, and gets the next number.
    result = run_mlops(*args[:-1], "--json", registry=registry_dir)
    assert result.returncode == 0, result.stderr
    count = _assert_registry_consistent(registry_dir)
    assert json.loads(result.stdout)["results"]["version"] == str(count)


def test_torn_event_line_is_skipped(tmp_path, model_file):
    registry = tmp_path / "registry"
    assert run_mlops("register", model_file, "--name", "m", "-q", registry=registry).returncode == 0
    with (registry / "m" / "events.jsonl").open("a") as fh:
        fh.write('{"event": "alias_mo')  # a crash mid-append
    result = run_mlops("models", "history", "m", "--json", registry=registry)
    assert result.returncode == 0 and len(json.loads(result.stdout)["results"]["events"]) == 1


def test_lock_timeout_is_exit_4(tmp_path, model_file):
    import fcntl

    from mlops_cli.errors import LockTimeout

    registry = Registry(tmp_path / "registry")
    (tmp_path / "registry" / "m").mkdir(parents=True)
    fd = os.open(tmp_path / "registry" / "m" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # flock locks are per open file: a second open in this process conflicts
    try:
        with pytest.raises(LockTimeout) as caught, registry.lock("m", timeout=0.2):
            pass
        assert caught.value.exit_code == 4
    finally:
        os.close(fd)


def test_staged_folders_are_never_listed(tmp_path, model_file):
    registry = Registry(tmp_path / "registry")
    run_mlops("register", model_file, "--name", "m", "-q", registry=tmp_path / "registry")
    staging = registry.staging_dir("m")
    (staging / "model.joblib").write_bytes(b"half")
    assert [v.version for v in registry.versions("m")] == ["1"]
    assert io.sha256_file(staging / "model.joblib")  # still there: only stale folders are cleaned


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_mid_register_cleans_up_and_exits_128_plus_signal(tmp_path, model_file, signum, code):
    registry_dir = tmp_path / "registry"
    argv = [sys.executable, "-m", "mlops_cli", "--registry", str(registry_dir)]
    argv += [str(a) for a in register_args(model_file, "-q")]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    staging = registry_dir / "flights" / ".staging"
    deadline = time.monotonic() + 120
    while not (staging.exists() and any(staging.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until the register is writing its staged version
    assert proc.poll() is None, "register finished before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.count("\n") == 1 and err.startswith("error: interrupted by")
    assert not any(staging.iterdir())  # the half-staged version is gone
    assert _assert_registry_consistent(registry_dir) == 0
