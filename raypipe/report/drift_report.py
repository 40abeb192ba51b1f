"""The monitor's HTML drift report: summary, alerts, per-feature reference-vs-current plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raypipe.report import plots
from raypipe.report.html import esc, fmt, img, page, table


def write_drift_report(result: Any, path: str | Path) -> Path:
    """Write the self-contained HTML drift report for ``result``, a ``raypipe.monitor.MonitorResult``
    (images embedded as base64). Reports sit below the monitor: they read its result, never import it."""
    r = result
    sections = []
    status = (
        f'<p class="bad">{len(r.alerts)} alert(s); drifted features: {esc(", ".join(r.flagged_features) or "none")}</p>'
        if r.alerts
        else '<p class="ok">No threshold crossed.</p>'
    )
    if r.insufficient_data:
        status += '<p class="bad">Too few rows for a drift verdict (monitor.min_rows).</p>'
    window = f"{r.window.get('since') or 'start'} .. {r.window.get('until') or 'now'}"
    sections.append(
        f"<p>Model <b>{esc(r.model)}</b>, window {esc(window)}: {r.rows:,} rows, {r.requests:,} requests.</p>" + status
    )
    if r.alerts:
        sections.append(
            "<h2>Alerts</h2>"
            + table(
                ["feature", "metric", "value", "threshold"],
                [(a.feature or "(model)", a.metric, a.value, a.threshold) for a in r.alerts],
            )
        )
    rows = []
    for f in sorted(r.features, key=lambda f: (not f.flagged_by, f.name)):
        flag = (
            f'<span class="bad">{esc(", ".join(f.flagged_by))}</span>' if f.flagged_by else '<span class="ok">ok</span>'
        )
        rows.append(
            (f.name, f.kind, f.psi, f.ks if f.ks is not None else f.category_shift, f.chi2_p,
             f.null_rate_ref, f.null_rate_cur, f.out_of_schema_rate, flag)
        )  # fmt: skip
    sections.append(
        "<h2>Features</h2>"
        + table(
            [
                "feature",
                "kind",
                "PSI",
                "KS / category shift",
                "chi² p",
                "null ref",
                "null now",
                "out of schema",
                "flag",
            ],
            rows,
            raw_cols=frozenset({8}),
        )
    )
    figs = []
    if r.prediction.get("plot"):
        p = r.prediction["plot"]
        figs.append(_figure(plots.numeric_drift("prediction score", p["edges"], p["ref"], p["cur"]), "prediction score",
                            f"PSI {fmt(r.prediction.get('psi'))}, KS {fmt(r.prediction.get('ks'))}"))  # fmt: skip
    for f in sorted(r.features, key=lambda f: (not f.flagged_by, f.name)):
        if not f.plot:
            continue
        if f.kind == "numeric":
            png = plots.numeric_drift(f.name, f.plot["edges"], f.plot["ref"], f.plot["cur"])
            cap = f"PSI {fmt(f.psi)}, KS {fmt(f.ks)}"
        else:
            png = plots.categorical_drift(f.name, f.plot["levels"], f.plot["ref"], f.plot["cur"])
            cap = f"PSI {fmt(f.psi)}, shift {fmt(f.category_shift)}"
            if f.plot.get("new_levels"):
                cap += "; unseen levels: " + ", ".join(list(f.plot["new_levels"])[:5])
        figs.append(_figure(png, f.name, cap + (" — FLAGGED" if f.flagged_by else "")))
    sections.append("<h2>Distributions (reference vs current)</h2><div class='grid'>" + "".join(figs) + "</div>")
    v = r.volume
    vol = [("rows", v.get("rows")), ("requests", v.get("requests"))]
    vol += [(f"latency {k}", f"{val:.1f} ms") for k, val in v.get("latency_ms", {}).items()]
    vol += [(f"rows on {d}", n) for d, n in v.get("rows_by_date", {}).items()]
    sections.append("<h2>Volume and latency</h2>" + table(["", "value"], vol))
    if r.performance:
        perf = r.performance
        prow = [(k, val) for k, val in perf.get("live", {}).items()]
        prow += [("labelled rows", perf.get("n")), (f"test {perf.get('metric')}", perf.get("test")),
                 (f"drop ({perf.get('drop_kind', 'n/a')})", perf.get("drop"))]  # fmt: skip
        sections.append("<h2>Live performance</h2>" + table(["metric", "value"], prow))
    if r.delivery is not None:
        d = r.delivery
        sections.append(
            f"<h2>Webhook</h2><p>{esc(d.url)}: {'delivered' if d.delivered else 'NOT delivered'} "
            f"after {d.attempts} attempt(s){esc(': ' + d.error) if d.error else ''}</p>"
        )
    out = Path(path)
    out.write_text(page(f"raypipe drift report: {r.model}", sections))
    return out


def _figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{img(png, alt)}<figcaption>{esc(caption)}</figcaption></figure>"
