"""The backlog-over-time chart: inline SVG drawn on the server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["backlog_svg"]


def backlog_svg(samples: Sequence[tuple[float, int]], width: int = 640, height: int = 160) -> Markup:
    """A line of ``(epoch seconds, backlog)`` samples, with the time span and the maximum on the axes."""
    if not samples:
        return Markup('<p class="muted">no samples yet</p>')
    pad_left, pad_bottom, pad_top = 48, 20, 10
    t0, t1 = samples[0][0], samples[-1][0]
    top = max(1, max(v for _, v in samples))
    span = max(t1 - t0, 1e-9)
    inner_w, inner_h = width - pad_left - 8, height - pad_bottom - pad_top

    def xy(t: float, v: int) -> str:
        x = pad_left + (inner_w * (t - t0) / span if len(samples) > 1 else inner_w)
        y = pad_top + inner_h * (1 - v / top)
        return f"{x:.1f},{y:.1f}"

    points = " ".join(xy(t, v) for t, v in samples)
    start = dt.datetime.fromtimestamp(t0, dt.UTC).strftime("%H:%M:%S")
    end = dt.datetime.fromtimestamp(t1, dt.UTC).strftime("%H:%M:%S UTC")
    last = samples[-1][1]
    return Markup(
        f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="backlog over time, last {last}">'
        f'<line x1="{pad_left}" y1="{pad_top}" x2="{pad_left}" y2="{pad_top + inner_h}" class="axis"/>'
        f'<line x1="{pad_left}" y1="{pad_top + inner_h}" x2="{width - 8}" y2="{pad_top + inner_h}" class="axis"/>'
        f'<text x="{pad_left - 6}" y="{pad_top + 8}" text-anchor="end">{top}</text>'
        f'<text x="{pad_left - 6}" y="{pad_top + inner_h}" text-anchor="end">0</text>'
        f'<text x="{pad_left}" y="{height - 4}">{escape(start)}</text>'
        f'<text x="{width - 8}" y="{height - 4}" text-anchor="end">{escape(end)}</text>'
        f'<polyline points="{points}" class="line"/></svg>')
