"""HTML building blocks of the reports: escaping, tables, the page frame and inline SVG plots.

Everything here is pure: values in, HTML text out. Every value that reaches the page goes
through :func:`esc`; table helpers take cells that are already HTML fragments. The page loads
nothing: styles, the one script (open collapsed sections before printing) and the plots are
inline, so a report opens offline and makes no network request.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from string import Template
from typing import Any

log = logging.getLogger(__name__)

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
  margin: 1.5em auto; max-width: 72em; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #333; padding-bottom: .2em; margin-bottom: .3em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.02em; margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
table.findings { width: 100%; font-size: .86em; }
table.prov { width: 100%; table-layout: fixed; }
div.scroll { overflow-x: auto; }
table.qc { font-size: .84em; }
table.prov th:first-child { width: 14em; }
table.prov td { overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #11691d; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.na { color: #777; } .warn { color: #8a5300; font-weight: bold; }
td.outlier { background: #fde2e2; font-weight: bold; }
.stars { color: #b8860b; letter-spacing: .05em; }
.note { color: #555; font-size: .88em; }
.banner { display: flex; flex-wrap: wrap; gap: .6em; margin: .6em 0 1em; }
.badge { border: 1px solid #bbb; border-radius: 4px; padding: .3em .7em; background: #fafafa; }
.badge.bad { border-color: #b00020; background: #fdecee; }
.badge.good { border-color: #11691d; background: #eaf6ec; }
.plots { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: bold; }
svg text { font-family: inherit; }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  a { color: inherit; text-decoration: none; }
  h2 { page-break-after: avoid; } tr, svg { page-break-inside: avoid; }
  div.scroll { overflow: visible; } table.qc, table.findings { font-size: 7.5pt; }
  th, td { padding: .15em .3em; }
  summary { list-style: none; }
}
"""

# Printing shows collapsed sections: open every <details> before the print dialog renders.
SCRIPT = """
window.addEventListener("beforeprint", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
});
"""

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$style</style>
<script>$script</script>
</head>
<body>
<h1>$title</h1>
$body
</body>
</html>
"""
)

NOT_COMPUTED = "<span class='na'>not computed</span>"


def esc(value: Any) -> str:
    """HTML-escaped text of a value; an em dash for null."""
    if value is None:
        return "&mdash;"
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 4) -> str:
    """A number as escaped text: floats to ``digits`` significant digits, null as an em dash."""
    if value is None:
        return "&mdash;"
    if isinstance(value, float):
        if value != value:  # NaN
            return "&mdash;"
        return esc(format(value, f".{digits}g"))
    return esc(value)


def page(title: str, body: str) -> str:
    """The whole HTML document: inline style and script, ``body`` (HTML) under an h1 title."""
    return PAGE.substitute(title=esc(title), style=STYLE, script=SCRIPT, body=body)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Sequence[int] = (),
    css: str = "",
) -> str:
    """An HTML table; cells are HTML fragments, columns in ``numeric`` right-aligned.

    A cell may also be a (html, css class, title) tuple, for flagged values."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    lines = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            classes = ["num"] if i in numeric else []
            title = ""
            if isinstance(cell, tuple):
                cell, extra_class, tip = cell
                if extra_class:
                    classes.append(extra_class)
                title = f' title="{esc(tip)}"' if tip else ""
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}{title}>{cell}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>\n")
    attr = f' class="{esc(css)}"' if css else ""
    return (
        f"<table{attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(lines)}</tbody>\n"
        "</table>"
    )


def kv_table(items: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (label, HTML value) rows."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>\n" for k, v in items)
    return f"<table>\n{rows}</table>"


def verdict(qc_pass: bool | None) -> str:
    """PASS / FAIL / not assessed, styled."""
    if qc_pass is None:
        return "<span class='na'>not assessed</span>"
    return "<span class='pass'>PASS</span>" if qc_pass else "<span class='fail'>FAIL</span>"


def badges(items: Iterable[tuple[str, str]]) -> str:
    """A row of summary badges: (HTML text, "good" | "bad" | "") pairs."""
    spans = "".join(f'<span class="badge {kind}">{text}</span>' for text, kind in items)
    return f'<div class="banner">{spans}</div>'


# --------------------------------------------------------------------------- SVG plots


def _svg(width: int, height: int, label: str, parts: Iterable[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">'
        f"<title>{esc(label)}</title>" + "".join(parts) + "</svg>"
    )


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle", **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{esc(text)}</text>"
    )


def nice_step(span: float, target_ticks: int = 6) -> float:
    """A 1-2-5 tick step giving about ``target_ticks`` ticks over ``span`` (> 0)."""
    if span <= 0:
        return 1.0
    raw = span / max(1, target_ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5):
        if magnitude * factor >= raw:
            return float(magnitude * factor)
    return float(magnitude * 10)


COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f")


def coverage_svg(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    min_mean_coverage: float | None = None,
    width: int = 520,
    height: int = 260,
) -> str:
    """Inline SVG: fraction of territory bases covered at >= depth x, one line per curve.

    In: curve name -> (depth in x, fraction 0-1) points (mosdepth global distribution);
    ``min_mean_coverage`` (x) draws the QC threshold as a dashed vertical line.
    The x axis ends where every curve has fallen below 1 % (at least at the threshold).
    """
    left, right, top, bottom = 48, 16, 14, 40
    pw, ph = width - left - right, height - top - bottom
    x_max = 1
    for points in curves.values():
        for depth, frac in points:
            if frac >= 0.01:
                x_max = max(x_max, depth)
    if min_mean_coverage is not None:
        x_max = max(x_max, int(min_mean_coverage * 1.2) + 1)
    step = nice_step(x_max)
    x_max = int(-(-x_max // step) * step)

    def px(depth: float) -> float:
        return left + pw * depth / x_max

    def py(frac: float) -> float:
        return top + ph * (1 - frac)

    parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>']
    for i in range(0, 11, 2):
        y = py(i / 10)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(_text(left - 5, y + 4, f"{i / 10:.1f}", 10, "end"))
    tick = 0.0
    while tick <= x_max + 1e-9:
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#333"/>'
        )
        parts.append(_text(x, top + ph + 16, f"{tick:g}", 10))
        tick += step
    parts.append(_text(left + pw / 2, height - 6, "depth (x)", 11))
    parts.append(
        _text(
            12,
            top + ph / 2,
            "fraction of bases >= depth",
            11,
            transform=f"rotate(-90 12 {top + ph / 2})",
        )
    )
    if min_mean_coverage is not None:
        x = px(min_mean_coverage)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#b00020" '
            'stroke-dasharray="4 3"/>'
        )
        parts.append(
            _text(
                x + 4,
                top + 12,
                f"QC minimum mean {min_mean_coverage:g}x",
                10,
                "start",
                fill="#b00020",
            )
        )
    for k, (name, points) in enumerate(curves.items()):
        shown = sorted((d, f) for d, f in points if d <= x_max)
        if not shown:
            continue
        color = COLORS[k % len(COLORS)]
        coords = " ".join(f"{px(d):.1f},{py(f):.1f}" for d, f in shown)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = top + 16 + 14 * k
        parts.append(
            f'<line x1="{left + pw - 90}" y1="{ly - 4}" x2="{left + pw - 72}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
        )
        parts.append(_text(left + pw - 68, ly, name, 10, "start"))
    return _svg(
        width, height, "coverage distribution: fraction of bases at or above each depth", parts
    )


def bar_chart_svg(
    labels: Sequence[str],
    counts: Sequence[int],
    x_title: str,
    label: str,
    width: int = 560,
    height: int = 240,
) -> str:
    """Inline SVG bar chart of ``counts`` with one category label under each bar."""
    left, right, top, bottom = 16, 16, 22, 42
    n = max(1, len(counts))
    slot = (width - left - right) / n
    bar_w = slot * 0.78
    top_count = max(counts) if counts and max(counts) > 0 else 1
    ph = height - top - bottom
    parts = [
        f'<line x1="{left}" y1="{top + ph}" x2="{width - right}" y2="{top + ph}" stroke="#333"/>'
    ]
    for i, (name, count) in enumerate(zip(labels, counts, strict=True)):
        h = ph * count / top_count
        x = left + i * slot + (slot - bar_w) / 2
        y = top + ph - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="#4a78a8"/>'
        )
        parts.append(_text(x + bar_w / 2, y - 4, str(count), 11))
        parts.append(_text(x + bar_w / 2, top + ph + 14, name, 10))
    parts.append(_text(width / 2, height - 6, x_title, 11))
    return _svg(width, height, label, parts)
