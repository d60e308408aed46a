"""Sharing views outside a live notebook: one standalone HTML file, and pictures.

:func:`save_html` writes one HTML file holding the views' JavaScript and their current data
(binary buffers base64): it opens from disk in a browser, offline, with no kernel. Views that
share a :class:`~mri_widgets.Selection` stay linked in the page (one selection model), hover,
pinning, zoom and selection work; what needs Python (the ablate buttons, example texts fetched on
demand, recomputing on a new prompt) answers with a note instead. The page's host
(``js/src/share/host.js``) implements the anywidget model interface over the saved state.

Baked commands: a view may save answers to one of its commands with the page
(``MRIWidget._baked_commands``, e.g. the LensTable's ``cell_details`` of every cell, so its hover
shows the top-k offline). An answer is either whole (the same for any arguments) or, from
:func:`baked_rows`, one row per cell of a grid: the host picks the rows of the cells a call asks
for. Other commands still answer with the "no kernel" note.
"""

from __future__ import annotations

import base64
import html
import json
import pathlib
from typing import Iterable

import anywidget
import ipywidgets as ipw
import numpy as np
from ipywidgets.widgets.widget import _remove_buffers

from .transport import encode_array, encode_tree

__all__ = ["save_html", "collect_views", "export_state", "baked_rows", "string_table"]

#: traits of the saved state that the page does not need (anywidget's module text is saved once per view kind)
_DROP = {"_esm", "_css", "_anywidget_id", "layout", "_dom_classes", "tabbable", "tooltip",
         "_model_module", "_model_module_version", "_model_name", "_view_module", "_view_module_version",
         "_view_name", "_view_count"}


def collect_views(items: Iterable) -> list:
    """The mri_widgets views in ``items``, in order; containers (the Explorer, any ipywidgets
    Box) are searched through their ``children``. Each view appears once."""
    from .base import MRIWidget

    out, seen = [], set()

    def walk(x):
        if isinstance(x, MRIWidget):
            if id(x) not in seen:
                seen.add(id(x))
                out.append(x)
        elif isinstance(x, ipw.Widget) and hasattr(x, "children"):
            for c in x.children:
                walk(c)
        elif isinstance(x, (list, tuple)):
            for c in x:
                walk(c)
        elif not isinstance(x, ipw.Widget):
            raise TypeError(f"save_html takes mri_widgets views (or boxes of them), got {type(x).__name__}")

    walk(list(items))
    return out


def export_state(widget: ipw.Widget) -> dict:
    """``{"state": JSON state, "buffers": [{"path", "data": base64}], "commands": {...}}`` of one
    widget model, whole (never split into pieces: the page has no kernel to fetch them from);
    ``commands`` holds the answers the view's commands give in the page (see :func:`baked_rows`),
    each ``{"spec": JSON, "buffers": [...]}`` like the state."""
    state = anywidget.AnyWidget.get_state(widget) if isinstance(widget, anywidget.AnyWidget) else widget.get_state()
    state = {k: v for k, v in state.items() if k not in _DROP}
    out = _with_buffers("state", state)
    baked = widget._baked_commands() if hasattr(widget, "_baked_commands") else {}
    if baked:
        out["commands"] = {name: _with_buffers("spec", spec) for name, spec in baked.items()}
    return out


def _with_buffers(key: str, value: dict) -> dict:
    """``{key: JSON value, "buffers": [{"path", "data": base64}]}``: binary buffers out of ``value``."""
    value, paths, buffers = _remove_buffers(value)
    return {key: value, "buffers": [{"path": p, "data": base64.b64encode(memoryview(b).cast("B")).decode("ascii")}
                                    for p, b in zip(paths, buffers)]}


def string_table(strings, index) -> dict:
    """A table of strings for a baked answer: ``strings`` once each, ``index`` an int array of
    indices into them; the page's host expands it into nested lists of strings (one list per row)."""
    strings = [str(x) for x in strings]
    index = np.asarray(index)
    if index.ndim < 1:
        raise ValueError("index of a string table must be an array with one row per cell")
    if index.size and (index.min() < 0 or index.max() >= len(strings)):
        raise ValueError(f"index of a string table must lie in [0, {len(strings)}), "
                         f"got values in [{index.min()}, {index.max()}]")
    dtype = np.uint16 if len(strings) < 2 ** 16 else np.int32
    return {"mri_strings": strings, "index": encode_array(index.astype(dtype))}


def baked_rows(result: dict, *, arg: str, grid, echo: str | None = None) -> dict:
    """A command's answer for every cell of a grid, saved with a page (``MRIWidget._baked_commands``).

    ``result`` is what the command returns when asked for all cells of ``grid`` in row-major order
    (``(a, b)`` is row ``a * grid[1] + b``): each array whose first axis has one entry per cell,
    and each :func:`string_table`, is split by rows; other values are the same for every call. In
    the page, a call's argument ``arg`` (a list of cells, each a list of ``len(grid)`` ints) picks
    its rows; ``echo`` names a field of the answer that repeats that list.
    """
    grid = [int(g) for g in grid]
    n = int(np.prod(grid)) if grid else 0
    for key, v in result.items():
        rows = v.shape[0] if isinstance(v, np.ndarray) and v.ndim else None
        if isinstance(v, dict) and "mri_strings" in v:
            rows = v["index"]["shape"][0]
        if rows is not None and rows != n:
            raise ValueError(f"baked answer field {key!r} has {rows} rows, the grid {grid} has {n} cells")
    return {"arg": str(arg), "grid": grid, "echo": echo, "result": encode_tree(result)}


def _script_json(obj) -> str:
    """JSON safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="mri_widgets {version}">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; background: #fff; }}
.mri-share-head {{ margin: 0 0 12px 0; }}
.mri-share-head h1 {{ font-size: 18px; margin: 0 0 4px 0; }}
.mri-share-note {{ font-size: 12px; color: #666; }}
.mri-share-view {{ margin: 0 0 20px 0; }}
.mri-share-title {{ font-size: 12px; color: #666; margin: 0 0 4px 0; }}
</style>
<style>
{css}
</style>
</head>
<body>
<div class="mri-share-head"><h1>{title}</h1>
<div class="mri-share-note">Saved from mri_widgets {version}. Hover, pin, zoom and selection work (linked views follow each
other); what needs Python, such as the ablate buttons, example texts fetched on demand or a new prompt, is not available
in this file: open the notebook for it.</div></div>
<div id="mri-share-views"></div>
<script type="application/json" id="mri-share-data">{data}</script>
<script type="module">
{host}
</script>
</body>
</html>
"""


def save_html(path, *views, title: str | None = None) -> pathlib.Path:
    """Write ``views`` (mri_widgets views, or boxes such as the Explorer) into one standalone HTML file.

    The file holds each view's JavaScript and its current data: it opens from disk in any modern
    browser, offline (no CDN, no kernel). Views sharing a selection stay linked in the page.
    Returns the path written.

    Examples
    --------
    >>> mw.save_html("lens.html", lens, graph)        # doctest: +SKIP
    """
    from .._version import __version__
    from .base import STATIC

    found = collect_views(views)
    if not found:
        raise ValueError("save_html needs at least one view, e.g. mw.save_html('page.html', w)")
    models, esm, shown = {}, {}, []
    for w in found:
        if w._view not in esm:
            esm[w._view] = (STATIC / f"{w._view}.js").read_text(encoding="utf-8")
        models[w.model_id] = export_state(w)
        sel = w.selection
        if sel is not None and sel.model_id not in models:
            models[sel.model_id] = export_state(sel)
        shown.append({"id": w.model_id, "view": w._view, "title": type(w).__name__})
    page = _PAGE.format(
        version=__version__,
        title=html.escape(title if title is not None else " · ".join(dict.fromkeys(v["title"] for v in shown))),
        css=(STATIC / "mri.css").read_text(encoding="utf-8").replace("</", "<\\/"),
        data=_script_json({"models": models, "views": shown, "esm": esm}),
        host=(STATIC / "share_host.js").read_text(encoding="utf-8").replace("</script", "<\\/script"),
    )
    path = pathlib.Path(path)
    path.write_text(page, encoding="utf-8")
    return path
