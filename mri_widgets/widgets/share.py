"""Sharing views outside a live notebook: one standalone HTML file, and pictures.

:func:`save_html` writes one HTML file holding the views' JavaScript and their current data
(binary buffers base64): it opens from disk in a browser, offline, with no kernel. Views that
share a :class:`~mri_widgets.Selection` stay linked in the page (one selection model), hover,
pinning, zoom and selection work; what needs Python (the ablate buttons, example texts fetched on
demand, recomputing on a new prompt) answers with a note instead. The page's host
(``js/src/share/host.js``) implements the anywidget model interface over the saved state.
"""

from __future__ import annotations

import base64
import html
import json
import pathlib
from typing import Iterable

import anywidget
import ipywidgets as ipw
from ipywidgets.widgets.widget import _remove_buffers

__all__ = ["save_html", "collect_views", "export_state"]

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
    """``{"state": JSON state, "buffers": [{"path", "data": base64}]}`` of one widget model,
    whole (never split into pieces: the page has no kernel to fetch them from)."""
    state = anywidget.AnyWidget.get_state(widget) if isinstance(widget, anywidget.AnyWidget) else widget.get_state()
    state = {k: v for k, v in state.items() if k not in _DROP}
    state, paths, buffers = _remove_buffers(state)
    return {"state": state, "buffers": [{"path": p, "data": base64.b64encode(memoryview(b).cast("B")).decode("ascii")}
                                        for p, b in zip(paths, buffers)]}


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
