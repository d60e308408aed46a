"""Static pictures of views, drawn in Python from the data the view shows (no front end needed).

A :class:`Picture` is a list of shapes (rectangles, circles, lines, text) on a white canvas,
rendered to PNG with Pillow or written as SVG. :func:`picture` builds one for the views that are
tables, heatmaps or graphs (``LensTable``, ``PatchingTable``, ``LayerGrid``, ``GraphView`` and its
subclasses ``CoactivationGraph`` / ``FlowGraph``, ``HeadMap``, ``TokenHeat``); other views have none.
Views add the PNG to their notebook output next to the live widget (see
:meth:`MRIWidget._repr_mimebundle_`), so GitHub, nbviewer and ``nbconvert --to html`` show it.
"""

from __future__ import annotations

import base64
import html
import io
import pathlib
import re

import numpy as np

__all__ = ["Picture", "picture", "STATIC_IMAGES"]

#: add a PNG of each view to its notebook output (set False to keep outputs small)
STATIC_IMAGES = True

_FONT_PX = 11


class Picture:
    """Shapes on a ``width`` x ``height`` canvas; :meth:`png` and :meth:`svg` render them."""

    def __init__(self, width: int, height: int, title: str = ""):
        self.width, self.height, self.title = int(width), int(height), title
        self.shapes: list = []

    def rect(self, x, y, w, h, fill, outline=None):
        self.shapes.append(("rect", float(x), float(y), float(w), float(h), _rgb(fill), outline and _rgb(outline)))

    def circle(self, cx, cy, r, fill):
        self.shapes.append(("circle", float(cx), float(cy), max(float(r), 0.5), _rgb(fill)))

    def line(self, x1, y1, x2, y2, color, width=1.0):
        self.shapes.append(("line", float(x1), float(y1), float(x2), float(y2), _rgb(color), max(float(width), 0.5)))

    def text(self, x, y, s, color=(34, 34, 34), size=_FONT_PX):
        # widen the canvas for text that would be cut (about 0.6 em per character)
        s = _printable(s)
        self.width = max(self.width, int(x + 0.6 * size * len(s) + 8))
        self.shapes.append(("text", float(x), float(y), s, _rgb(color), int(size)))

    def pixels(self, x, y, rgb, cell):
        """An (h, w, 3) uint8 array drawn at (x, y), each value as a ``cell`` x ``cell`` square."""
        self.shapes.append(("pixels", float(x), float(y), np.ascontiguousarray(rgb, np.uint8), int(cell)))

    def png(self) -> bytes:
        """The picture as PNG bytes (Pillow)."""
        from PIL import Image, ImageDraw, ImageFont

        img = Image.new("RGB", (max(self.width, 1), max(self.height, 1)), (255, 255, 255))
        d = ImageDraw.Draw(img)
        fonts = {}
        for s in self.shapes:
            kind = s[0]
            if kind == "rect":
                _, x, y, w, h, fill, outline = s
                d.rectangle([x, y, x + max(w - 1, 0), y + max(h - 1, 0)], fill=fill, outline=outline)
            elif kind == "circle":
                _, cx, cy, r, fill = s
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            elif kind == "pixels":
                _, x, y, rgb, cell = s
                block = Image.fromarray(rgb, "RGB").resize((rgb.shape[1] * cell, rgb.shape[0] * cell), Image.NEAREST)
                img.paste(block, (int(x), int(y)))
            elif kind == "line":
                _, x1, y1, x2, y2, color, w = s
                d.line([x1, y1, x2, y2], fill=color, width=max(int(round(w)), 1))
            else:
                _, x, y, text, color, size = s
                if size not in fonts:
                    fonts[size] = ImageFont.load_default(size)
                d.text((x, y), text, fill=color, font=fonts[size])
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def svg(self) -> str:
        """The picture as an SVG document (text from the data is escaped)."""
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
               f'viewBox="0 0 {self.width} {self.height}" font-family="sans-serif">',
               f'<title>{html.escape(self.title)}</title>',
               f'<rect width="{self.width}" height="{self.height}" fill="#fff"/>']
        for s in self.shapes:
            kind = s[0]
            if kind == "rect":
                _, x, y, w, h, fill, outline = s
                stroke = f' stroke="{_hex(outline)}"' if outline else ""
                out.append(f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" fill="{_hex(fill)}"{stroke}/>')
            elif kind == "circle":
                _, cx, cy, r, fill = s
                out.append(f'<circle cx="{cx:g}" cy="{cy:g}" r="{r:g}" fill="{_hex(fill)}"/>')
            elif kind == "pixels":
                _, x, y, rgb, cell = s
                from PIL import Image

                buf = io.BytesIO()
                Image.fromarray(rgb, "RGB").save(buf, format="PNG")
                href = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
                out.append(f'<image x="{x:g}" y="{y:g}" width="{rgb.shape[1] * cell}" height="{rgb.shape[0] * cell}" '
                           f'image-rendering="pixelated" style="image-rendering:pixelated" href="{href}"/>')
            elif kind == "line":
                _, x1, y1, x2, y2, color, w = s
                out.append(f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{_hex(color)}" '
                           f'stroke-width="{w:g}"/>')
            else:
                _, x, y, text, color, size = s
                out.append(f'<text x="{x:g}" y="{y + size:g}" font-size="{size}" fill="{_hex(color)}" '
                           f'xml:space="preserve">{html.escape(text)}</text>')
        out.append("</svg>")
        return "\n".join(out)

    def save(self, path, fmt: str):
        path = pathlib.Path(path)
        if fmt == "png":
            path.write_bytes(self.png())
        else:
            path.write_text(self.svg(), encoding="utf-8")
        return path


def _rgb(c):
    if isinstance(c, str):
        c = c.lstrip("#")
        return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))
    return tuple(int(v) for v in list(c)[:3])


def _hex(c):
    return "#%02x%02x%02x" % tuple(c)


def _blues(v):
    """0..1 -> white..blue (the lens table's scale)."""
    v = float(np.clip(np.nan_to_num(v), 0, 1))
    return (int(255 - v * (255 - 33)), int(255 - v * (255 - 102)), int(255 - v * (255 - 172)))


def _diverging(v):
    """-1..1 -> blue..white..red."""
    v = float(np.clip(np.nan_to_num(v), -1, 1))
    if v >= 0:
        return (255, int(255 - v * 200), int(255 - v * 200))
    return (int(255 + v * 200), int(255 + v * 200), 255)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(s) -> str:
    """``s`` with control characters written as escapes (``\\n``, ``\\x02``): visible in the
    picture, and valid in SVG (XML forbids most of them)."""
    return _CONTROL.sub(lambda m: "\\n" if m.group() == "\n" else f"\\x{ord(m.group()):02x}", str(s))


def _short(s, n=8):
    s = _printable(s)
    return s if len(s) <= n else s[:n - 1] + "…"


def _table(title, rows, cols, values, colour, cell_text=None, cw=58, ch=16):
    rows, cols = list(rows), list(cols)
    left, top = 90, 40
    pic = Picture(left + cw * len(cols) + 10, top + ch * len(rows) + 10, title)
    pic.text(4, 4, title, size=13)
    for j, c in enumerate(cols):
        pic.text(left + j * cw + 3, top - 16, _short(c, 9), (102, 102, 102))
    for i, r in enumerate(rows):
        pic.text(4, top + i * ch + 2, _short(r, 13), (102, 102, 102))
        for j in range(len(cols)):
            fill = colour(values[i, j])
            pic.rect(left + j * cw, top + i * ch, cw, ch, fill, (238, 238, 238))
            if cell_text is not None:
                dark = sum(fill) < 380
                pic.text(left + j * cw + 3, top + i * ch + 2, _short(cell_text(i, j), 8),
                         (255, 255, 255) if dark else (34, 34, 34), size=10)
    return pic


MAX_ROWS = 120


def _lens(w):
    """The top-1 token and its probability of each cell, from the result in Python (the view
    receives only the top-1 index and one metric; the picture needs no front end)."""
    res = w.result
    if res is None or res.top_probs.size == 0:
        return None
    n = min(res.top_probs.shape[1], MAX_ROWS)
    values = res.top_probs[:, :n, 0].T
    top1 = res.top_tokens[:, :n, 0]
    return _table(f"{type(w).__name__}: {res.model_name} · top-1 token and probability per layer",
                  [str(x) for x in res.tokens[:n]], list(res.layer_names), values, _blues,
                  lambda i, j: str(top1[j, i]))


def _patching(w):
    eff = np.asarray(w.effect)
    if eff.size == 0:
        return None
    scale = 1.0 if w.scale == "unit" else max(float(np.nanmax(np.abs(eff))), 1e-9)
    return _table(f"PatchingTable: {w.site} · effect of restoring each clean activation",
                  w.layer_names[:MAX_ROWS], w.columns, eff[:MAX_ROWS] / scale, _diverging,
                  lambda i, j: f"{eff[i, j]:.2f}")


def _layer_grid(w):
    counts = np.asarray(w.counts)
    if counts.size == 0:
        return None
    n_layers, _, g, _ = counts.shape
    per = counts.sum(axis=1).astype(float)
    cell = max(4, min(int(w.cell), 16))
    size, gap, cols = g * cell, 14, min(n_layers, 8)
    rows = -(-n_layers // cols)
    pic = Picture(cols * (size + gap) + gap, 30 + rows * (size + 20) + 6, f"LayerGrid: {w.title}")
    pic.text(4, 4, f"LayerGrid: {w.title} · documents per region", size=13)
    dominant = counts.argmax(axis=1)
    colors = [_rgb(c) if isinstance(c, str) and c.startswith("#") else (100, 100, 100) for c in w.label_colors]
    palette = np.array(colors or [(100, 100, 100)], float)
    for L in range(n_layers):
        x0, y0 = gap + (L % cols) * (size + gap), 30 + (L // cols) * (size + 20)
        pic.text(x0, y0, _short(w.layer_names[L] if L < len(w.layer_names) else L, 14), (102, 102, 102), size=10)
        v = np.sqrt(per[L] / max(float(per[L].max()), 1.0))[..., None]
        base = palette[dominant[L]]
        base[per[L] == 0] = (200, 200, 200)
        pic.pixels(x0, y0 + 14, np.round(255 - v * (255 - base)).astype(np.uint8), cell)
    return pic


def _graph(w):
    x, y = np.asarray(w.x, float), np.asarray(w.y, float)
    if x.size == 0:
        return None
    W, H, pad = 900, max(320, min(int(getattr(w, "height", 480) or 480), 900)), 30
    sx = (W - 2 * pad) / max(np.ptp(x), 1e-9)
    sy = (H - 2 * pad - 24) / max(np.ptp(y), 1e-9)
    s = min(sx, sy)
    px = pad + (x - x.min()) * s
    py = pad + 24 + (y - y.min()) * s
    W = int(px.max() + pad + 60)
    title = getattr(w, "title", "") or type(w).__name__
    pic = Picture(W, H, title)
    pic.text(4, 4, f"{type(w).__name__}: {title}", size=13)
    src, dst = np.asarray(w.edge_source), np.asarray(w.edge_target)
    if src.size:
        wt = np.abs(np.asarray(w.edge_weight, float))
        order = np.argsort(-wt)[:5000]
        ec = np.asarray(w.edge_color)
        top = max(float(wt.max()), 1e-9)
        for e in order[::-1]:
            c = tuple(ec[e][:3]) if ec.size else (170, 170, 170)
            pic.line(px[src[e]], py[src[e]], px[dst[e]], py[dst[e]], c, 0.5 + 3 * wt[e] / top)
    size = np.asarray(w.size, float) if np.asarray(w.size).size else np.full(x.size, 12.0)
    col = np.asarray(w.color)
    for i in range(x.size):
        pic.circle(px[i], py[i], min(size[i], 40) / 2, tuple(col[i][:3]) if col.size else (80, 80, 160))
    if len(w.label) == x.size and x.size <= 300:
        for i in range(x.size):
            pic.text(px[i] + 4, py[i] + 4, _short(w.label[i], 14), (68, 68, 68), size=9)
    return pic


def _head_map(w):
    x, y = np.asarray(w.x, float), np.asarray(w.y, float)
    if x.size == 0:
        return None
    W = H = 520
    pad = 30
    s = min((W - 2 * pad) / max(np.ptp(x), 1e-9), (H - 2 * pad - 24) / max(np.ptp(y), 1e-9))
    layers = np.asarray(w.layer)
    top = max(int(layers.max()), 1) if layers.size else 1
    pic = Picture(W, H, "HeadMap")
    pic.text(4, 4, f"HeadMap: {w.model_name} · heads by attention similarity, colour = layer", size=13)
    for i in range(x.size):
        v = layers[i] / top
        pic.circle(pad + (x[i] - x.min()) * s, pad + 24 + (y[i] - y.min()) * s, 5,
                   (int(68 + 185 * v), int(1 + 130 * v), int(84 + 20 * (1 - v))))
    return pic


def _token_heat(w):
    vals = np.asarray(w.values, float)
    if vals.size == 0:
        return None
    top = max(float(np.nanmax(np.abs(vals))), 1e-9)
    W, lh = 900, 22
    pic = Picture(W, 40, w.title)
    pic.text(4, 4, f"TokenHeat: {w.title} · {w.value_name}", size=13)
    x, y = 4, 26
    for tok, v in zip(w.tokens, vals):
        text = _printable(tok)
        tw = 7 * len(text) + 6
        if x + tw > W - 4:
            x, y = 4, y + lh
        pic.rect(x, y, tw, lh - 4, _diverging(v / top))
        pic.text(x + 3, y + 2, text)
        x += tw + 2
    pic.height = y + lh + 4
    return pic


def picture(widget) -> Picture | None:
    """A :class:`Picture` of ``widget``'s current data, or None for views without one."""
    from .graph_view import GraphView
    from .head_map import HeadMap
    from .layer_grid import LayerGrid
    from .lens_table import LensTable
    from .patching_table import PatchingTable
    from .token_heat import TokenHeat

    for cls, fn in ((LensTable, _lens), (PatchingTable, _patching), (LayerGrid, _layer_grid),
                    (GraphView, _graph), (HeadMap, _head_map), (TokenHeat, _token_heat)):
        if isinstance(widget, cls):
            return fn(widget)
    return None
