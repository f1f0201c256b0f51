"""Inline SVG bar charts for the HTML report (no JavaScript or network needed to see them)."""
from __future__ import annotations

from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def grouped_bars(groups: list[str], series: list[str], values: list[list[tuple]], *, title: str = "", chart_id: str = "",
                 ymax: float = 100.0, width: int | None = None, height: int = 300) -> str:
    """Grouped vertical bars. values[g][s] = (value or None, partial: bool, note: str).

    A partial value (mean over only some tasks) is drawn hatched and pale, with its note in the
    tooltip and under the bar; a missing value draws no bar but a small 'n/a'."""
    n_g, n_s = len(groups), max(1, len(series))
    bar_w = 14 if n_s > 4 else 20
    group_w = n_s * bar_w + 24
    left, right, top, bottom = 44, 16, 28, 70
    width = width or max(720, left + right + n_g * group_w)
    group_w = max(group_w, (width - left - right) / max(1, n_g))
    bottom = 58 + 18 * n_s  # the legend: one series per line, then the note on partial bars
    plot_h = height - 70
    height = top + plot_h + bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="white" fill-opacity="0"/><line x1="0" y1="0" x2="0" y2="6" stroke="#333" stroke-width="1.5"/></pattern></defs>',
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for tick in range(0, int(ymax) + 1, 20):
        y = top + plot_h - plot_h * tick / ymax
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick}</text>')
    for g, gname in enumerate(groups):
        gx = left + (group_w - len(series) * bar_w) / 2 + g * group_w
        for s in range(len(series)):
            v, partial, note = values[g][s]
            x = gx + s * bar_w
            color = PALETTE[s % len(PALETTE)]
            if v is None:  # no score: a grey mark on the axis, no bar
                out.append(f'<rect x="{x:.1f}" y="{top + plot_h - 3}" width="{bar_w - 2}" height="3" class="na-mark" fill="#c0c5d0">'
                           f'<title>{escape(series[s])} — {escape(gname)}: no score</title></rect>')
                continue
            h = max(0.0, min(v, ymax)) / ymax * plot_h
            y = top + plot_h - h
            tip = f"{series[s]} — {gname}: {v:.2f}" + (f" (partial: {note})" if partial else "")
            opacity = ' fill-opacity="0.45"' if partial else ""
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2}" height="{h:.1f}" fill="{color}"{opacity} '
                f'data-value="{v:.4f}" data-partial="{str(partial).lower()}"><title>{escape(tip)}</title></rect>'
            )
            if partial:
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2}" height="{h:.1f}" fill="url(#hatch)"/>')
        label = gname if len(gname) <= 18 else gname[:17] + "…"
        cx = gx + len(series) * bar_w / 2
        out.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16}" class="glabel" text-anchor="middle">{escape(label)}<title>{escape(gname)}</title></text>')
    # legend, one series per line; hatched = partial
    ly = top + plot_h + 42
    for s, sname in enumerate(series):
        yy = ly + 18 * s
        out.append(f'<rect x="{left}" y="{yy - 10}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>')
        out.append(f'<text x="{left + 18}" y="{yy}" class="legend">{escape(sname)}</text>')
    if any(values[g][s][1] for g in range(n_g) for s in range(len(series))):
        out.append(f'<text x="{left}" y="{ly + 18 * len(series)}" class="legend">hatched, pale bars: partial (mean over only some of the tasks)</text>')
    out.append("</svg>")
    return "\n".join(out)
