"""The try-it page served at ``GET /``: one self-contained HTML page generated from the contract.

One input per feature, prefilled with ``contract.example_record()``; "Predict" posts the record to
``POST /explain`` (falling back to ``POST /predict`` for models that cannot be explained) and shows
the prediction, the probabilities and the largest contributions as bars.

Nothing is fetched from elsewhere: CSS and JS are inline, and the page's Content-Security-Policy
allows only its own script and style (by hash) and requests to the server that served it. Contract
strings reach the HTML escaped, or as JSON in a script tag that is data, never run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

from raypipe.data.schema import ColumnSpec, Contract

__all__ = ["render_page"]

TOP_CONTRIBUTIONS = 8
"""Bars in the contributions chart: the largest by absolute value."""

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#f4f6f9}
header{background:#1f3a5f;color:#fff;padding:14px 24px}
header h1{font-size:20px;margin:0}
header p{margin:2px 0 0;opacity:.85;font-size:13px}
main{display:flex;flex-wrap:wrap;gap:20px;padding:20px 24px;align-items:flex-start}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:16px 18px}
#in{flex:1 1 340px;max-width:480px}
#out{flex:1 1 380px;max-width:560px}
h2{font-size:16px;margin:0 0 12px}
.field{margin-bottom:12px}
label{display:block;font-weight:600}
.field small{display:block;color:#5b6678;font-size:12px}
input,select{font:inherit;background:#fff;width:100%;box-sizing:border-box;padding:5px 7px;
  border:1px solid #b7c0cd;border-radius:5px}
.bad input,.bad select{border-color:#c0392b;background:#fdf1f0}
.msg{color:#c0392b;font-size:13px}
.msg.warn{color:#9a6700}
button{font:inherit;font-weight:600;background:#1f6feb;color:#fff;border:0;border-radius:6px;padding:8px 22px;
  cursor:pointer}
button:disabled{opacity:.6}
#status{margin:8px 0 0;min-height:1.4em}
#status.error{color:#c0392b}
.big{font-size:26px;font-weight:700;margin:0 0 10px}
.meta{color:#5b6678;font-size:12px;margin:6px 0}
.row{display:grid;grid-template-columns:minmax(80px,34%) 1fr 72px;gap:8px;align-items:center;margin:3px 0}
.row .name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.row .val{text-align:right;font-variant-numeric:tabular-nums}
.track{position:relative;height:14px;background:#eef1f5;border-radius:3px}
.track.axis::before{content:"";position:absolute;left:50%;top:-3px;bottom:-3px;border-left:1px solid #8a94a6}
.bar{position:absolute;top:0;bottom:0;border-radius:3px;background:#1f6feb}
.bar.pos{background:#c0392b;left:50%}
.bar.neg{background:#2e86c1;right:50%}
h3{font-size:14px;margin:16px 0 6px}
[hidden]{display:none!important}
"""

# Reads the feature list from the JSON block, builds the record, posts it, and draws the answer with
# textContent only (no HTML built from server or contract strings).
_JS = """
const C = JSON.parse(document.getElementById('contract').textContent);
const $ = (id) => document.getElementById(id);
const base = location.pathname.endsWith('/') ? location.pathname : location.pathname + '/';
let canExplain = true;

function record() {
  const r = {};
  C.features.forEach((f, i) => {
    const v = $('f' + i).value.trim();
    if (v === '') r[f.name] = null;
    else if (f.kind === 'numeric') r[f.name] = Number(v);
    else if (f.kind === 'boolean') r[f.name] = v === 'true';
    else r[f.name] = v;
  });
  return r;
}

function clearMessages() {
  C.features.forEach((f, i) => {
    $('m' + i).textContent = ''; $('m' + i).className = 'msg'; $('d' + i).classList.remove('bad');
  });
  $('status').textContent = ''; $('status').className = '';
}

function mark(items, warn) {
  let named = 0;
  (items || []).forEach((x) => {
    const i = C.features.findIndex((f) => f.name === x.field);
    if (i < 0) return;
    named++;
    const m = $('m' + i);
    m.textContent = (m.textContent ? m.textContent + '; ' : '') + x.msg;
    if (warn) m.className = 'msg warn'; else $('d' + i).classList.add('bad');
  });
  return named;
}

async function post(path, body) {
  const headers = {'Content-Type': 'application/json'};
  const res = await fetch(base + path, {method: 'POST', headers, body: JSON.stringify(body)});
  let data;
  try { data = await res.json(); } catch (e) { data = {error: 'HTTP ' + res.status + ' ' + res.statusText}; }
  return [res.status, data];
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bars(box, items, signed) {
  box.replaceChildren();
  const top = Math.max(...items.map(([, v]) => Math.abs(v)), 1e-12);
  items.forEach(([name, v]) => {
    const row = el('div', 'row'); row.dataset.field = name;
    const track = el('div', signed ? 'track axis' : 'track');
    const bar = el('div', 'bar' + (signed ? (v >= 0 ? ' pos' : ' neg') : ''));
    bar.style.width = (Math.abs(v) / top * (signed ? 50 : 100)) + '%';
    track.append(bar);
    const shown = signed ? (v >= 0 ? '+' : '\\u2212') + Math.abs(v).toFixed(3) : v.toFixed(3);
    row.append(el('span', 'name', name), track, el('span', 'val', shown));
    row.title = name + ': ' + shown;
    box.append(row);
  });
}

function show(data) {
  $('result').hidden = false;
  $('prediction').textContent = String(data.prediction[0]);
  const probs = data.probabilities && data.probabilities[0];
  $('probs-box').hidden = !probs;
  if (probs) bars($('probs'), Object.entries(probs).sort((a, b) => b[1] - a[1]), false);
  const ex = data.explanations && data.explanations[0];
  $('contrib-box').hidden = !ex;
  if (ex) {
    const top = Object.entries(ex.contributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, C.top);
    bars($('contribs'), top, true);
    const cls = ex.explained_class == null ? '' : ' for class ' + ex.explained_class;
    const units = data.explanation_units || 'model units';
    $('contrib-note').textContent = 'Largest ' + top.length + ' contributions' + cls + ' (' + units +
      '); base ' + ex.base.toFixed(3) + ', margin ' + ex.margin.toFixed(3) + '.';
  }
  mark(data.warnings, true);
  $('answer-meta').textContent = 'model ' + data.model_name + ' v' + data.model_version + ' \\u00b7 ' +
    data.latency_ms + ' ms \\u00b7 request ' + data.request_id;
}

async function predict(event) {
  event.preventDefault();
  clearMessages();
  $('go').disabled = true;
  $('status').textContent = 'Predicting\\u2026';
  try {
    const rec = record();
    let status = 0, data = null;
    if (canExplain) {
      [status, data] = await post('explain', rec);
      // Not explainable (a scikit-learn model) or no such route: predict instead, from now on.
      const detail = (status === 422 && data.detail) || [];
      const isInput = (x) => x.type !== 'unsupported_model' && C.features.some((f) => f.name === x.field);
      const aboutInputs = detail.some(isInput);
      if ([404, 405, 501].includes(status) || (status === 422 && !aboutInputs)) canExplain = false;
    }
    if (!canExplain) [status, data] = await post('predict', rec);
    if (status === 200) { show(data); $('status').textContent = ''; return; }
    $('result').hidden = true;
    $('status').className = 'error';
    $('status').textContent = (data.error || ('HTTP ' + status));
    mark(data.detail, false);
  } catch (e) {
    $('status').className = 'error';
    $('status').textContent = 'The server could not be reached: ' + e;
  } finally {
    $('go').disabled = false;
  }
}

$('form').addEventListener('submit', predict);
"""


def render_page(contract: Contract, model_name: str, model_version: str) -> str:
    """The whole page as one HTML string (built once per replica).

    Example:
        >>> html = render_page(contract, "flights", "3")  # doctest: +SKIP
    """
    example = contract.example_record()
    fields = "\n".join(_field(i, f, example.get(f.name)) for i, f in enumerate(contract.features))
    data = {
        "features": [{"name": f.name, "kind": f.kind} for f in contract.features],
        "top": TOP_CONTRIBUTIONS,
    }
    label = contract.label
    task = label.task + (f": {', '.join(label.classes)}" if label.classes else "")
    title = f"{model_name} v{model_version}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_csp()}">
<link rel="icon" href="data:,">
<title>{_e(title)} · raypipe</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{_e(model_name)} <span id="version">v{_e(model_version)}</span></h1>
<p>Predicts <b>{_e(label.name)}</b> ({_e(task)}). Edit a record and press Predict.</p></header>
<main>
<section id="in"><form id="form" novalidate>
<h2>Record</h2>
{fields}
<button id="go" type="submit">Predict</button>
<p id="status" role="status" aria-live="polite"></p>
</form></section>
<section id="out"><h2>Answer</h2>
<div id="result" hidden>
<p class="big" id="prediction"></p>
<div id="probs-box"><h3>Probabilities</h3><div id="probs"></div></div>
<div id="contrib-box" hidden><h3>Why: contributions</h3><div id="contribs" role="img" aria-describedby="contrib-note">
</div><p class="meta" id="contrib-note"></p>
<p class="meta">Red bars (+) push the score up, blue bars (&minus;) push it down.</p></div>
<p class="meta" id="answer-meta"></p>
</div>
<p class="meta">The answer of <code>POST /explain</code> (or <code>/predict</code>);
see the <a href="docs">API docs</a>.</p>
</section>
</main>
<script type="application/json" id="contract">{_json_for_script(data)}</script>
<script>{_JS}</script>
</body>
</html>
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json_for_script(obj: Any) -> str:
    # "</script>" or "<!--" in a contract string must not end or change the script element.
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp() -> str:
    """Only this page's own script and style run, and it may only talk to the server that served it."""

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    return (
        f"default-src 'none'; script-src {sha(_JS)}; style-src {sha(_CSS)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
    )


def _field(i: int, spec: ColumnSpec, value: Any) -> str:
    """A labelled input for one feature, its hint, and a slot for the server's message about it."""
    hint, control = _control(i, spec, value)
    if spec.nullable:
        hint += "; may be left empty (missing)"
    return (
        f'<div class="field" id="d{i}"><label for="f{i}">{_e(spec.name)}</label>'
        f'{control}<small id="h{i}">{_e(hint)}</small>'
        f'<span class="msg" id="m{i}" aria-live="polite"></span></div>'
    )


def _control(i: int, spec: ColumnSpec, value: Any) -> tuple[str, str]:
    attrs = f'id="f{i}" name="{_e(spec.name)}" aria-describedby="h{i} m{i}"'
    if spec.kind == "categorical" and spec.categories:
        levels = list(spec.categories)
        if value is not None and str(value) not in levels:  # a rare level in the example row
            levels.append(str(value))
        options = ['<option value="">(missing)</option>'] if spec.nullable or value is None else []
        options += [_option(c, c == _text(value)) for c in levels]
        return f"{len(spec.categories)} levels seen in training", f"<select {attrs}>{''.join(options)}</select>"
    if spec.kind == "boolean":
        empty = ['<option value="">(missing)</option>'] if spec.nullable or value is None else []
        options = empty + [_option(v, v == _text(value)) for v in ("true", "false")]
        return "true or false", f"<select {attrs}>{''.join(options)}</select>"
    if spec.kind == "numeric":
        hint = f"{spec.dtype}; training range {_num(spec.min)} to {_num(spec.max)}"
        return hint, f'<input type="number" step="any" inputmode="decimal" {attrs} value="{_e(_text(value))}">'
    hint = f"{spec.kind} ({spec.dtype})"
    if spec.kind == "timestamp":
        fmt = spec.format if spec.format and spec.format != "ISO8601" else "ISO 8601, e.g. 2024-01-31T08:30:00"
        hint = f"timestamp, {fmt}"
    return hint, f'<input type="text" {attrs} value="{_e(_text(value))}">'


def _option(value: str, selected: bool) -> str:
    return f'<option value="{_e(value)}"{" selected" if selected else ""}>{_e(value)}</option>'


def _text(value: Any) -> str:
    """The form text of a JSON value: '' for null, true/false for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"
