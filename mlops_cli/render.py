"""Every table and line a person reads. The only module that imports rich's renderables.

Each `render_*` takes a Report and a Console and prints; tests render against a fixed-width Console.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from mlops_cli.numbers import fmt
from mlops_cli.report import Report

OK, BAD, WARN, SKIP = "✓", "✗", "!", "–"
STATUS_STYLE = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "dim", "error": "red"}


def stdout_console(file: TextIO | None = None) -> Console:
    """A console on `file` (stdout by default). Colour only on a terminal (rich also honours NO_COLOR); a wide
    fixed width for logs and pipes."""
    file = file or sys.stdout
    terminal = file.isatty()
    columns = os.environ.get("COLUMNS", "")
    return Console(
        file=file,
        width=None if terminal else (int(columns) if columns.isdigit() and int(columns) >= 40 else 120),
        no_color=not terminal or "NO_COLOR" in os.environ,
        highlight=False,
        soft_wrap=False,
    )


def stderr_console() -> Console:
    return Console(file=sys.stderr, stderr=True, highlight=False)


def progress(*, quiet: bool = False, total: float | None = None) -> Any:
    """A progress bar on stderr, shown only when stderr is a terminal, so logs and `--json | jq` stay clean."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )


def metric_ci(entry: dict[str, Any]) -> str:
    return f"{fmt(entry['value'])}  [{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]"


def _messages(report: Report, console: Console) -> None:
    for message in report.messages:
        console.print(f"[yellow]{WARN}[/] {message}", markup=True)


# --- registry ------------------------------------------------------------------------------------------------


def render_register(report: Report, console: Console) -> None:
    r = report.results
    verb = "registered" if r["created"] else "already registered (same artifact sha256) as"
    console.print(f"[bold]{verb} {r['ref']}[/]  {r['estimator_class']} ({r['task']})  sha256 {r['sha256'][:12]}")
    if r.get("alias"):
        console.print(f"alias {r['alias']} → {r['version']}")
    if r.get("eval_metrics"):
        _metrics_table(r["eval_metrics"], console, title="test metrics (95% bootstrap CI)")
    for name, block in (r.get("formats") or {}).items():
        if not block["stored"]:
            continue  # said in the messages, with the reason
        agreement = block["agreement"]
        labels = agreement["label_agreement"]
        console.print(
            f"{name}: {block['file']} stored; on {agreement['rows']:,} rows ({', '.join(agreement['data'])})"
            + (f" labels agree {labels:.2%}," if labels is not None else "")
            + f" largest difference {agreement['max_abs_difference']:.2g}"
        )
        if name == "skops":
            console.print(f"  trusted types (the only ones it will load): {', '.join(block['trusted_types'])}")
    _messages(report, console)


def _metrics_table(eval_metrics: dict[str, Any], console: Console, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    # Overall metrics first, then per-class ones grouped by class (JSON round-trips sort the keys alphabetically).
    for name, entry in sorted(eval_metrics.items(), key=lambda kv: ("[" in kv[0], kv[0].split("[")[-1], kv[0])):
        table.add_row(name, fmt(entry["value"]), f"[{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]")
    console.print(table)


def render_models_list(report: Report, console: Console) -> None:
    r = report.results
    if "models" in r:
        table = Table(title=f"models in {r['registry']}", title_justify="left")
        for column in ("name", "versions", "latest", "aliases", "updated"):
            table.add_column(column)
        for m in r["models"]:
            if "error" in m:
                table.add_row(m["name"], SKIP, SKIP, "", "[red]damaged (see below)[/]")
                continue
            aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m["aliases"].items()))
            table.add_row(m["name"], str(m["versions"]), m["latest"], aliases, m["updated"])
        console.print(table if r["models"] else f"no models in {r['registry']}")
        _messages(report, console)
        return
    table = Table(title=f"{r['name']} versions", title_justify="left")
    for column in ("version", "created (UTC)", "estimator", "sha256", "aliases", "description"):
        table.add_column(column)
    for v in r["versions"]:
        table.add_row(
            v["version"],
            v["created_at"],
            v["estimator_class"].rsplit(".", 1)[-1],
            v["sha256"][:12],
            ", ".join(v["aliases"]),
            v["description"] or "",
        )
    console.print(table)


def render_manifest(report: Report, console: Console) -> None:
    m = report.results["manifest"]
    aliases = ", ".join(report.results["aliases"]) or "none"
    console.print(f"[bold]{m['name']}:{m['version']}[/]  {m['estimator_class']} ({m['task']})  aliases: {aliases}")
    console.print(
        f"registered {m['created_at']} by {m['registered_by']['user']}@{m['registered_by']['host']}"
        f"  integrity: {'verified' if report.results['verified'] else 'NOT verified'}"
    )
    if m.get("description"):
        console.print(m["description"])
    info = Table(show_header=False, box=None)
    info.add_column(style="bold")
    info.add_column()
    git = (m.get("lineage") or {}).get("git")
    info.add_row(
        "artifact", f"{m['files']['model.joblib']['sha256']}  ({fmt(m['files']['model.joblib']['bytes'])} bytes)"
    )
    info.add_row("classes", fmt(m.get("classes")))
    info.add_row("target", fmt(m.get("target")))
    if m.get("training_data"):
        td = m["training_data"]
        info.add_row("training data", f"{td['path']}  {fmt(td['rows'])} rows  sha256 {td['sha256'][:12]}")
    info.add_row("git", f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}" if git else "–")
    info.add_row("libraries", "  ".join(f"{k} {v}" for k, v in m["libraries"].items()))
    contract = m["input_contract"]
    info.add_row(
        "accepts",
        f"missing values: {fmt(contract['accepts_missing'])}, unseen categories: {fmt(contract['accepts_unseen'])}",
    )
    for key in ("params", "tags", "metrics"):
        if m.get(key):
            info.add_row(key, "  ".join(f"{k}={fmt(v)}" for k, v in m[key].items()))
    console.print(info)
    if m.get("features"):
        table = Table(title="input schema", title_justify="left")
        for column in ("feature", "kind", "dtype", "range / categories", "missing"):
            table.add_column(column)
        for f in m["features"]:
            if f.get("kind") == "numeric":
                detail = f"[{fmt(f.get('min'))}, {fmt(f.get('max'))}]"
            elif f.get("kind") == "categorical":
                cats = f.get("categories") or []
                detail = f"{f.get('n_categories')} categories" + (
                    f": {', '.join(cats[:6])}{'…' if len(cats) > 6 else ''}" if cats else ""
                )
            else:
                detail = ""
            share = f.get("missing_share")
            table.add_row(
                f["name"], f.get("kind", "?"), f.get("dtype", "?"), detail, f"{share:.1%}" if share is not None else "–"
            )
        console.print(table)
    if m.get("eval_metrics"):
        _metrics_table(
            m["eval_metrics"],
            console,
            title=f"test metrics on {m['eval_data']['path']} ({fmt(m['eval_data']['rows'])} rows, 95% bootstrap CI)",
        )


def render_alias_move(report: Report, console: Console) -> None:
    r = report.results
    console.print(f"{r['name']}@{r['alias']}: {r['from'] or 'unset'} → {r['to']}")


def render_history(report: Report, console: Console) -> None:
    table = Table(title=f"{report.results['name']} history", title_justify="left")
    for column in ("time (UTC)", "event", "version / alias", "user", "reason"):
        table.add_column(column)
    for e in report.results["events"]:
        if "alias" in e and e.get("alias"):
            what = f"{e['alias']}: {e.get('from') or 'unset'} → {e.get('to')}"
        else:
            what = str(e.get("version", ""))
        table.add_row(e["time"], e["event"], what, f"{e.get('user')}@{e.get('host')}", e.get("reason") or "")
    console.print(table)


def render_verify(report: Report, console: Console) -> None:
    r = report.results
    table = Table(title=f"verify {r['registry']}", title_justify="left")
    for column in ("model", "versions", "events", "chain head", "problems", "warnings", ""):
        table.add_column(column)
    for m in r["models"]:
        head = (m["head"] or "")[:12] if m["chained"] else "unchained"
        mark = f"[red]{BAD}[/]" if m["problems"] else f"[green]{OK}[/]"
        table.add_row(
            m["name"],
            str(m["versions"]),
            str(m["events"]),
            head,
            str(len(m["problems"])),
            str(len(m["warnings"])),
            mark,
        )
    if r["models"]:
        console.print(table)
    # Paths are relative to the registry, so they start with the model's name.
    findings = [("problem", f) for m in r["models"] for f in m["problems"]]
    findings += [("warning", f) for m in r["models"] for f in m["warnings"]]
    for kind, f in findings:
        mark = f"[red]{BAD}[/]" if kind == "problem" else f"[yellow]{WARN}[/]"
        hint = f" ({f['hint']})" if f["hint"] else ""
        console.print(f"{mark} {f['path']}: {f['message']}{hint}", markup=True, highlight=False)
    _messages(report, console)
    if r["problems"]:
        console.print(f"[red]{r['problems']} problem(s) found[/]: the registry is damaged or was changed by hand")
    elif r["models"]:
        console.print(f"[green]{OK}[/] every file, manifest, alias and event verified")


# --- smoke-test and checklist ---------------------------------------------------------------------------------

_MARK = {"pass": f"[green]{OK}[/]", "fail": f"[red]{BAD}[/]", "warn": f"[yellow]{WARN}[/]", "skip": f"[dim]{SKIP}[/]"}


def _evidence(evidence: dict[str, Any]) -> str:
    parts = []
    for key, value in evidence.items():
        if isinstance(value, list):
            value = "; ".join(_value(v) for v in value) or "none"
        elif isinstance(value, dict):
            value = _value(value) or "none"
        parts.append(f"{key}={fmt(value)}")
    return "  ".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return fmt(value)


def _case_lines(evidence: dict[str, Any]) -> list[str]:
    """Edge cases, taken out of `evidence`: the failing ones first, each with its error or problems; the passing
    ones as a count. (The smoke step lists every case, the checklist item only the failing ones.)"""
    cases = evidence.pop("cases", None) or evidence.pop("failing_cases", None) or []
    evidence.pop("failing", None)
    passed = evidence.pop("passed", 0)
    lines = []
    for c in cases:
        if c.get("verdict") == "fail":
            why = c.get("error") or "; ".join(c.get("problems") or [])
            lines.append(f"{BAD} {c['case']} {c['feature']}: {c['outcome']}" + (f" ({why})" if why else ""))
    if passed:
        lines.append(f"{fmt(passed)} {'other ' if lines else ''}case{'s' if passed != 1 else ''} passed")
    not_derived = evidence.pop("not_derived", None) or []
    if not_derived:
        names = [d["feature"] for d in not_derived]
        lines.append(
            f"not derived (no type or range recorded) for {len(names)} feature(s): {', '.join(names[:8])}"
            + (", …" if len(names) > 8 else "")
        )
    return lines


def render_steps(report: Report, console: Console) -> None:
    """smoke-test steps and checklist items: one line each, evidence shown for everything that did not pass."""
    entries = report.results.get("steps") or report.results.get("items") or []
    model = report.model or {}
    runtime = f" (runtime: {model['runtime']})" if model.get("runtime") else ""
    console.print(f"[bold]{report.command} {model.get('name')}:{model.get('version')}[/]{runtime}")
    section = None
    for e in entries:
        if e.get("section") and e["section"] != section:
            section = e["section"]
            console.print(f"[bold]{section}[/]")
        label = f": {e['check']}" if e.get("check") else ""  # checklist items say what they check
        tag = "" if e.get("required", True) else " [dim](advisory)[/]"
        console.print(f"  {_MARK[e['status']]} {e['id']}{label}{tag}  [dim]{e['duration_s']:.2f}s[/]")
        if e["status"] != "pass" or e["id"] in ("latency", "baseline_comparison"):
            evidence = dict(e["evidence"])
            cases = _case_lines(evidence) if e["id"] == "edge_cases" else []
            if evidence:
                console.print(f"      {_evidence(evidence)}", markup=False)
            for line in cases:
                console.print(f"      {line}", markup=False)
    verdict = "[green]PASS[/]" if report.passed else f"[red]FAIL[/] ({', '.join(report.results['failed'])})"
    console.print(f"{verdict}")
    _messages(report, console)


# --- score-batch ----------------------------------------------------------------------------------------------


def render_score_batch(report: Report, console: Console) -> None:
    r = report.results
    source = report.inputs[0]["path"] if report.inputs else "input"
    out = r["output"]
    console.print(
        f"[bold]scored {fmt(r['rows_scored'])} of {fmt(r['rows_read'])} rows[/] of {source} → "
        f"{out['path']} ({fmt(out['rows'])} rows written)"
    )
    speed = fmt(round(r["rows_per_second"])) if r["rows_per_second"] is not None else "–"
    console.print(
        f"{r['wall_seconds']:.2f} s, {speed} rows/s, peak memory {r['peak_rss_mb']:.0f} MB, "
        f"{fmt(r['batches'])} batch(es) of up to {fmt(r['batch_size'])} rows"
    )
    if r["rejected_by_reason"]:
        table = Table(
            title=f"rows not scored (--on-invalid {r['on_invalid']}): {fmt(r['rows_rejected'])}", title_justify="left"
        )
        table.add_column("reason")
        table.add_column("rows", justify="right")
        for reason, count in sorted(r["rejected_by_reason"].items(), key=lambda item: (-item[1], item[0])):
            table.add_row(reason, fmt(count))
        console.print(table)
    table = Table(title="models", title_justify="left")
    for column in ("role", "model", "sha256", "routed", "share", "scored", "rejected", "predicted classes"):
        table.add_column(
            column, justify="left" if column in ("role", "model", "sha256", "predicted classes") else "right"
        )
    for m in r["models"]:
        shares = (m["prediction"].get("class_shares") or {}).items()
        table.add_row(
            m["role"],
            f"{m['name']}:{m['version']} ({m['runtime']})",
            m["sha256"][:12],
            fmt(m["rows_routed"]),
            f"{m['share']:.1%}" if m["share"] is not None else "–",
            fmt(m["rows_scored"]),
            fmt(m["rows_rejected"]),
            ", ".join(f"{c}: {share:.1%}" for c, share in shares) or "–",
        )
    console.print(table)
    _prediction_table(r["models"], console)
    if r["split"]:
        s = r["split"]
        console.print(
            f"split on {', '.join(s['key'])} ({s['method']}): challenger share {s['challenger_share']:.1%}"
            f" requested, {s['observed_share']:.1%} observed; rows without a key (to the champion): "
            f"{fmt(s['rows_without_key'])}"
        )
    _messages(report, console)


def _prediction_table(models: list[dict[str, Any]], console: Console) -> None:
    """Mean and quantiles of each class probability (binary: the positive class only), or of a regressor's output."""
    table = Table(title="prediction distribution", title_justify="left")
    for column in ("model", "value", "mean", "5%", "25%", "median", "75%", "95%"):
        table.add_column(column, justify="left" if column in ("model", "value") else "right")
    rows = 0
    for m in models:
        p = m["prediction"]
        if not p.get("rows"):
            continue
        if "class_shares" not in p:
            series = [("prediction", p["mean"], p["quantiles"])]
        else:
            labels = list(p.get("proba_mean") or {})
            labels = labels[-1:] if len(labels) == 2 else labels
            series = [(f"proba_{label}", p["proba_mean"][label], p["proba_quantiles"][label]) for label in labels]
        for name, mean, q in series:
            table.add_row(
                f"{m['name']}:{m['version']}",
                name,
                fmt(mean),
                *(fmt(q[k]) for k in ("0.05", "0.25", "0.5", "0.75", "0.95")),
            )
            rows += 1
    if rows:
        console.print(table)


# --- drift-report ---------------------------------------------------------------------------------------------

_SEVERITY_STYLE = {"high": "bold red", "medium": "dark_orange", "low": "yellow", "none": "dim"}
_BAND_NAMES = {"wasserstein": "W/std", "js": "JS", "psi": "PSI"}


def render_drift(report: Report, console: Console) -> None:
    summary = report.results["summary"]
    # Seven narrow columns without vertical rules: fits an 80-column terminal, so no number is ever cut short; a
    # long feature name folds onto more lines instead of pushing the numbers off the screen.
    # `drift` is the severity of a drifted feature ("no" otherwise); the statistic in `by` also tells the kind
    # (ks/wasserstein/psi: numeric; chi2/js: categorical). Notes follow the table instead of widening it.
    table = Table(
        title="drift per feature (drifted first; then by importance, severity)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("feature", overflow="fold")
    for column, justify in (
        ("drift", "left"),
        ("by", "left"),
        ("effect", "right"),
        ("p-value", "right"),
        ("missing Δ", "right"),
        ("importance", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    notes = []
    for r in report.results["features"]:
        s = r["statistics"]
        effect = s.get("wasserstein_norm") if r["kind"] == "numeric" else s.get("js")
        note = [r["note"] or (r["status"] if r["status"] != "ok" else "")]
        if s.get("inf_share_reference") or s.get("inf_share_current"):
            note.append(f"infinite values {s['inf_share_reference']:.1%} → {s['inf_share_current']:.1%} of rows")
        for key, word in (("new_categories", "new"), ("vanished_categories", "vanished")):
            if s.get(key):
                top = sorted(s[key].items(), key=lambda kv: -kv[1])[:5]  # the largest shares first
                shares = ", ".join(f"{k} {v * 100:.2g}%" for k, v in top)
                more = f" and {len(s[key]) - 5} more" if len(s[key]) > 5 else ""
                note.append(f"{word}: {shares}{more}")
        if any(note):
            notes.append(f"  {r['name']}: {'; '.join(n for n in note if n)}")
        drift = SKIP if r["drifted"] is None else f"[{_SEVERITY_STYLE[r['severity']]}]{r['severity']}[/]"
        table.add_row(
            r["name"],
            drift if r["drifted"] is not False else "[dim]no[/]",
            r["decided_by"] or "–",
            fmt(effect, 3),
            fmt(r["p_value"], 2),
            fmt(s.get("missing_share_change"), 2),
            fmt(r["importance"], 2),
        )
    console.print(table)
    for line in notes:
        console.print(line, markup=False)
    weighted = summary["weighted_drifted_share"]
    console.print(
        f"{summary['drifted']} of {summary['tested']} features drifted ({summary['drifted_share']:.0%}"
        + (f", {weighted:.0%} weighted by importance" if weighted is not None else "")
        + f"); verdict at ≥ {summary['drift_share']:.0%}: "
        + ("[bold red]DRIFT[/]" if summary["verdict"] == "drift" else "[bold green]no drift[/]")
    )
    bands = summary["rule"]["severity_bands"]
    console.print(
        "[dim]severity low/medium/high at "
        + ", ".join(f"{_BAND_NAMES.get(k, k)} {'/'.join(fmt(v) for v in b)}" for k, b in bands.items())
        + "[/]"
    )
    pred = summary.get("prediction_drift")
    if pred:
        console.print(
            f"prediction drift ({pred['name']}): {'–' if pred['drifted'] is None else 'yes' if pred['drifted'] else 'no'} "
            f"(decided by {pred['decided_by'] or pred['status']}"
            + (
                f"; mean {fmt(pred['mean_reference'])} → {fmt(pred['mean_current'])}"
                if pred.get("mean_reference") is not None
                else ""
            )
            + ")"
        )
    perf = summary.get("performance")
    if perf:
        for name, m in perf["metrics"].items():
            if "drop" in m:
                console.print(
                    f"performance {name}: recorded {fmt(m['recorded'])} → current {fmt(m['current'])}; "
                    f"drop {fmt(m['drop'])} [{fmt(m['drop_ci'][0])}, {fmt(m['drop_ci'][1])}]"
                )
    if report.results.get("html"):
        console.print(f"HTML report: {report.results['html']}")
    _messages(report, console)


# --- abtest ---------------------------------------------------------------------------------------------------


VERDICT_STYLE = {
    "treatment_better": "green",
    "non_inferior": "green",
    "challenger_better": "green",
    "treatment_worse": "red",
    "inferior": "red",
    "champion_better": "red",
}


def _verdict(verdict: str) -> str:
    text = verdict.replace("non_inferior", "non-inferior").replace("_", " ")
    return f"[{VERDICT_STYLE.get(verdict, 'yellow')}]{text}[/]"


def _pct(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:+.2%}"


def _interval(low: Any, high: Any, pct: bool = False) -> str:
    show = (lambda v: "–" if v is None or v != v else f"{v:+.1%}") if pct else (lambda v: fmt(v, 3))
    lo = "-∞" if low == float("-inf") else show(low)
    hi = "+∞" if high == float("inf") else show(high)
    return f"[{lo}, {hi}]"


def render_abtest(report: Report, console: Console) -> None:
    if report.results["mode"] == "models":
        _render_model_comparison(report, console)
    else:
        _render_experiment(report, console)
    _messages(report, console)


def _render_experiment(report: Report, console: Console) -> None:
    r = report.results
    winner = f"  winner: [bold]{r['winner']}[/]" if r["winner"] else ""
    console.print(
        f"[bold]{r['primary_metric']}[/] (primary): {_verdict(r['verdict'])}{winner}  "
        f"control {r['control']}, alpha {fmt(r['alpha'])} {r['alternative']}, correction {r['correction']}"
    )
    srm = r["srm"]
    counts = "  ".join(f"{v} {fmt(n)} ({srm['expected_shares'][v]:.0%} expected)" for v, n in srm["counts"].items())
    status = "[red]MISMATCH: experiment invalid[/]" if srm["mismatch"] else "[green]ok[/]"
    console.print(f"sample ratio: {counts}  chi² {fmt(srm['statistic'])}, p {fmt(srm['p_value'])}  {status}")
    table = Table(
        title="treatment vs control (* primary; z: two-proportion z-test, t: Welch's t-test)", title_justify="left"
    )
    for column in ("metric", "variant", "control (n)", "treatment (n)", "p", "p adjusted", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "variant", "verdict") else "right")
    effects = Table(
        title=f"effect sizes ({fmt(1 - r['alpha'])} CI{'' if r['alternative'] == 'two-sided' else ', one-sided'})",
        title_justify="left",
    )
    for column in ("metric", "variant", "difference", "CI", "relative lift", "CI "):
        effects.add_column(column, justify="left" if column in ("metric", "variant") else "right")
    for c in r["metrics"]:
        name = f"{c['metric']}{'*' if c['primary'] else ''} ({'z' if c['test'] == 'two_proportion_z' else 't'})"
        table.add_row(
            name,
            c["variant"],
            f"{fmt(c['control']['mean'])} ({fmt(c['control']['n'])})",
            f"{fmt(c['treatment']['mean'])} ({fmt(c['treatment']['n'])})",
            fmt(c["p_value"], 3),
            fmt(c["p_value_adjusted"], 3),
            _verdict(c["verdict"]),
        )
        effects.add_row(
            c["metric"],
            c["variant"],
            fmt(c["difference"]),
            _interval(c["ci_low"], c["ci_high"]),
            _pct(c["relative_lift"]),
            _interval(c["relative_ci_low"], c["relative_ci_high"], pct=True),
        )
    console.print(table)
    console.print(effects)
    extra = [c for c in r["metrics"] if c["mann_whitney"] or c["non_inferiority"]]
    if extra:
        side = Table(title="non-inferiority and Mann-Whitney", title_justify="left")
        for column in ("metric", "variant", "margin", "lower bound", "p (NI) adj", "U", "P(T > C)", "p (MW)"):
            side.add_column(column, justify="left" if column in ("metric", "variant") else "right")
        for c in extra:
            ni, mw = c["non_inferiority"] or {}, c["mann_whitney"] or {}
            side.add_row(
                c["metric"],
                c["variant"],
                fmt(ni.get("margin")),
                fmt(ni.get("lower_bound")),
                fmt(ni.get("p_value_adjusted")),
                fmt(mw.get("statistic")),
                fmt(mw.get("prob_superiority")),
                fmt(mw.get("p_value")),
            )
        console.print(side)
    power = Table(title=f"power (target {fmt(r['target_power'])})", title_justify="left")
    for column in ("metric", "variant", "achieved", "MDE at this n", "MDE relative", "MDE target", "n per group"):
        power.add_column(column, justify="left" if column in ("metric", "variant") else "right")
    for c in r["metrics"]:
        p = c["power"]
        power.add_row(
            c["metric"],
            c["variant"],
            fmt(p["achieved"]),
            fmt(p["mde"]),
            "–" if p["mde_relative"] is None or p["mde_relative"] != p["mde_relative"] else f"{p['mde_relative']:.2%}",
            fmt(p["mde_target"]),
            fmt(p["n_per_group_for_mde"]),
        )
    console.print(power)
    for c in r["metrics"]:
        if c["reason"]:
            console.print(f"[yellow]{WARN}[/] {c['metric']} / {c['variant']}: {c['reason']}")


def _render_model_comparison(report: Report, console: Console) -> None:
    r = report.results
    champion, challenger = r["champion"], r["challenger"]
    direction = "higher" if r["higher_is_better"] else "lower"
    console.print(
        f"[bold]{challenger['ref']}[/] vs [bold]{champion['ref']}[/] on {fmt(r['n'])} rows: "
        f"{_verdict(r['verdict'])}  ({r['metric']}, {direction} is better, test: {r['test']})"
    )
    console.print(
        f"{r['metric']}: {fmt(champion['value'])} → {fmt(challenger['value'])}  difference "
        f"{fmt(r['difference'])} {_interval(r['ci_low'], r['ci_high'])}  p {fmt(r['p_value'])}  "
        f"(needs ≥ {fmt(r['min_improvement'])} at alpha {fmt(r['alpha'])})"
    )
    tests = Table(title="paired tests", title_justify="left")
    for column in ("test", "on", "statistic", "p", "detail"):
        tests.add_column(column, justify="right" if column in ("statistic", "p") else "left")
    if r["mcnemar"]:
        m = r["mcnemar"]
        tests.add_row(
            "McNemar",
            "correct / wrong",
            fmt(m["statistic"]),
            fmt(m["p_value"]),
            f"only champion right {fmt(m['b'])}, only challenger right {fmt(m['c'])}; {m['method']}",
        )
    if r["delong"]:
        d = r["delong"]
        tests.add_row(
            "DeLong",
            "ROC AUC",
            fmt(d["statistic"]),
            fmt(d["p_value"]),
            f"difference {fmt(d['difference'])} {_interval(d['ci_low'], d['ci_high'])}",
        )
    b = r["bootstrap"]
    tests.add_row(
        "paired bootstrap",
        r["metric"],
        "–",
        fmt(b["p_value"]),
        f"difference {fmt(b['difference'])} {_interval(b['ci_low'], b['ci_high'])}, {fmt(b['n_boot'])} resamples",
    )
    if r["paired_t"]:
        t = r["paired_t"]
        tests.add_row(
            "paired t",
            t["loss"].replace("_", " "),
            fmt(t["statistic"]),
            fmt(t["p_value"]),
            f"mean loss difference {fmt(t['mean'])} {_interval(t['ci_low'], t['ci_high'])}",
        )
    if r["wilcoxon"]:
        w = r["wilcoxon"]
        tests.add_row(
            "Wilcoxon signed-rank",
            w["loss"].replace("_", " "),
            fmt(w["statistic"]),
            fmt(w["p_value"]),
            f"{fmt(w['n_nonzero'])} non-zero differences",
        )
    console.print(tests)
    table = Table(title="metrics", title_justify="left")
    table.add_column("metric")
    table.add_column(f"champion {champion['ref']}", justify="right")
    table.add_column(f"challenger {challenger['ref']}", justify="right")
    for name, value in champion["metrics"].items():
        table.add_row(name, fmt(value), fmt(challenger["metrics"].get(name)))
    console.print(table)


# --- retrain --------------------------------------------------------------------------------------------------


_DECISIONS = {
    "no_trigger": ("green", "no trigger fired; the champion stays"),
    "check_only": ("yellow", "triggers fired (--check-only: nothing trained)"),
    "registered": ("green", "the challenger won and was registered (--no-promote)"),
    "promoted": ("green", "the challenger won and was promoted"),
    "rejected": ("red", "the challenger did not win; the champion stays"),
    "rejected_by_guardrails": ("red", "the challenger won on the metric but broke a guardrail; the champion stays"),
    "rejected_by_gates": ("red", "the challenger won but failed smoke-test/checklist; the champion stays"),
    "rolled_back": ("red", "promoted, then a check failed: rolled back"),
}


def render_retrain(report: Report, console: Console) -> None:
    job = report.results["job"]
    table = Table(title=f"retrain {job['name']} (job {job['id']})", title_justify="left")
    for column in ("trigger", "fired", "evidence"):
        table.add_column(column)
    for name, result in job["triggers"].items():
        if not result["evaluated"]:
            table.add_row(name, SKIP, "not evaluated")
            continue
        evidence = {k: v for k, v in result.items() if k not in ("evaluated", "fired")}
        table.add_row(
            name, f"[red]{OK}[/]" if result["fired"] else "–", "  ".join(f"{k}={fmt(v)}" for k, v in evidence.items())
        )
    console.print(table)
    if job.get("comparison"):
        c = job["comparison"]
        console.print(
            f"champion {job['champion']['version']} vs challenger {job['challenger']['version']} on "
            f"{fmt(job['challenger']['split']['holdout_rows'])} holdout rows: {c['metric']} difference "
            f"{fmt(c['difference'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}], p={fmt(c['p_value'])}"
            f" → {c['verdict']}"
        )
    if job.get("guardrails"):
        for check in job["guardrails"]["checks"]:
            mark = f"[green]{OK}[/]" if check["passed"] else f"[red]{BAD}[/]"
            limit = (
                f"drop {fmt(check['drop'], 2)}, allowed {fmt(check['limit'], 2)}"
                if "drop" in check
                else f"allowed {fmt(check['limit_ms'], 3)} ms"
            )
            console.print(
                f"  {mark} guardrail {check['id']}: champion {fmt(check['champion'])}, "
                f"challenger {fmt(check['challenger'])} ({limit})"
            )
    gates = job.get("gates") or {}
    for gate in ("smoke_test", "checklist"):
        if gate in gates:
            console.print(f"  {OK if gates[gate] == 'pass' else BAD} {gate}: {gates[gate]}")
    if gates.get("failed"):
        console.print(f"  failed: {', '.join(gates['failed'])}")
    style, text = _DECISIONS.get(job["decision"], ("red", job["status"]))
    console.print(f"[bold {style}]{text}[/]" + (f"  ({job['error']})" if job.get("error") else ""))
    _messages(report, console)


def render_retrain_history(report: Report, console: Console) -> None:
    table = Table(title=f"{report.results['name']} retrain jobs", title_justify="left")
    for column in ("job", "started (UTC)", "status", "fired", "champion", "challenger", "decision / error"):
        table.add_column(column)
    for job in report.results["jobs"]:
        style = "red" if job["status"] in ("failed", "killed", "rejected", "rolled_back") else ""
        table.add_row(
            job["id"],
            job["started_at"],
            f"[{style}]{job['status']}[/]" if style else job["status"],
            ", ".join(job["fired"]) or "–",
            (job.get("champion") or {}).get("version", "–"),
            (job.get("challenger") or {}).get("version", "–"),
            job.get("error") or job.get("decision") or "",
        )
    console.print(table if report.results["jobs"] else f"no retrain jobs for {report.results['name']}")


def render_features(report: Report, console: Console) -> None:
    r = report.results
    views = r["views"] if "views" in r else [r["view"]]
    table = Table(title=f"feature views in {r['store']}", title_justify="left")
    for column in ("view", "version", "entity", "features", "rows", "TTL (s)", "loaded (UTC)", "source sha256"):
        table.add_column(column)
    for v in views:
        table.add_row(
            v["name"],
            str(v["version"]),
            v["entity"],
            str(len(v["features"])),
            f"{v['rows']:,}",
            str(v["ttl_s"]) if v["ttl_s"] is not None else "none",
            v["loaded_at"],
            str(v["source"].get("sha256", ""))[:12],
        )
    console.print(table if views else f"no feature views in {r['store']}")
    if "keys_dropped" in r:
        console.print(
            f"version {r['view']['version']} is live (previous: {r['previous_version'] or 'none'}); "
            f"{r['keys_dropped']:,} keys of the previous version dropped; {_rate(r.get('rows_per_second'))}"
        )
    _messages(report, console)


def _rate(value: Any) -> str:
    return f"{value:,.0f} rows/s" if value else ""


# --- monitor -------------------------------------------------------------------------------------------------

_ALERT_STYLE = {"critical": "bold red", "warning": "dark_orange", "info": "cyan"}


def render_monitor(report: Report, console: Console) -> None:
    r, model = report.results, report.model or {}
    w, s = r["window"], r["service"]
    console.print(
        f"[bold]monitor {model.get('name')}:{model.get('version')}[/] · {w['since']} → {w['until']} · "
        f"{fmt(w['rows'])} rows from {w['path']}"
    )
    volume = f"rows {fmt(s['rows'])}" + (f", requests {fmt(s['requests'])}" if s["requests"] is not None else "")
    lat = s["latency_seconds"]
    latency = "latency " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in lat.items()) if lat else "latency not logged"
    console.print(f"{volume} · {latency}")
    if s.get("invalid_share") is not None:
        reasons = sorted(s["invalid_by_reason"].items(), key=lambda kv: -kv[1])[:3]
        console.print(
            f"invalid rows {fmt(s['invalid_rows'])} ({s['invalid_share']:.2%})"
            + (": " + ", ".join(f"{k} ({fmt(v)})" for k, v in reasons) if reasons else "")
        )
    for key, word in (("route_shares", "routes"), ("version_shares", "versions")):
        if s.get(key):
            console.print(f"{word}: " + ", ".join(f"{k} {v:.1%}" for k, v in s[key].items()))
    console.print(f"prediction-log rows dropped by the server: {fmt(w['dropped_log_rows'])}")
    if r["labels"]:
        lb = r["labels"]
        console.print(f"labels: {fmt(lb['matched_rows'])} rows matched on {lb['on']} ({fmt(lb['labels'])} labels)")
    table = Table(title="alerts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("state", "severity", "rule", "finding"):
        table.add_column(column, overflow="fold", no_wrap=column != "finding")
    for alert in sorted(r["alerts"], key=lambda a: (not a["firing"], a["name"])):
        state = f"[{_ALERT_STYLE[alert['severity']]}]FIRING[/]" if alert["firing"] else "[green]ok[/]"
        table.add_row(state, alert["severity"], alert["name"], alert["summary"])
    console.print(table)
    if r["drift"]:
        render_drift(Report("drift-report", results=r["drift"]), console)
    _messages(report, console)
