"""The base class of every view: arrays as binary buffers, the shared selection, on-demand data."""

from __future__ import annotations

import pathlib
import traceback
from typing import Any, Callable

import anywidget
import ipywidgets as ipw
import traitlets as t
from ipywidgets.widgets.widget import _remove_buffers

from .selection import SELECTION_KEYS, Selection
from .transport import array_serialization, encode_tree

__all__ = ["MRIWidget", "STATIC", "rpc"]

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"


def rpc(fn: Callable) -> Callable:
    """Mark a method as callable from the front end (``model.rpc(name, args)`` in js/src/lib/rpc.js)."""
    fn._mri_rpc = True
    return fn


class MRIWidget(anywidget.AnyWidget):
    """Base of all mri_widgets views.

    Subclasses set ``_view = "lens_table"`` (the bundle ``static/lens_table.js``) and fill
    :attr:`data` with a dict of numbers, strings and arrays; arrays travel as binary buffers.

    Selection: ``selection`` is the shared :class:`Selection`. The front end sets it directly
    when it can reach that widget model (JupyterLab, Notebook 7, VS Code); where it cannot
    (Colab's separate output frames) it writes the view's own ``_sel`` mirror instead and Python
    forwards it, and Python pushes every selection change into each view's ``_sel``.
    """

    _view: str = ""
    _css = STATIC / "mri.css"

    selection = t.Instance(Selection).tag(sync=True, **ipw.widget_serialization)
    _sel = t.Dict().tag(sync=True)
    data = t.Dict().tag(sync=True, **array_serialization)
    error = t.Unicode("").tag(sync=True)

    def __init__(self, *, selection: Selection | None = None, **kwargs: Any):
        if selection is not None and not isinstance(selection, Selection):
            raise TypeError(f"selection must be a mri_widgets.Selection, got {type(selection).__name__}")
        super().__init__(selection=selection if selection is not None else Selection(), **kwargs)
        self.on_msg(self._on_custom_msg)

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_view"):
            cls._esm = STATIC / f"{cls._view}.js"  # anywidget reads the file in its __init_subclass__
        super().__init_subclass__(**kwargs)

    # ---- selection -------------------------------------------------------------------------
    @t.observe("selection")
    def _rewire_selection(self, change):
        old = change["old"]
        if old is not None:
            old.unobserve(self._push_sel, names=list(SELECTION_KEYS))
        change["new"].observe(self._push_sel, names=list(SELECTION_KEYS))
        self._push_sel()

    def _push_sel(self, change=None):
        self._sel = self.selection.to_dict()

    @t.observe("_sel")
    def _pull_sel(self, change):
        new = change["new"] or {}
        diff = {k: v for k, v in new.items() if k in SELECTION_KEYS and getattr(self.selection, k) != v}
        if diff:
            self.selection.update(**diff)

    def select(self, **values) -> None:
        """Set the shared selection from Python (same as ``self.selection.update``)."""
        self.selection.update(**values)

    # ---- messages from the front end -------------------------------------------------------
    def _on_custom_msg(self, widget, content, buffers):
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "request_state":
            # Colab drops the binary buffers of the initial state: send them again.
            self.send_state(list(content.get("keys") or ["data"]))
        elif kind == "rpc":
            self._answer_rpc(content)

    def _answer_rpc(self, content):
        name, call_id = content.get("name"), content.get("id")
        fn = getattr(self, str(name), None)
        reply: dict = {"type": "rpc_reply", "id": call_id}
        if fn is None or not getattr(fn, "_mri_rpc", False):
            reply["error"] = f"unknown call {name!r}"
            self.send(reply)
            return
        try:
            result = fn(**(content.get("args") or {}))
            state, paths, buffers = _remove_buffers({"result": encode_tree(result)})
            reply.update(result=state["result"] if "result" in state else None, buffer_paths=paths)
            self.send(reply, buffers)
        except Exception as e:  # report to the view instead of killing the comm
            reply["error"] = f"{type(e).__name__}: {e}"
            reply["traceback"] = traceback.format_exc(limit=5)
            self.send(reply)

    # ---- helpers for subclasses ------------------------------------------------------------
    def _set_data(self, data: dict) -> None:
        self.error = ""
        self.data = data
