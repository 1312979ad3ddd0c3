"""Monitoring plots as server-rendered SVG (pure).

Owns turning a usage series into one small line chart: the ranges offered
(hour, day, month: their window and the resolution read for them), the metrics
(CPU, memory, disk, network: how each is read from a point and its unit), and the
SVG itself. The SVG carries no script and no style attribute (the pages' CSP
allows neither); text in it is escaped; it scales with its container (viewBox).
"""

import datetime as dt
from html import escape

RANGES = {                      # name -> (window, resolution of the series read)
    "hour": (dt.timedelta(hours=1), "raw"),
    "day": (dt.timedelta(days=1), "hourly"),
    "month": (dt.timedelta(days=31), "hourly"),
}


def _cpu(point, seconds):
    return 100.0 * point.get("cpu_seconds", 0.0) / seconds if seconds else 0.0


METRICS = {                     # name -> (label, unit, value of a point given its span in s)
    "cpu": ("CPU", "% of one core", _cpu),
    "memory": ("Memory", "MB", lambda p, _s: p.get("memory_mb", p.get("memory_mb_avg", 0.0))),
    "disk": ("Disk", "MB", lambda p, _s: p.get("disk_mb", p.get("disk_mb_avg", 0.0))),
    "network": ("Network", "KB in + out",
                lambda p, _s: (p.get("net_in_bytes", 0) + p.get("net_out_bytes", 0)) / 1000.0),
}

WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 600, 180, 56, 24, 14, 10


def _moment(point):
    text = point.get("at") or point.get("hour")
    return dt.datetime.fromisoformat(text)


def values(series, metric):
    """[(moment, value)] of ``metric``; a raw CPU sample is a counter increment over
    the time since the previous one, an hourly one over the hour."""
    _label, _unit, read = METRICS[metric]
    result, previous = [], None
    for point in series:
        moment = _moment(point)
        if "hour" in point:
            span = 3600.0
        else:
            span = (moment - previous).total_seconds() if previous is not None else 0.0
        previous = moment
        if metric == "cpu" and "at" in point and span <= 0:
            continue
        result.append((moment, float(read(point, span))))
    return result


def _number(value):
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def chart(points, metric, since, until, title=None):
    """An SVG line chart of [(moment, value)] between ``since`` and ``until``."""
    label, unit, _read = METRICS[metric]
    title = title or f"{label} ({unit})"
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max([v for _m, v in points] + [0.0]) or 1.0
    span = (until - since).total_seconds() or 1.0

    def x(moment):
        return LEFT + plot_w * min(max((moment - since).total_seconds() / span, 0.0), 1.0)

    def y(value):
        return TOP + plot_h * (1 - value / top)
    summary = (f"{title}: no data in this range" if not points else
               f"{title}: {len(points)} points, highest {_number(top)}, last {_number(points[-1][1])}")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'class="chart" role="img" aria-label="{escape(summary)}">',
             f"<title>{escape(summary)}</title>",
             f'<text x="{LEFT}" y="10" class="chart-title">{escape(title)}</text>',
             f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" class="axis"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>',
             f'<text x="{LEFT - 4}" y="{TOP + 4}" class="tick" text-anchor="end">{_number(top)}</text>',
             f'<text x="{LEFT - 4}" y="{TOP + plot_h}" class="tick" text-anchor="end">0</text>',
             f'<text x="{LEFT}" y="{HEIGHT - 6}" class="tick">{since:%Y-%m-%d %H:%M}</text>',
             f'<text x="{LEFT + plot_w}" y="{HEIGHT - 6}" class="tick" text-anchor="end">'
             f'{until:%Y-%m-%d %H:%M} UTC</text>']
    if not points:
        parts.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" class="empty" '
                     'text-anchor="middle">no data yet</text>')
    elif len(points) == 1:
        moment, value = points[0]
        parts.append(f'<circle cx="{x(moment):.1f}" cy="{y(value):.1f}" r="3" class="line-dot"/>')
    else:
        line = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in points)
        parts.append(f'<polyline points="{line}" class="line"/>')
    parts.append("</svg>")
    return "".join(parts)
