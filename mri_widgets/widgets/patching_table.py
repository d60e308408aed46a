"""PatchingTable: activation patching (causal tracing) as a layer x token (or head) table."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import traitlets as t

from .._checks import check_bool, check_choice, check_int
from ..analysis.patching import PatchingError, PatchingResult
from .base import MRIWidget, NDArray
from .selection import Selection

__all__ = ["PatchingTable", "SCALES", "patching_payload"]

#: colour scales: saturate at +-1 (the clean run) or at the largest |effect|
SCALES = ("unit", "max")


class PatchingTable(MRIWidget):
    """The effect of restoring each clean activation into a corrupted run, as a live table.

    Rows are layers (the site's layer names), columns are the corrupted prompt's tokens
    (``kind="position"``) or attention heads (``kind="head"``, site ``"z"``). A cell's colour is
    its normalised effect on a diverging scale: white at 0 (the corrupted run), red towards 1
    (the clean run) and beyond, blue below 0. Hovering shows the layer, the token (or head), the
    effect, the patched metric and the clean and corrupted metrics; clicking pins the cell and
    sets the shared selection; arrow keys move it; selection changes from Python move it.

    Selection: ``layer`` is the site's layer index of the row (``resid``: 0 = embeddings, ``l`` =
    after block ``l``, as in :class:`LensTable`; other sites: the block), plus ``position`` (the
    patched token position) or ``head``.

    Parameters
    ----------
    source : PatchingResult or LoadedModel
        A result of :func:`mri_widgets.analysis.patching.patching`, or a model: then ``clean``
        and ``corrupt`` are required and ``patching`` is run with the keyword arguments below.
    clean, corrupt : str, optional
        The two prompts (with a model only).
    site, answer, wrong, metric, positions, batch_size
        Passed to ``patching`` (with a model only).
    transpose : bool
        Tokens (or heads) as rows and layers as columns.
    scale : {"unit", "max"}
        The colour saturates at +-1 or at the largest |effect|.
    height : int
        Height of the table in pixels.
    selection : Selection, optional

    Examples
    --------
    >>> table = mri_widgets.PatchingTable(result, selection=sel)          # a PatchingResult
    >>> table = mri_widgets.PatchingTable(lm, "The Eiffel Tower is in", "The Colosseum is in",
    ...                                   answer=" Paris", wrong=" Rome")
    >>> table.select_cell(3, 5)          # what a click on row 3, column 5 does
    >>> table.selected                   # (row, column) the selection points at, or None
    """

    _view = "patching_table"

    # ---- parameters (set from Python or from the view's toolbar) ----------------------------
    #: tokens (or heads) as rows and layers as columns
    transpose = t.Bool(False).tag(sync=True)
    #: height of the table in px (>= 1)
    height = t.Int(480).tag(sync=True)
    #: colour scale: one of :data:`SCALES`
    scale = t.Unicode("unit").tag(sync=True)

    # ---- the result shown (set by Python only) ------------------------------------------------
    #: name of the model
    model_name = t.Unicode("").tag(sync=True)
    #: the patched site (``"resid"``, ``"attn_out"``, ``"mlp_out"``, ``"mlp"``, ``"z"``)
    site = t.Unicode("").tag(sync=True)
    #: ``"position"`` (columns are token positions) or ``"head"`` (columns are heads)
    kind = t.Unicode("position").tag(sync=True)
    #: the metric: ``"logit_diff"``, ``"logit"`` or ``"prob"``
    metric = t.Unicode("").tag(sync=True)
    #: the token the metric favours, or None
    answer = t.Unicode(None, allow_none=True).tag(sync=True)
    #: the token ``logit_diff`` subtracts, or None
    wrong = t.Unicode(None, allow_none=True).tag(sync=True)
    #: the metric of the unpatched clean run (effect 1)
    clean_metric = t.Float(0.0).tag(sync=True)
    #: the metric of the unpatched corrupted run (effect 0)
    corrupt_metric = t.Float(0.0).tag(sync=True)
    #: (rows,) int32 the site's layer index of each row (``selection.layer``)
    layers = NDArray("int32", ndim=1).tag(sync=True)
    #: a label per row
    layer_names = t.List(t.Unicode()).tag(sync=True)
    #: a label per column: tokens of the corrupted prompt or ``"h0"``, ``"h1"``, ...
    columns = t.List(t.Unicode()).tag(sync=True)
    #: (cols,) int32 token position of each column (``selection.position``); empty for heads
    positions = NDArray("int32", ndim=1).tag(sync=True)
    #: tokens of the clean prompt
    clean_tokens = t.List(t.Unicode()).tag(sync=True)
    #: tokens of the corrupted prompt
    corrupt_tokens = t.List(t.Unicode()).tag(sync=True)
    #: (rows, cols) float32 normalised effect: 0 = corrupted run, 1 = clean run
    effect = NDArray("float32", ndim=2).tag(sync=True)
    #: (rows, cols) float32 the patched metric itself
    raw = NDArray("float32", ndim=2).tag(sync=True)

    def __init__(self, source, clean: Optional[str] = None, corrupt: Optional[str] = None, *, site: str = "resid",
                 answer: Optional[str] = None, wrong: Optional[str] = None, metric: str = "logit_diff",
                 positions=None, batch_size: Optional[int] = None, transpose: bool = False, scale: str = "unit",
                 height: int = 480, selection: Optional[Selection] = None):
        if isinstance(source, PatchingResult):
            given = [n for n, v in (("clean", clean), ("corrupt", corrupt), ("answer", answer), ("wrong", wrong),
                                    ("positions", positions), ("batch_size", batch_size)) if v is not None]
            if given or site != "resid" or metric != "logit_diff":
                extra = given + [n for n, v, d in (("site", site, "resid"), ("metric", metric, "logit_diff")) if v != d]
                raise TypeError(f"PatchingTable got a PatchingResult and {', '.join(extra)}: the result is already "
                                "computed; pass only the result (and transpose, scale, height, selection)")
            result = source
        else:
            if isinstance(source, (str, bytes, np.ndarray, list, tuple, dict)) or source is None:
                raise TypeError("PatchingTable shows a PatchingResult, or runs patching on a model: "
                                "PatchingTable(result) or PatchingTable(lm, clean, corrupt, answer=..., wrong=...); "
                                f"got {type(source).__name__}")
            for name, v in (("clean", clean), ("corrupt", corrupt)):
                if not isinstance(v, str):
                    raise TypeError(f"{name} must be a prompt (str) when PatchingTable is given a model, "
                                    f"got {type(v).__name__}: PatchingTable(lm, clean, corrupt, answer=..., wrong=...)")
            from ..analysis.patching import patching  # lazily: the analysis may be heavier than the widget

            result = patching(source, clean, corrupt, site=site, answer=answer, wrong=wrong, metric=metric,
                              positions=positions, batch_size=batch_size)
        payload = patching_payload(result)
        super().__init__(selection=selection, transpose=check_bool(transpose, "transpose"),
                         scale=scale, height=height)
        self._result = result
        self._set_data(payload)

    @classmethod
    def from_result(cls, result: PatchingResult, *, transpose: bool = False, scale: str = "unit", height: int = 480,
                    selection: Optional[Selection] = None) -> "PatchingTable":
        """A table showing an existing :class:`~mri_widgets.analysis.patching.PatchingResult`."""
        if not isinstance(result, PatchingResult):
            raise TypeError(f"result must be a PatchingResult (from mri_widgets.analysis.patching.patching), "
                            f"got {type(result).__name__}")
        return cls(result, transpose=transpose, scale=scale, height=height, selection=selection)

    # ---- results and selection -----------------------------------------------------------
    @property
    def result(self) -> PatchingResult:
        """The :class:`~mri_widgets.analysis.patching.PatchingResult` shown."""
        return self._result

    def cell_selection(self, row: int, col: int) -> dict:
        """The selection that a click on cell (``row``, ``col``) sets: ``{layer, position}`` or ``{layer, head}``."""
        rows, cols = self.effect.shape
        row = check_int(row, "row", min=0, max=rows - 1, error=IndexError)
        col = check_int(col, "col", min=0, max=cols - 1, error=IndexError)
        out = {"layer": int(self.layers[row])}
        if self.kind == "head":
            out["head"] = col
        else:
            out["position"] = int(self.positions[col])
        return out

    def select_cell(self, row: int, col: int) -> None:
        """Set the shared selection to cell (``row``, ``col``), as a click on it does."""
        self.selection.update(**self.cell_selection(row, col))

    @property
    def selected(self) -> Optional[tuple]:
        """(row, column) of the cell the shared selection points at, or None."""
        sel = self.selection
        if sel.layer is None:
            return None
        rows = np.flatnonzero(self.layers == sel.layer)
        if self.kind == "head":
            cols = [sel.head] if sel.head is not None and 0 <= sel.head < len(self.columns) else []
        else:
            cols = np.flatnonzero(self.positions == sel.position) if sel.position is not None else []
        if len(rows) == 0 or len(cols) == 0:
            return None
        return int(rows[0]), int(cols[0])

    # ---- validation --------------------------------------------------------------------------
    @t.validate("scale")
    def _check_scale(self, proposal):
        return check_choice(proposal["value"], SCALES, "scale", error=PatchingError)

    @t.validate("height")
    def _check_height(self, proposal):
        return check_int(proposal["value"], "height", min=1, error=PatchingError, hint=" (px)")


def _strings(values, name: str, n: Optional[int] = None) -> list:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"PatchingResult.{name} must be a list of strings, got one {type(values).__name__}")
    try:
        out = [str(x) for x in values]
    except TypeError:
        raise TypeError(f"PatchingResult.{name} must be a list of strings, got {type(values).__name__}") from None
    if n is not None and len(out) != n:
        raise PatchingError(f"PatchingResult.{name} has {len(out)} labels for {n} {'rows' if name == 'layer_names' else 'columns'}")
    return out


def _metric_value(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"PatchingResult.{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise PatchingError(f"PatchingResult.{name} is {v}: the unpatched run gave no finite metric")
    return v


def patching_payload(res: PatchingResult) -> dict:
    """What the view receives (checked): labels as lists, numbers as float32 / int32 arrays.

    Raises TypeError for a value of the wrong type and PatchingError for inconsistent shapes or
    an empty result. For ``kind="position"`` with no ``positions``, column ``j`` is position ``j``.
    """
    if not isinstance(res, PatchingResult):
        raise TypeError(f"expected a PatchingResult, got {type(res).__name__}")
    effect = np.asarray(res.effect)
    raw = np.asarray(res.raw)
    for name, a in (("effect", effect), ("raw", raw)):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"PatchingResult.{name} must be a numeric array, got dtype {a.dtype}")
        if a.ndim != 2:
            raise PatchingError(f"PatchingResult.{name} must be a (layers, columns) array, got shape {a.shape}")
    if effect.size == 0:
        raise PatchingError(f"the PatchingResult is empty (shape {effect.shape}): patch at least one layer and one "
                            "position (or head)")
    if raw.shape != effect.shape:
        raise PatchingError(f"PatchingResult.raw has shape {raw.shape}, effect {effect.shape}: they must match")
    rows, cols = effect.shape
    if res.kind not in ("position", "head"):
        raise PatchingError(f"PatchingResult.kind must be 'position' or 'head', got {res.kind!r}")
    layers = np.asarray(res.layers)
    if layers.shape != (rows,) or (layers.size and layers.dtype.kind not in "iu"):
        raise PatchingError(f"PatchingResult.layers must hold {rows} integer layer indices (one per row), "
                            f"got shape {layers.shape} of {layers.dtype}")
    positions = np.asarray(res.positions if res.positions is not None else [], dtype=np.int64).reshape(-1)
    if res.kind == "position":
        if positions.size == 0:
            positions = np.arange(cols)
        if positions.shape != (cols,):
            raise PatchingError(f"PatchingResult.positions has {positions.size} positions for {cols} columns")
    else:
        positions = np.zeros(0, np.int64)
    return {
        "model_name": str(res.model_name or ""),
        "site": str(res.site),
        "kind": res.kind,
        "metric": str(res.metric),
        "answer": None if res.answer is None else str(res.answer),
        "wrong": None if res.wrong is None else str(res.wrong),
        "clean_metric": _metric_value(res.clean_metric, "clean_metric"),
        "corrupt_metric": _metric_value(res.corrupt_metric, "corrupt_metric"),
        "layers": layers.astype(np.int32),
        "layer_names": _strings(res.layer_names, "layer_names", rows),
        "columns": _strings(res.columns, "columns", cols),
        "positions": positions.astype(np.int32),
        "clean_tokens": _strings(res.clean_tokens, "clean_tokens"),
        "corrupt_tokens": _strings(res.corrupt_tokens, "corrupt_tokens"),
        "effect": effect.astype(np.float32),
        "raw": raw.astype(np.float32),
    }
