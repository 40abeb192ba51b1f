"""Tiny helpers for self-contained HTML pages (no templates, no external assets)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

# The page sets data-images-loaded on <body> once every <img> has decoded, so a
# headless browser (and the tests) can check that the embedded images load.
_IMG_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
</script>"""

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:370px}
figcaption{font-size:12px;color:#555}img{max-width:100%}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}"""


def esc(v: Any) -> str:
    return html.escape(str(v))


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4g}"
    return str(v)


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], raw_cols: frozenset[int] = frozenset()) -> str:
    """An HTML table; cells in ``raw_cols`` are trusted HTML, the rest are escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw_cols else esc(fmt(c))}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[str]) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(sections)}{_IMG_CHECK}</body></html>"
    )
