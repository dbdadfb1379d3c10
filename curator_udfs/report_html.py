"""The curation report as one static HTML page, built from plain data (dicts and lists).

No Spark here, no server, no external URL: inline CSS, inline SVG charts drawn by the small
functions below, thumbnails as base64 data URIs. Each section takes `None` for "the stage that
fills it has not run yet" and says so instead of failing. The data shape is documented on
:func:`render_report`; `spark_jobs/report.py` queries the tables and builds it.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")  # fmt: skip
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
header{background:#1f2d3d;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:24px}header p{margin:0;opacity:.8;font-size:13px}
main{padding:16px 32px;max-width:1200px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:0 0 18px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin:0 0 10px;font-size:18px}
.notrun{color:#888;font-style:italic}
.charts{display:flex;flex-wrap:wrap;gap:18px}
table{border-collapse:collapse;font-size:13px}
td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.groups{display:flex;flex-direction:column;gap:10px}
.group{display:flex;gap:8px;align-items:flex-start;border-bottom:1px solid #eee;padding-bottom:8px}
figure{margin:0;width:104px;font-size:11px;text-align:center;word-break:break-all}
figure img,figure .ph{width:96px;height:96px;object-fit:cover;border:3px solid #ddd;
border-radius:4px;display:block;margin:0 auto;background:#eee}
figure.kept img,figure.kept .ph{border-color:#59a14f}
.badge{display:inline-block;background:#59a14f;color:#fff;border-radius:3px;padding:0 4px}
code{font-size:12px;background:#f0f0f0;padding:1px 3px;border-radius:3px}
section.warn{background:#fff4e5;border-left:4px solid #e8a23b}
"""


# ---- data helpers -------------------------------------------------------------------------------
def parse_thresholds(predicates: Sequence[str], column: str) -> list[tuple[str, float]]:
    """(operator, value) bounds on `column` in simple predicates, e.g. `aesthetic_score >= 5`.

    Understands `col OP number`, `number OP col` (flipped), `col BETWEEN a AND b` and ANDs of
    those; anything else is ignored (the chart just draws no line for it).
    """
    flip = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "="}
    col = re.escape(column)
    out: list[tuple[str, float]] = []
    for pred in predicates:
        text = pred.strip()
        for lo, hi in re.findall(
            rf"\b{col}\s+BETWEEN\s+({_NUM})\s+AND\s+({_NUM})", text, flags=re.IGNORECASE
        ):
            out += [(">=", float(lo)), ("<=", float(hi))]
        text = re.sub(rf"\b{col}\s+BETWEEN\s+{_NUM}\s+AND\s+{_NUM}", " ", text, flags=re.I)
        for part in re.split(r"\bAND\b", text, flags=re.IGNORECASE):
            part = part.strip().strip("()").strip()
            m = re.fullmatch(rf"{col}\s*(>=|<=|==|=|>|<)\s*({_NUM})", part, flags=re.I)
            if m:
                out.append((m.group(1).replace("==", "="), float(m.group(2))))
                continue
            m = re.fullmatch(rf"({_NUM})\s*(>=|<=|==|=|>|<)\s*{col}", part, flags=re.I)
            if m:
                out.append((flip[m.group(2).replace("==", "=")], float(m.group(1))))
    return out


def histogram(
    values: Sequence[float], bins: int = 30, lo: float | None = None, hi: float | None = None
) -> dict[str, Any]:
    """`{"lo", "hi", "counts"}` of the finite values in `bins` equal bins (tests, small data)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    lo = min(xs, default=0.0) if lo is None else lo
    hi = max(xs, default=1.0) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    counts = [0] * bins
    for x in xs:
        counts[min(bins - 1, max(0, int((x - lo) / (hi - lo) * bins)))] += 1
    return {"lo": lo, "hi": hi, "counts": counts}


def thumbnail_data_uri(data: bytes | None, size: int = 96) -> str | None:
    """A JPEG thumbnail (longest side `size`) as a data URI; None when the bytes do not decode."""
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            img.draft("RGB", (size, size))
            thumb = img.convert("RGB")
            thumb.thumbnail((size, size))
            buf = io.BytesIO()
            thumb.save(buf, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - any undecodable image becomes a placeholder
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(n: float | int | None) -> str:
    if n is None:
        return "–"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.3g}"
    return f"{int(n):,}"


# ---- SVG charts ---------------------------------------------------------------------------------
def svg_histogram(
    hist: dict[str, Any],
    thresholds: Sequence[tuple[str, float]] = (),
    *,
    title: str = "",
    color: str = PALETTE[0],
    width: int = 540,
    height: int = 240,
) -> str:
    """Bars of `hist["counts"]` over [lo, hi], a dashed red line per threshold, axis labels."""
    lo, hi, counts = float(hist["lo"]), float(hist["hi"]), list(hist["counts"])
    for _, v in thresholds:  # make sure every threshold is on the chart
        lo, hi = min(lo, v), max(hi, v)
    span = (hi - lo) or 1.0
    left, right, top, bottom = 44, 12, 28, 34
    pw, ph = width - left - right, height - top - bottom
    peak = max(counts, default=0) or 1
    parts = [
        f'<svg class="chart histogram" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">0</text>',
    ]
    h_lo, h_hi = float(hist["lo"]), float(hist["hi"])
    bw = (h_hi - h_lo) / max(len(counts), 1)
    for i, c in enumerate(counts):
        x0 = left + (h_lo + i * bw - lo) / span * pw
        w = max(bw / span * pw - 1, 0.5)
        h = c / peak * ph
        parts.append(
            f'<rect x="{x0:.1f}" y="{top + ph - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{color}"><title>{h_lo + i * bw:.3g}–{h_lo + (i + 1) * bw:.3g}: {c}</title>'
            "</rect>"
        )
    for k in range(5):
        v = lo + span * k / 4
        x = left + pw * k / 4
        parts.append(
            f'<text x="{x:.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">'
            f"{v:.3g}</text>"
        )
    for op, v in thresholds:
        x = left + (v - lo) / span * pw
        parts.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + ph}" '
            'stroke="#d62728" stroke-width="2" stroke-dasharray="5,3"/>'
            f'<text x="{x + 3:.1f}" y="{top + 6}" font-size="11" fill="#d62728">'
            f"{escape(op)} {v:g}</text>"
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" font-size="11" text-anchor="middle" '
        f'fill="#555">{escape(title)} (n = {sum(counts):,})</text></svg>'
    )
    return "".join(parts)


def svg_bars(
    items: Sequence[tuple[str, float]],
    *,
    title: str = "",
    width: int = 540,
    bar_height: int = 22,
    label_width: int = 170,
    colors: Sequence[str] = PALETTE,
) -> str:
    """Horizontal bars with a label and the value at the end (funnels, reasons, sizes)."""
    top = 26 if title else 6
    height = top + len(items) * (bar_height + 6) + 6
    peak = max((v for _, v in items), default=0) or 1
    pw = width - label_width - 70
    parts = [
        f'<svg class="chart bars" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
    ]
    if title:
        parts.append(f'<text x="0" y="16" font-size="13" font-weight="bold">{escape(title)}</text>')
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_height + 6)
        w = max(value / peak * pw, 1 if value else 0)
        parts.append(
            f'<text x="{label_width - 6}" y="{y + bar_height * 0.7:.1f}" font-size="12" '
            f'text-anchor="end">{escape(str(label)[:28])}</text>'
            f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar_height}" rx="3" '
            f'fill="{colors[i % len(colors)]}"><title>{escape(str(label))}: {_fmt(value)}</title>'
            "</rect>"
            f'<text x="{label_width + w + 5:.1f}" y="{y + bar_height * 0.7:.1f}" font-size="12">'
            f"{_fmt(value)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# ---- sections -----------------------------------------------------------------------------------
def _not_run(what: str) -> str:
    return f'<p class="notrun">not run yet: {escape(what)}</p>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def funnel_section(funnel: Sequence[dict[str, Any]] | None) -> str:
    """The funnel bars (steps with a count) and a table with the per-reason breakdowns."""
    if not funnel:
        return _section("funnel", "Funnel", _not_run("curator ingest"))
    ran = [(s["stage"], s["count"]) for s in funnel if s.get("count") is not None]
    body = svg_bars(ran, title="samples remaining after each step") if ran else ""
    rows = []
    for s in funnel:
        count = s.get("count")
        what = _fmt(count) if count is not None else '<span class="notrun">not run yet</span>'
        reasons = ", ".join(
            f"{escape(str(k))}: {_fmt(v)}" for k, v in (s.get("breakdown") or {}).items()
        )
        note = escape(s.get("note") or "")
        rows.append(
            f"<tr><td>{escape(s['stage'])}</td><td class='n'>{what}</td>"
            f"<td>{reasons or '–'}</td><td>{note}</td></tr>"
        )
    body += (
        "<table><tr><th>step</th><th>samples</th><th>removed here, by reason</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return _section("funnel", "Funnel", body)


def scores_section(
    histograms: dict[str, dict[str, Any] | None] | None, predicates: Sequence[str]
) -> str:
    """A histogram per score column with the filter thresholds drawn."""
    if not histograms or all(h is None for h in histograms.values()):
        return _section("scores", "Scores", _not_run("curator embed"))
    charts = []
    for i, (column, hist) in enumerate(histograms.items()):
        if hist is None or not sum(hist.get("counts") or []):
            charts.append(f"<div>{escape(column)}: {_not_run('no scores yet')}</div>")
            continue
        thresholds = parse_thresholds(predicates, column)
        charts.append(
            svg_histogram(hist, thresholds, title=column, color=PALETTE[(i * 3) % len(PALETTE)])
        )
    preds = ", ".join(f"<code>{escape(p)}</code>" for p in predicates) or "none"
    body = f'<div class="charts">{"".join(charts)}</div><p>filter predicates: {preds}</p>'
    return _section("scores", "Scores and image signals", body)


def clusters_section(sizes: dict[int, int] | None) -> str:
    """How many duplicate groups have each size (kept sample + its duplicates)."""
    if sizes is None:
        return _section("clusters", "Duplicate cluster sizes", _not_run("curator dedup"))
    if not sizes:
        return _section("clusters", "Duplicate cluster sizes", "<p>no duplicates found</p>")
    items = [(f"size {k}", v) for k, v in sorted(sizes.items())]
    return _section(
        "clusters",
        "Duplicate cluster sizes",
        svg_bars(items, title="clusters by size (samples per cluster)"),
    )


def _figure(item: dict[str, Any], kept: bool) -> str:
    uri = item.get("thumb")
    img = (
        f'<img src="{uri}" alt="{escape(item.get("sample_id", ""))}">'
        if uri
        else '<div class="ph"></div>'
    )
    sim = item.get("similarity")
    caption = '<span class="badge">kept</span>' if kept else (f"sim {sim:.3f}" if sim else "")
    sid = escape(str(item.get("sample_id", ""))[:12])
    return f'<figure class="{"kept" if kept else "dup"}">{img}<figcaption>{caption}<br>{sid}' \
        "</figcaption></figure>"  # fmt: skip


def groups_section(groups: Sequence[dict[str, Any]] | None) -> str:
    """A row of thumbnails per duplicate group: the kept sample first (green), then the rest."""
    if groups is None:
        return _section("groups", "Duplicate groups", _not_run("curator dedup"))
    if not groups:
        return _section("groups", "Duplicate groups", "<p>no duplicates found</p>")
    rows = []
    for g in groups:
        label = escape(str(g.get("method", "")))
        figs = _figure(g["kept"], True) + "".join(_figure(d, False) for d in g["duplicates"])
        rows.append(f'<div class="group"><div style="width:80px">{label}</div>{figs}</div>')
    return _section("groups", "Duplicate groups", f'<div class="groups">{"".join(rows)}</div>')


def warnings_section(warnings: Sequence[str] | None) -> str:
    """Caveats shown above everything else (e.g. random weights: the scores are noise)."""
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f'<section id="warnings" class="warn"><h2>Read this first</h2><ul>{items}</ul></section>'


def low_clip_section(items: Sequence[dict[str, Any]] | None) -> str:
    """Thumbnails of the lowest-CLIP-score pairs with their captions (what the filter removes)."""
    if items is None:
        return ""  # no clip_score column: the model has no text tower, or embed.text is off
    if not items:
        return _section("lowclip", "Lowest CLIP scores", "<p>no CLIP scores (no captions?)</p>")
    figs = []
    for it in items:
        uri = it.get("thumb")
        sid = escape(str(it.get("sample_id", "")))
        img = f'<img src="{uri}" alt="{sid}">' if uri else '<div class="ph"></div>'
        figs.append(
            f'<figure class="dup">{img}<figcaption>clip {float(it["clip_score"]):.3f}<br>'
            f"{escape(str(it.get('caption') or '')[:80])}</figcaption></figure>"
        )
    body = f'<div class="groups"><div class="group">{"".join(figs)}</div></div>'
    return _section("lowclip", "Lowest CLIP scores (removed first by a clip_score filter)", body)


def quarantine_section(reasons: Sequence[dict[str, Any]] | None) -> str:
    """Bars per quarantine reason and a few example members of each."""
    if reasons is None:
        return _section("quarantine", "Quarantine", _not_run("curator ingest"))
    if not reasons:
        return _section("quarantine", "Quarantine", "<p>nothing quarantined</p>")
    chart = svg_bars([(r["reason"], r["count"]) for r in reasons], title="by reason")
    rows = []
    for r in reasons:
        for ex in r.get("examples", []):
            rows.append(
                f"<tr><td>{escape(str(r['reason']))}</td><td>{escape(str(ex.get('shard', '')))}"
                f"</td><td>{escape(str(ex.get('member') or ex.get('key') or ''))}</td>"
                f"<td>{escape(str(ex.get('detail') or '')[:160])}</td></tr>"
            )
    table = (
        "<table><tr><th>reason</th><th>shard</th><th>member</th><th>detail</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return _section("quarantine", "Quarantine", chart + table)


def render_report(data: dict[str, Any]) -> str:
    """The whole page. Keys (each may be missing or None = not run yet):

    title, subtitle: str; warnings: [str]; lowest_clip_scores: [{sample_id, thumb, caption,
    clip_score}]; funnel: [{stage, count, breakdown: {reason: n}, note}];
    histograms: {column: {lo, hi, counts} | None}; predicates: [str];
    cluster_sizes: {size: n_clusters}; duplicate_groups: [{method, kept: {sample_id, thumb},
    duplicates: [{sample_id, thumb, similarity}]}]; quarantine: [{reason, count, examples:
    [{shard, key, member, detail}]}].
    """
    title = data.get("title") or "Curation report"
    sections = [
        warnings_section(data.get("warnings")),
        funnel_section(data.get("funnel")),
        scores_section(data.get("histograms"), data.get("predicates") or []),
        low_clip_section(data.get("lowest_clip_scores")),
        clusters_section(data.get("cluster_sizes")),
        groups_section(data.get("duplicate_groups")),
        quarantine_section(data.get("quarantine")),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(data.get('subtitle') or '')}</p></header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def write_report(out_dir: str | Path, html: str) -> Path:
    """Write `index.html` into `out_dir` (created), via a temporary file; return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    return tmp.replace(out / "index.html")
