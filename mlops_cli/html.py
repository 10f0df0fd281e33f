"""The drift report as ONE self-contained HTML page: inline CSS and inline SVG, no scripts, no network."""

from __future__ import annotations

import html
from typing import Any

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


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return html.escape(str(value))


def _bars(hist: dict[str, Any]) -> str:
    """Reference and current shares side by side, as an inline SVG."""
    ref, cur = hist["reference"], hist["current"]
    n = len(ref)
    if not n:
        return ""
    width, height, pad = 340, 120, 18
    top = max(max(ref), max(cur), 1e-9)
    step = (width - 2) / n
    parts = [f'<svg width="{width}" height="{height + pad}" role="img">']
    for i, (a, b) in enumerate(zip(ref, cur, strict=True)):
        x = 1 + i * step
        for j, (share, colour) in enumerate(((a, _REF), (b, _CUR))):
            h = share / top * (height - 4)
            parts.append(
                f'<rect x="{x + j * step / 2:.1f}" y="{height - h:.1f}" width="{max(step / 2 - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_fmt(share)}</title></rect>'
            )
    labels = hist.get("labels")
    if labels:
        for i, label in enumerate(labels):
            parts.append(
                f'<text x="{1 + i * step + step / 2:.1f}" y="{height + 12}" font-size="9" '
                f'text-anchor="middle">{html.escape(str(label)[:6])}</text>'
            )
    else:
        edges = hist["edges"]
        parts.append(f'<text x="1" y="{height + 12}" font-size="10">{_fmt(edges[0])}</text>')
        parts.append(
            f'<text x="{width - 1}" y="{height + 12}" font-size="10" text-anchor="end">{_fmt(edges[-1])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


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
            f"<b>{'yes' if pred['drifted'] else 'no'}</b>, decided by {pred['decided_by']}"
            + (
                f", mean {_fmt(pred['mean_reference'])} → {_fmt(pred['mean_current'])}"
                if pred.get("mean_reference") is not None
                else ""
            )
            + "</p>"
        )
    perf = summary.get("performance")
    if perf:
        out.append(
            "<h2>Performance on current data</h2><table><tr><th>metric</th><th>recorded</th><th>current "
            "(95% CI)</th><th>drop (95% CI)</th></tr>"
        )
        for name, m in perf["metrics"].items():
            drop = f"{_fmt(m.get('drop'))} [{_fmt(m['drop_ci'][0])}, {_fmt(m['drop_ci'][1])}]" if "drop" in m else "–"
            out.append(
                f"<tr><td>{name}</td><td class=num>{_fmt(m.get('recorded'))}</td><td class=num>"
                f"{_fmt(m['current'])} [{_fmt(m['current_ci'][0])}, {_fmt(m['current_ci'][1])}]</td>"
                f"<td class=num>{drop}</td></tr>"
            )
        out.append("</table>")
    out.append(
        "<h2>Features</h2><table><tr><th>feature</th><th>kind</th><th>drift</th><th>severity</th>"
        "<th>decided by</th><th>effect size</th><th>p-value</th><th>missing Δ</th><th>importance</th>"
        "<th>note</th></tr>"
    )
    for r in rows:
        s = r["statistics"]
        effect = s.get("wasserstein_norm") if r["kind"] == "numeric" else s.get("js")
        out.append(
            f"<tr><td>{html.escape(r['name'])}</td><td>{_fmt(r['kind'])}</td><td>{_fmt(r['drifted'])}</td>"
            f"<td class=sev-{r['severity']}>{r['severity']}</td><td>{_fmt(r['decided_by'])}</td>"
            f"<td class=num>{_fmt(effect)}</td><td class=num>{_fmt(r['p_value'])}</td>"
            f"<td class=num>{_fmt(s.get('missing_share_change'))}</td><td class=num>{_fmt(r['importance'])}"
            f"</td><td class=muted>{_fmt(r['note'] or (r['status'] if r['status'] != 'ok' else ''))}</td></tr>"
        )
    out.append(
        "</table><h2>Distributions</h2><p class=legend><span style='background:" + _REF + "'></span>reference"
        "<span style='background:" + _CUR + "'></span>current</p><div class=grid>"
    )
    for r in rows:
        if r.get("histogram"):
            out.append(
                f"<div class=card><h3>{html.escape(r['name'])} <span class='sev-{r['severity']}'>"
                f"{r['severity'] if r['drifted'] else ''}</span></h3>{_bars(r['histogram'])}</div>"
            )
    rule = summary["rule"]
    out.append(
        f"</div><h2>How drift was decided</h2><p class=muted>stattest {rule['stattest']}: above "
        f"{rule['large_sample']:,} rows per side, effect size decides (Wasserstein / reference std ≥ "
        f"{rule['thresholds']['wasserstein']} for numbers, Jensen-Shannon distance ≥ {rule['thresholds']['js']}"
        f" for categories, with the corrected test also significant); below, KS or chi-square p-values with {rule['correction']} correction "
        f"(< {rule['thresholds']['ks']}). A missing-share change ≥ {rule['missing_share_change']} is drift on "
        f"its own. Severity bands (low, medium, high): {html.escape(str(rule['severity_bands']))}.</p>"
    )
    out.append("</body></html>\n")
    return "".join(out)
