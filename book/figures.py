#!/usr/bin/env python3
"""Draws the benchmark charts of the book from the recorded figures.

    python3 book/figures.py           # writes book/src/figures/*.svg from book/src/figures/data.json
    python3 book/figures.py --check   # exits 1 if a committed SVG differs from what the data gives (CI)

Standard library only; the SVG is written by hand so the output is byte-for-byte reproducible.
"""

import json
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

FIGURES = Path(__file__).resolve().parent / "src" / "figures"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""
KIT = "#2563eb"
PEER = "#9ca3af"
INK = "#1d2330"
MUTED = "#667085"
GRID = "#e4e7ec"


def num(value):
    """A figure as the book prints it: thin spaces between thousands, at most three significant decimals."""
    if value >= 1000:
        return f"{value:,.0f}".replace(",", "\u202f")
    if value >= 100:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if value >= 10:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3f}".rstrip("0").rstrip(".")


def text(x, y, content, size=12, anchor="start", fill=INK, weight="normal"):
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
        f' font-weight="{weight}">{escape(str(content))}</text>'
    )


def rect(x, y, w, h, fill):
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" fill="{fill}" rx="2"/>'


def svg(width, height, title, body):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img" aria-label="{escape(title)}" {FONT}>\n'
        f"<title>{escape(title)}</title>\n"
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


def peers(data):
    """Per layer, tower-kit's bar next to its peer's, each row on its own scale and unit."""
    rows = data["rows"]
    width, label_w, right = 760, 190, 230
    row_h, top = 62, 46
    height = top + row_h * len(rows) + 30
    body = [text(16, 24, data["title"], 15, weight="bold")]
    bar_w = width - label_w - right
    for i, row in enumerate(rows):
        y = top + i * row_h
        top_value = max(row["tower_kit"], row["peer_value"])
        body.append(text(16, y + 16, row["layer"], 13, weight="bold"))
        body.append(text(16, y + 32, row["what"], 11, fill=MUTED))
        for j, (name, value, colour) in enumerate(
            [("tower-kit", row["tower_kit"], KIT), (row["peer"], row["peer_value"], PEER)]
        ):
            by = y + 4 + j * 22
            w = bar_w * value / top_value
            body.append(rect(label_w, by, w, 18, colour))
            body.append(text(label_w + w + 6, by + 13, f"{num(value)} {row['unit']}  {name}", 11))
        ratio = row["tower_kit"] / row["peer_value"]
        body.append(
            text(16, y + 47, f"{ratio:.2f}× the peer", 11, fill=KIT if ratio <= 1 else "#dc2626", weight="bold")
        )
        body.append(f'<line x1="16" x2="{width - 16}" y1="{y + row_h - 6}" y2="{y + row_h - 6}" stroke="{GRID}"/>')
    body.append(
        text(16, height - 10, "Each row on its own scale; the figures and the commands that reproduce them are in the"
             " Benchmarks chapter", 11, fill=MUTED)
    )
    return svg(width, height, data["title"], body)


def layer_table(data):
    """Requests/s per configuration of the demo, with p99 beside each bar. A row with a "coding" is a run in which
    the client accepted only that content coding; its label names it."""
    rows = data["rows"]
    width, label_w, right = 760, 170, 170
    row_h, top = 28, 58
    height = top + row_h * len(rows) + 34
    step = nice_step(max(r["rps"] for r in rows))
    ticks = math.ceil(max(r["rps"] for r in rows) / step)
    scale_max = step * ticks
    bar_w = width - label_w - right
    body = [text(16, 24, data["title"], 15, weight="bold"), text(16, 42, data["subtitle"], 11, fill=MUTED)]
    for k in range(ticks + 1):
        v = step * k
        x = label_w + bar_w * v / scale_max
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + row_h * len(rows)}" stroke="{GRID}"/>')
        body.append(text(x, top + row_h * len(rows) + 14, num(v), 10, anchor="middle", fill=MUTED))
    for i, row in enumerate(rows):
        y = top + i * row_h
        colour = KIT if row["configuration"] == "all layers on" else PEER
        label = row["configuration"] + (f", {row['coding']}" if "coding" in row else "")
        body.append(text(label_w - 8, y + 15, label, 12, anchor="end"))
        w = bar_w * row["rps"] / scale_max
        body.append(rect(label_w, y + 2, w, 18, colour))
        body.append(text(label_w + w + 6, y + 15, f"{num(row['rps'])}/s", 11))
        body.append(text(width - 16, y + 15, f"p99 {num(row['p99_ms'])} ms", 11, anchor="end", fill=MUTED))
    body.append(text(label_w, height - 6, "requests per second", 10, fill=MUTED))
    return svg(width, height, data["title"], body)


def frontier(data):
    """Milliseconds against output bytes for every engine and level; lower left is better."""
    points = data["points"]
    width, height = 760, 420
    left, right, top, bottom = 70, 30, 58, 50
    xs = [p["ms"] for p in points]
    ys = [p["bytes"] for p in points]
    x_step = nice_step(max(xs))
    x_ticks = math.ceil(max(xs) * 1.05 / x_step)
    x_max = x_step * x_ticks
    y_lo = math.floor(min(ys) / 500) * 500 - 250
    y_hi = math.ceil(max(ys) / 500) * 500 + 250
    plot_w = width - left - right
    plot_h = height - top - bottom

    def px(ms):
        return left + plot_w * ms / x_max

    def py(b):
        return top + plot_h * (1 - (b - y_lo) / (y_hi - y_lo))

    body = [text(16, 24, data["title"], 15, weight="bold"), text(16, 42, data["subtitle"], 11, fill=MUTED)]
    for k in range(x_ticks + 1):
        v = x_step * k
        body.append(f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{top}" y2="{top + plot_h}" stroke="{GRID}"/>')
        body.append(text(px(v), top + plot_h + 16, f"{v:.1f}", 10, anchor="middle", fill=MUTED))
    step = 500
    b = y_lo + (step - y_lo % step) % step
    while b <= y_hi:
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(b):.1f}" y2="{py(b):.1f}" stroke="{GRID}"/>')
        body.append(text(left - 6, py(b) + 3, num(b), 10, anchor="end", fill=MUTED))
        b += step
    body.append(text(left + plot_w / 2, height - 12, "milliseconds per 100 KiB body (lower is faster)", 11,
                     anchor="middle", fill=MUTED))
    body.append(
        f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="11" fill="{MUTED}" text-anchor="middle"'
        f' transform="rotate(-90 16 {top + plot_h / 2:.1f})">output bytes (lower is smaller)</text>'
    )
    colours = {"libdeflate": KIT, "zlib-rs": "#16a34a", "miniz_oxide": "#d97706"}
    engines = []
    for p in points:
        if p["engine"] not in engines:
            engines.append(p["engine"])
    for engine in engines:
        line = sorted((p for p in points if p["engine"] == engine), key=lambda p: p["level"])
        if len(line) > 1:
            path = " ".join(f"{'M' if i == 0 else 'L'}{px(p['ms']):.1f},{py(p['bytes']):.1f}" for i, p in enumerate(line))
            body.append(f'<path d="{path}" fill="none" stroke="{colours.get(engine, MUTED)}" stroke-width="1.5"'
                        f' stroke-dasharray="4 3"/>')
    for p in points:
        colour = colours.get(p["engine"], MUTED)
        x, y = px(p["ms"]), py(p["bytes"])
        r = 7 if p.get("note") == "tower-kit's default" else 5
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}" stroke="#ffffff" stroke-width="1.5"/>')
        label = f"{p['engine']} {p['level']}"
        if p.get("note"):
            label += f" ({p['note']})"
        weight = "bold" if p.get("note") == "tower-kit's default" else "normal"
        # Where the label goes ("left"/"right" of the point, "above"/"below" it), set in the data where labels
        # would collide.
        place = p.get("label", "right above")
        anchor = "end" if "left" in place else "start"
        dx = -10 if anchor == "end" else 10
        dy = 17 if "below" in place else -8
        body.append(text(x + dx, y + dy, label, 11, anchor=anchor, weight=weight))
    lx = left + plot_w - 130
    for i, engine in enumerate(engines):
        body.append(f'<circle cx="{lx:.1f}" cy="{top + 10 + i * 16}" r="5" fill="{colours.get(engine, MUTED)}"/>')
        body.append(text(lx + 10, top + 14 + i * 16, engine, 11))
    return svg(width, height, data["title"], body)


def nice_step(v):
    """A round tick step that splits 0..v into 3 to 7 parts."""
    p = 10 ** math.floor(math.log10(v))
    for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10):
        if v / (m * p) <= 7:
            return m * p
    return 10 * p


def nice_ceil(v):
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * p >= v:
            return m * p
    return 10 * p


CHARTS = {
    "peers.svg": ("peers", peers),
    "layer-table.svg": ("layer_table", layer_table),
    "compression-frontier.svg": ("frontier", frontier),
}


def main(argv):
    check = "--check" in argv[1:]
    data = json.loads((FIGURES / "data.json").read_text(encoding="utf-8"))
    stale = []
    for name, (key, draw) in CHARTS.items():
        out = FIGURES / name
        content = draw(data[key])
        if check:
            if not out.exists() or out.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            out.write_text(content, encoding="utf-8")
            print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    if stale:
        print(
            "book/src/figures: " + ", ".join(stale) + " differ from book/src/figures/data.json; "
            "run `python3 book/figures.py` and commit the SVGs",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
