"""The manifest and the event log are protected too: manifest seals, the hash chain, and `mlops verify`."""

import io as stdio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from mlops_cli import eventlog, io, render
from mlops_cli.errors import IntegrityError
from mlops_cli.registry import Registry
from mlops_cli.report import Report
from mlops_cli.runtime import LoadedModel


@pytest.fixture
def two_versions(cli, model_file, other_model_file, registry_dir):
    """m:1 and m:2, production moved 1 -> 2, and a second model `ok` that nothing here damages."""
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    cli.json("models", "promote", "m:1", "production")
    cli.json("models", "promote", "m:2", "production")
    cli.json("register", model_file, "--name", "ok")
    return registry_dir / "m"


def _lines(model_dir):
    return (model_dir / "events.jsonl").read_bytes().splitlines()


def _write_lines(model_dir, lines):
    (model_dir / "events.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def _problems(report, name="m"):
    (model,) = [m for m in report["results"]["models"] if m["name"] == name]
    return model["problems"]


def _warnings(report, name="m"):
    (model,) = [m for m in report["results"]["models"] if m["name"] == name]
    return model["warnings"]


def test_a_clean_registry_verifies_with_exit_0(cli, two_versions, tmp_path):
    report = cli.json("verify")
    assert (report["status"], report["exit_code"], report["command"]) == ("pass", 0, "verify")
    assert report["results"]["problems"] == 0 and report["results"]["warnings"] == 0
    by_name = {m["name"]: m for m in report["results"]["models"]}
    assert set(by_name) == {"m", "ok"}
    assert (by_name["m"]["versions"], by_name["m"]["events"], by_name["m"]["chained"]) == (2, 4, True)
    lines = _lines(two_versions)
    assert by_name["m"]["head"] == eventlog.line_hash(lines[-1])  # a hash to keep elsewhere, to detect a rewrite
    assert cli.json("verify", "m")["results"]["models"][0]["name"] == "m"
    assert cli("verify", "-q").stdout == ""
    cli("verify", "-o", tmp_path / "verify.json")
    assert json.loads((tmp_path / "verify.json").read_text())["status"] == "pass"
    result = cli("verify")
    assert result.exit_code == 0 and "every file, manifest, alias and event verified" in result.stdout


def test_events_are_chained_and_registrations_seal_their_manifest(cli, two_versions):
    lines = _lines(two_versions)
    events = [json.loads(line) for line in lines]
    assert events[0]["prev"] is None
    assert [e["prev"] for e in events[1:]] == [eventlog.line_hash(line) for line in lines[:-1]]
    for event in (e for e in events if e["event"] == "registered"):
        manifest = two_versions / "versions" / event["version"] / "manifest.json"
        assert event["manifest_sha256"] == io.sha256_file(manifest)
    history = cli.json("models", "history", "m")["results"]["events"]
    assert history[0]["manifest_sha256"] == events[0]["manifest_sha256"]


def test_unknown_model_is_exit_4(cli, two_versions):
    result = cli("verify", "nosuch")
    assert result.exit_code == 4 and "no model named 'nosuch'" in result.stderr


def test_a_tampered_manifest_is_refused_on_load_and_reported(cli, two_versions, registry_dir):
    path = two_versions / "versions" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["input_contract"]["accepts_missing"] = not manifest["input_contract"]["accepts_missing"]
    path.write_text(json.dumps(manifest))
    result = cli("models", "show", "m:1")
    assert result.exit_code == 4 and result.stderr.count("\n") == 1
    assert f"{path} was altered after registration" in result.stderr and "restore it from a backup" in result.stderr
    registry = Registry(registry_dir)
    LoadedModel.load(registry, "m@production")  # m:2, untouched, still loads...
    with pytest.raises(IntegrityError, match="manifest.json was altered"):
        LoadedModel.load(registry, "m:1")
    with pytest.raises(IntegrityError):
        registry.versions("m")  # ...but no listing of m trusts the altered one
    assert cli("models", "promote", "m:1", "staging").exit_code == 4
    report = cli.json("verify", expect=4)
    assert (report["status"], report["exit_code"]) == ("fail", 4)
    (problem,) = _problems(report)
    assert (problem["check"], problem["path"]) == ("manifest", "m/versions/1/manifest.json")
    assert _problems(report, "ok") == []
    listed = cli.json("models", "list")  # one damaged model does not hide the others
    by_name = {m["name"]: m for m in listed["results"]["models"]}
    assert by_name["ok"]["versions"] == 1 and "was altered" in by_name["m"]["error"]


def test_a_manifest_with_the_artifact_of_another_version_is_refused(cli, two_versions):
    """Both files swapped consistently (manifest and artifact of version 2 copied into version 1) are caught."""
    for name in ("manifest.json", "model.joblib"):
        (two_versions / "versions" / "1" / name).write_bytes((two_versions / "versions" / "2" / name).read_bytes())
    assert cli("models", "show", "m:1").exit_code == 4
    assert {p["path"] for p in _problems(cli.json("verify", expect=4))} == {"m/versions/1/manifest.json"}


def test_an_edited_event_breaks_the_chain(cli, two_versions, registry_dir):
    lines = _lines(two_versions)
    event = json.loads(lines[1])
    event["reason"] = "approved by the board"
    lines[1] = json.dumps(event, sort_keys=True).encode()
    _write_lines(two_versions, lines)
    result = cli("models", "show", "m:2")
    assert result.exit_code == 4
    assert (
        "events.jsonl was altered: line 3 does not chain to line 2" in result.stderr
        and "mlops verify m" in result.stderr
    )
    with pytest.raises(IntegrityError, match="events.jsonl"):
        LoadedModel.load(Registry(registry_dir), "m@production")
    (problem,) = _problems(cli.json("verify", expect=4))
    assert (problem["check"], problem["path"]) == ("chain", "m/events.jsonl")
    assert "line 3 does not chain to line 2" in problem["message"]
    assert cli.json("models", "list")["results"]["models"][1]["versions"] == 1  # `ok` still listed


@pytest.mark.parametrize("index, message", [(1, "line 2 does not chain to line 1"), (0, "line 1 does not start")])
def test_a_deleted_event_line_breaks_the_chain(cli, two_versions, index, message):
    lines = _lines(two_versions)
    del lines[index]
    _write_lines(two_versions, lines)
    assert cli("models", "show", "m:2").exit_code == 4
    problems = _problems(cli.json("verify", expect=4))
    assert any(message in p["message"] for p in problems)
    if index == 0:  # version 1's registration went with it
        assert any("has no `registered` event" in p["message"] for p in problems)


def test_an_inserted_or_unchained_event_is_an_error(cli, two_versions):
    lines = _lines(two_versions)
    forged = {"event": "alias_moved", "alias": "production", "from": "2", "to": "1", "time": "2026-01-01T00:00:00Z"}
    _write_lines(two_versions, [*lines, json.dumps(forged).encode()])
    problems = _problems(cli.json("verify", expect=4))
    assert any("line 5 is an event without `prev`" in p["message"] for p in problems)


def test_a_tampered_artifact_is_reported_with_everything_else(cli, two_versions):
    with (two_versions / "versions" / "2" / "model.joblib").open("ab") as fh:
        fh.write(b"\0")
    (two_versions / "versions" / "1" / "profile.json").write_text("{}")  # not in m:1's manifest: never loaded
    report = cli.json("verify", expect=4)
    (problem,) = _problems(report)
    assert (problem["check"], problem["path"]) == ("file", "m/versions/2/model.joblib")
    assert "altered after registration" in problem["message"]
    (warning,) = _warnings(report)
    assert warning["path"] == "m/versions/1" and "profile.json" in warning["message"]
    (two_versions / "versions" / "2" / "model.joblib").unlink()
    (problem,) = _problems(cli.json("verify", expect=4))
    assert problem["message"] == "is missing"


def test_every_problem_is_listed_not_just_the_first(cli, two_versions):
    with (two_versions / "versions" / "1" / "model.joblib").open("ab") as fh:
        fh.write(b"\0")
    (two_versions / "versions" / "2" / "manifest.json").write_text("{}")
    (two_versions / "versions" / "3").mkdir()
    lines = _lines(two_versions)
    lines[0] = lines[0].replace(b'"reason": null', b'"reason": "x"')
    _write_lines(two_versions, lines)
    report = cli.json("verify", expect=4)
    assert {(p["check"], p["path"]) for p in _problems(report)} == {
        ("file", "m/versions/1/model.joblib"),
        ("manifest", "m/versions/2/manifest.json"),
        ("manifest", "m/versions/3"),
        ("chain", "m/events.jsonl"),
    }
    assert report["results"]["problems"] == 4
    buffer = stdio.StringIO()
    render.render_verify(Report("verify", results=report["results"]), Console(file=buffer, width=100))
    text = buffer.getvalue()
    assert "m/versions/1/model.joblib" in text and "4 problem(s) found" in text and "✗" in text


def test_an_alias_pointing_at_a_missing_version(cli, two_versions):
    (two_versions / "aliases.json").write_text('{"production": "7"}')
    messages = [p["message"] for p in _problems(cli.json("verify", expect=4))]
    assert "production points at version 7, which does not exist" in messages
    assert any("points production at version 7, but the event log last moved it to version 2" in m for m in messages)


def test_aliases_must_agree_with_the_log_and_promote_records_a_lost_move(cli, two_versions):
    (two_versions / "aliases.json").write_text('{"production": "1"}')  # moved, but its event was lost (or a hand edit)
    (problem,) = _problems(cli.json("verify", expect=4))
    assert problem["check"] == "alias" and "mlops models promote m:1 production" in problem["hint"]
    moved = cli.json("models", "promote", "m:1", "production", "--reason", "record the lost move")["results"]
    assert (moved["from"], moved["to"]) == ("1", "1")
    assert cli.json("verify")["status"] == "pass"
    events = cli.json("models", "history", "m")["results"]["events"]
    assert events[-1]["reason"] == "record the lost move"
    cli.json("models", "promote", "m:1", "production")  # now the log agrees: a retried step logs nothing again
    assert len(cli.json("models", "history", "m")["results"]["events"]) == len(events)
    (two_versions / "aliases.json").write_text("{}")
    (problem,) = _problems(cli.json("verify", expect=4))
    assert "has no production, but the event log last moved it to version 1" in problem["message"]


def _as_legacy(model_dir):
    """The log an mlops before the chain wrote: no `prev`, no manifest seals."""
    legacy = []
    for line in _lines(model_dir):
        event = json.loads(line)
        del event["prev"]
        event.pop("manifest_sha256", None)
        legacy.append(json.dumps(event, sort_keys=True).encode())
    _write_lines(model_dir, legacy)
    return legacy


def test_a_legacy_unchained_log_is_accepted_with_warnings(cli, two_versions, registry_dir, other_model_file):
    legacy = _as_legacy(two_versions)
    LoadedModel.load(Registry(registry_dir), "m:1")
    report = cli.json("verify")
    assert report["status"] == "pass" and not _problems(report)
    warnings = " ".join(w["message"] for w in _warnings(report))
    assert "its 4 events predate the hash chain" in warnings and "version(s) 1, 2 predate manifest seals" in warnings
    # The next event starts the chain, from the last legacy line; the legacy prefix stays accepted.
    cli.json("models", "promote", "m:1", "production")
    lines = _lines(two_versions)
    assert lines[:4] == legacy and json.loads(lines[4])["prev"] == eventlog.line_hash(legacy[-1])
    cli.json("register", other_model_file, "--name", "m", "--allow-duplicate")
    report = cli.json("verify")
    assert report["status"] == "pass" and report["results"]["models"][0]["chained"]
    warnings = " ".join(w["message"] for w in _warnings(report))
    assert "its first 4 events predate the hash chain" in warnings and "version(s) 1, 2 predate" in warnings
    # ...and a legacy version whose manifest names another artifact than its event recorded is still caught.
    path = two_versions / "versions" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["model.joblib"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="model.joblib sha256 differs from its `registered` event"):
        Registry(registry_dir).resolve("m:1")


def test_a_legacy_registry_without_events_still_loads(cli, two_versions, registry_dir):
    (two_versions / "events.jsonl").unlink()
    (two_versions / "aliases.json").unlink()
    LoadedModel.load(Registry(registry_dir), "m:2")
    assert cli.json("verify")["status"] == "pass"


def test_a_torn_last_line_is_tolerated_and_chained_over(cli, two_versions, registry_dir):
    with (two_versions / "events.jsonl").open("ab") as fh:
        fh.write(b'{"event": "alias_mo')  # a crash mid-append
    LoadedModel.load(Registry(registry_dir), "m@production")
    report = cli.json("verify")
    assert report["status"] == "pass" and "the last line is no event" in _warnings(report)[0]["message"]
    cli.json("models", "promote", "m:1", "production")
    lines = _lines(two_versions)
    assert lines[-2] == b'{"event": "alias_mo' and json.loads(lines[-1])["prev"] == eventlog.line_hash(lines[-2])
    report = cli.json("verify")
    assert report["status"] == "pass" and "line 5 is no event" in _warnings(report)[0]["message"]
    # The torn line is covered by the chain like any other: removing it now is noticed.
    _write_lines(two_versions, lines[:-2] + lines[-1:])
    assert cli("verify").exit_code == 4


def test_a_register_that_died_between_logging_and_publishing(cli, two_versions, registry_dir, model_file):
    registry = Registry(registry_dir)
    with registry.lock("m") as model_dir:  # what such a crash leaves: the event, no folder
        registry._append_event(model_dir, {"event": "registered", "version": "3", "sha256": "0" * 64})
    report = cli.json("verify")
    assert (
        report["status"] == "pass"
        and "version 3 is registered in the log but never appeared" in (_warnings(report)[0]["message"])
    )
    # Its number is not handed out again.
    assert cli.json("register", model_file, "--name", "m", "--allow-duplicate")["results"]["version"] == "4"
    assert cli.json("verify")["status"] == "pass"


@given(
    st.lists(
        st.one_of(
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            st.binary(max_size=20).filter(lambda b: b"\n" not in b),
        ),
        max_size=6,
    ),
    st.sampled_from([1, 3, 1 << 16]),
)
def test_an_append_always_chains_to_the_last_line(tmp_path_factory, existing, chunk):
    """Whatever the file holds (events, torn or blank lines, no trailing newline), the next event chains to it."""
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    lines = [json.dumps(x).encode() if isinstance(x, dict) else x for x in existing]
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    original, eventlog.TAIL_CHUNK = eventlog.TAIL_CHUNK, chunk
    try:
        eventlog.append(path, {"event": "x"})
        eventlog.append(path, {"event": "y"})
    finally:
        eventlog.TAIL_CHUNK = original
    data = path.read_bytes()
    assert data.startswith(before) and data.endswith(b"\n")
    log = eventlog.parse(data)
    assert [e["event"] for e in log.events[-2:]] == ["x", "y"]
    *_, x, y = data.split(b"\n")[:-1]
    last_before = (before[:-1] if before.endswith(b"\n") else before).split(b"\n")[-1]
    assert json.loads(x)["prev"] == (eventlog.line_hash(last_before) if before else None)
    assert json.loads(y)["prev"] == eventlog.line_hash(x)
    count = len(data.split(b"\n")) - 1
    assert not [p for p in log.problems if p.startswith((f"line {count - 1} ", f"line {count} "))]


def test_a_read_only_copy_verifies_without_the_lock(cli, two_versions, monkeypatch):
    def no_lock(self, name, *args, **kwargs):
        raise PermissionError(30, "Read-only file system")  # a backup mounted read-only: no .lock can be opened

    monkeypatch.setattr(Registry, "lock", no_lock)
    assert cli.json("verify")["status"] == "pass"
