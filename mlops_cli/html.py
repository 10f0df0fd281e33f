"""The drift report as ONE self-contained HTML page: inline CSS and inline SVG, no scripts, no network."""

from __future__ import annotations

import html
import math
from typing import Any

from mlops_cli.numbers import fmt, number
from mlops_cli.report import Report

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1f2933}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .muted{color:#66788a}
.verdict{display:inline-block;padding:4px 12px;border-radius:14px;font-weight:600;color:#fff}
.drift{background:#c0392b} .nodrift{background:#27ae60}
table{border-collapse:collapse;width:100%;margin:8px 0} th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:left}
th{background:#f5f7fa;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.sev-high{color:#c0392b;font-weight:600} .sev-medium{color:#d35400;font-weight:600} .sev-low{color:#b7950b}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
.card{border:1px solid #e4e7eb;border-radius:8px;padding:10px 12px} .card h3{font-size:14px;margin:0 0 4px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;vertical-align:middle}
"""
_REF, _CUR = "#7f8c8d", "#2e86de"


def _fmt(value: Any, digits: int = 4) -> str:
    return html.escape(fmt(value, digits))


def _ci(bounds: list[float | None] | None) -> str:
    return f" [{_fmt(bounds[0])}, {_fmt(bounds[1])}]" if bounds and None not in bounds else ""


def _share(value: float) -> str:
    return f"{value * 100:.2g}%"


def _axis(low: float, high: float) -> int:
    """Decimals that tell the ends of an axis apart: two significant digits of its span (999.57 to 999.63, not
    999.6 to 999.6), none for spans of ten or more."""
    span = high - low
    return max(0, 1 - math.floor(math.log10(span))) if span > 0 else 0


def _bars(hist: dict[str, Any]) -> str:
    """Reference and current shares side by side, as an inline SVG."""
    ref, cur = hist["reference"], hist["current"]
    n = len(ref)
    if not n:
        return ""
    labels = hist.get("labels")
    # Category labels are turned 40 degrees, so that long ones do not overlap, and cut at 12 characters; the full
    # text is the tooltip. They hang to the left of their bar: the bars start after a margin that holds them.
    width, height = 340, 120
    left, pad = (60, 56) if labels else (1, 18)
    top = max(max(ref), max(cur), 1e-9)
    step = (width - left - 1) / n
    parts = [f'<svg width="{width}" height="{height + pad}" role="img">']
    for i, (a, b) in enumerate(zip(ref, cur, strict=True)):
        x = left + i * step
        name = f"{labels[i]}: " if labels else ""
        for j, (share, colour, side) in enumerate(((a, _REF, "reference"), (b, _CUR, "current"))):
            h = share / top * (height - 4)
            parts.append(
                f'<rect x="{x + j * step / 2:.1f}" y="{height - h:.1f}" width="{max(step / 2 - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{html.escape(str(name))}{side} {_share(share)}</title></rect>'
            )
    if labels:
        for i, label in enumerate(labels):
            text = str(label)
            short = text if len(text) <= 12 else text[:11] + "…"
            x, y = left + i * step + step / 2, height + 10
            parts.append(
                f'<text x="{x:.1f}" y="{y}" font-size="9" text-anchor="end" transform="rotate(-40 {x:.1f} {y})">'
                f"<title>{html.escape(text)}</title>{html.escape(short)}</text>"
            )
    else:
        edges = hist["edges"]
        decimals = _axis(edges[0], edges[-1])
        for x, value, anchor in (
            (1, edges[0], "start"),
            (width / 2, edges[len(edges) // 2], "middle"),
            (width - 1, edges[-1], "end"),
        ):
            text = f"{value:,.{decimals}f}" if 1e-3 <= abs(value) < 1e15 or value == 0 else number(value)
            parts.append(f'<text x="{x:.1f}" y="{height + 12}" font-size="10" text-anchor="{anchor}">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _categories(stats: dict[str, Any]) -> str:
    """New and vanished categories with their shares (current, reference)."""
    out = []
    for key, word in (("new_categories", "new"), ("vanished_categories", "vanished")):
        if stats.get(key):
            items = sorted(stats[key].items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{html.escape(k)} {_share(v)}" for k, v in items[:8])
            more = f" and {len(items) - 8} more" if len(items) > 8 else ""
            out.append(f"<div class=muted>{word}: {shown}{more}</div>")
    return "".join(out)


def _note(row: dict[str, Any]) -> str:
    s = row["statistics"]
    parts = [row["note"] or (row["status"] if row["status"] != "ok" else "")]
    if s.get("inf_share_reference") or s.get("inf_share_current"):
        parts.append(f"infinite values {_share(s['inf_share_reference'])} → {_share(s['inf_share_current'])} of rows")
    return html.escape("; ".join(p for p in parts if p))


def _card(name: str, row: dict[str, Any]) -> str:
    severity = row["severity"] if row["drifted"] else ""
    return (
        f"<div class=card><h3>{html.escape(name)} <span class='sev-{row['severity']}'>{severity}</span></h3>"
        f"{_bars(row['histogram'])}{_categories(row['statistics'])}</div>"
    )


def drift_page(report: Report) -> str:
    summary, rows = report.results["summary"], report.results["features"]
    drift = summary["verdict"] == "drift"
    model = report.model
    title = f"Drift report{' — ' + model['name'] + ':' + model['version'] if model else ''}"
    out = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=muted>created {report.created_at} · inputs: "
        f"{', '.join(html.escape(str(i['path'])) + ' (' + format(i['rows'] or 0, ',') + ' rows)' for i in report.inputs)}</p>",
        f'<p><span class="verdict {"drift" if drift else "nodrift"}">{"DRIFT" if drift else "NO DRIFT"}</span> '
        f"{summary['drifted']} of {summary['tested']} features drifted ({summary['drifted_share']:.0%}"
        + (
            f", {summary['weighted_drifted_share']:.0%} weighted by importance"
            if summary["weighted_drifted_share"] is not None
            else ""
        )
        + f"; verdict at ≥ {summary['drift_share']:.0%})</p>",
    ]
    pred = summary.get("prediction_drift")
    if pred:
        out.append(
            f"<p>Prediction drift ({html.escape(pred['name'])}): "
            f"<b>{'not tested' if pred['drifted'] is None else 'yes' if pred['drifted'] else 'no'}</b>, "
            f"decided by {_fmt(pred['decided_by'] or pred['status'])}"
            + (
                f", mean {_fmt(pred['mean_reference'])} → {_fmt(pred['mean_current'])}"
                if pred.get("mean_reference") is not None
                else ""
            )
            + "</p>"
        )
        if pred.get("histogram"):
            out.append(f"<div class=grid>{_card('prediction: ' + pred['name'], pred)}</div>")
    perf = summary.get("performance")
    if perf:
        out.append(
            "<h2>Performance on current data</h2><table><tr><th>metric</th><th>recorded (95% CI)</th><th>current "
            "(95% CI)</th><th>drop (95% CI)</th></tr>"
        )
        for name, m in perf["metrics"].items():
            drop = f"{_fmt(m.get('drop'))} [{_fmt(m['drop_ci'][0])}, {_fmt(m['drop_ci'][1])}]" if "drop" in m else "–"
            out.append(
                f"<tr><td>{name}</td><td class=num>{_fmt(m.get('recorded'))}{_ci(m.get('recorded_ci'))}</td><td class=num>"
                f"{_fmt(m['current'])} [{_fmt(m['current_ci'][0])}, {_fmt(m['current_ci'][1])}]</td>"
                f"<td class=num>{drop}</td></tr>"
            )
        out.append(f"</table><p class=muted>drop CI: {html.escape(perf['drop_ci_method'])}</p>")
    if report.messages:
        out.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in report.messages) + "</ul>")
    out.append(
        "<h2>Features</h2><table><tr><th>feature</th><th>kind</th><th>drift</th><th>severity</th>"
        "<th>decided by</th><th>effect size</th><th>p-value</th><th>missing Δ</th><th>importance</th>"
        "<th>note</th></tr>"
    )
    for r in rows:  # the digits of the terminal table (render.render_drift)
        s = r["statistics"]
        effect = s.get("wasserstein_norm") if r["kind"] == "numeric" else s.get("js")
        out.append(
            f"<tr><td>{html.escape(r['name'])}</td><td>{_fmt(r['kind'])}</td><td>{_fmt(r['drifted'])}</td>"
            f"<td class=sev-{r['severity']}>{r['severity']}</td><td>{_fmt(r['decided_by'])}</td>"
            f"<td class=num>{_fmt(effect, 3)}</td><td class=num>{_fmt(r['p_value'], 2)}</td>"
            f"<td class=num>{_fmt(s.get('missing_share_change'), 2)}</td><td class=num>{_fmt(r['importance'], 2)}"
            f"</td><td class=muted>{_note(r)}</td></tr>"
        )
    out.append(
        "</table><h2>Distributions</h2><p class=legend><span style='background:" + _REF + "'></span>reference"
        "<span style='background:" + _CUR + "'></span>current</p><div class=grid>"
    )
    for r in rows:
        if r.get("histogram"):
            out.append(_card(r["name"], r))
    rule = summary["rule"]
    names = {"wasserstein": "Wasserstein / std", "js": "Jensen-Shannon distance", "psi": "PSI"}
    bands = "; ".join(
        f"{names.get(k, k)} ≥ {' / '.join(number(v) for v in b)}" for k, b in rule["severity_bands"].items()
    )
    stat, thresholds, override = rule["stattest"], rule["thresholds"], rule["threshold"]
    if stat == "auto":
        w, js = (override, override) if override is not None else (thresholds["wasserstein"], thresholds["js"])
        how = (
            f"stattest auto: above {rule['large_sample']:,} non-null values per side, effect size decides "
            f"(Wasserstein / reference std ≥ {number(w)} for numbers, Jensen-Shannon distance ≥ {number(js)} for "
            f"categories, with the corrected test also significant at {number(thresholds['ks'])}); below, KS or "
            f"chi-square p-values with {rule['correction']} correction (< {number(thresholds['ks'])})."
        )
    else:
        limit = override if override is not None else thresholds[stat]
        test = stat in ("ks", "chi2")
        how = f"stattest {stat}: drift when it is {'<' if test else '≥'} {number(limit)}" + (
            f" ({rule['correction']} correction)." if test else ", with the corrected test significant."
        )
    out.append(
        f"</div><h2>How drift was decided</h2><p class=muted>{how} A missing-share change ≥ "
        f"{rule['missing_share_change']} is drift on its own, and so is a change ≥ {rule['inf_share_change']} in "
        f"the share of infinite values. Severity (low / medium / high) from the effect size: {bands}.</p>"
    )
    out.append("</body></html>\n")
    return "".join(out)
