"""LayerGrid: small multiples of every layer's region heatmap (LLM-MRI's heatmaps, linked)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import traitlets as t

from .._checks import check_int
from .base import MRIWidget, NDArray, command
from .graph_view import CATEGORICAL
from .selection import Selection

__all__ = ["LayerGrid", "MODES", "sparse_counts", "dense_counts"]

#: what a cell's colour shows
MODES = ("label", "all", "diff")


class LayerGrid(MRIWidget):
    """One heatmap per layer: how many documents land in each region of the grid.

    Parameters
    ----------
    areas : ActivationAreas
    mode : ``"label"``: documents of ``label`` per region (all documents when ``label`` is None);
        ``"all"``: every label at once, colour = the region's dominant label, intensity = its
        document count; ``"diff"``: ``labels = (a, b)``, the share of a's documents minus the share
        of b's documents in each region (red: more a, blue: more b).
    label : label name for ``mode="label"``.
    labels : two label names for ``mode="diff"`` (default: the first two labels).
    cell : size of a grid cell in px (default: about 120 px per heatmap).
    selection : the shared :class:`Selection`. A click on a region sets ``layer`` and
        ``region``; the selected region is outlined in red, and in every layer the regions
        holding its documents are outlined in black (the view asks :meth:`region_members` for
        them when a region is selected).

    Notes
    -----
    Row 0 of a grid (the smallest value of the second reduced axis) is drawn at the bottom. The
    axes of different layers are unrelated (each layer is reduced on its own). Hover a region for
    its counts per label and a few example texts. The mode and labels can also be changed in the
    view's toolbar (the ``mode``, ``label`` and ``labels`` traits follow).

    What is sent: only the non-empty regions (``cells``, ``cell_counts``: sparse counts, a
    tenth or less of the dense grid on large grids); :attr:`counts` is the dense array, rebuilt
    by the view. The region of each document is not sent: the view fetches the members of a
    selected region on demand.
    """

    _view = "layer_grid"

    # ---- parameters (set from Python or from the view's toolbar) ----------------------------
    #: what a cell's colour shows: one of :data:`MODES`
    mode = t.Unicode("label").tag(sync=True)
    #: label shown in ``mode="label"`` (None: all documents)
    label = t.Unicode(None, allow_none=True).tag(sync=True)
    #: the two labels compared in ``mode="diff"``
    labels = t.List(t.Unicode()).tag(sync=True)
    #: size of a grid cell in px (>= 2)
    cell = t.Int(12).tag(sync=True)

    # ---- the data shown (set by Python only) --------------------------------------------------
    #: (n_cells,) the non-empty regions, as ``layer_index * grid**2 + region``, increasing
    cells = NDArray(("int32",), ndim=1).tag(sync=True)
    #: (n_cells, n_labels) documents per label in each of :attr:`cells` (uint16, int32 past 65,535)
    cell_counts = NDArray(("uint16", "int32"), ndim=2).tag(sync=True)
    #: label names, in the corpus's order
    label_names = t.List(t.Unicode()).tag(sync=True)
    #: one colour per label
    label_colors = t.List(t.Unicode()).tag(sync=True)
    #: documents per label
    label_totals = t.List(t.Int()).tag(sync=True)
    #: name of each layer (column headers)
    layer_names = t.List(t.Unicode()).tag(sync=True)
    #: index of each layer in the model (what ``selection.layer`` holds)
    layer_ids = t.List(t.Int()).tag(sync=True)
    #: grid size (regions per axis)
    grid = t.Int(1).tag(sync=True)
    #: text above the heatmaps
    title = t.Unicode("").tag(sync=True)

    def __init__(self, areas, *, mode: str = "label", label: Optional[str] = None,
                 labels: Optional[Sequence[str]] = None, cell: Optional[int] = None,
                 selection: Optional[Selection] = None):
        if not hasattr(areas, "counts") or not hasattr(areas, "region_ids"):
            raise TypeError(f"areas must be a mri_widgets.ActivationAreas, got {type(areas).__name__}")
        self.areas = areas
        names = list(areas.corpus.label_names)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if label is not None:
            areas.corpus.label_id(label)  # KeyError naming the known labels
        if labels is None:
            labels = names[:2] if len(names) >= 2 else names * 2
        elif isinstance(labels, str) or len(labels) != 2:
            raise ValueError(f"labels must be two label names (a, b) for mode='diff', got {labels!r}")
        for lab in labels:
            areas.corpus.label_id(lab)
        super().__init__(selection=selection, mode=mode, label=label, labels=list(labels))
        g = areas.grid_size
        cell = check_int(cell, "cell", min=2, hint=" (px)") if cell is not None else max(5, min(24, 120 // g))
        cells, cell_counts = sparse_counts(areas.counts())
        self._set_data({
            "cells": cells,
            "cell_counts": cell_counts,
            "label_names": names,
            "label_colors": [CATEGORICAL[i % len(CATEGORICAL)] for i in range(len(names))],
            "label_totals": [int(v) for v in areas.corpus.counts.values()],
            "layer_names": list(areas.layers),
            "layer_ids": [int(l) for l in areas.layer_ids],
            "grid": int(g),
            "cell": cell,
            "title": f"{areas.site} regions \u00b7 pool {areas.pool} \u00b7 {areas.reduction} \u00b7 "
                     f"{len(areas.corpus)} documents",
        })

    @classmethod
    def from_counts(cls, regions, labels, *, grid: int, layer_names=None, label_names=None, texts=None,
                    layer_ids=None, title: Optional[str] = None, **kwargs) -> "LayerGrid":
        """A LayerGrid from region assignments made elsewhere, without a model.

        Parameters
        ----------
        regions : (n_docs, n_layers) ints, each document's region per layer, ``row * grid + col``
            in ``0 .. grid**2 - 1`` (row 0 is drawn at the bottom).
        labels : (n_docs,) label of each document.
        grid : regions per axis.
        layer_names : a name per layer (default ``"layer 0"``, ...).
        label_names : order of the labels (default as :class:`~mri_widgets.Corpus` sorts them).
        texts : the documents' texts, for the hover examples (default ``"document i"``).
        layer_ids : what ``selection.layer`` holds for each layer (default ``0 .. n_layers - 1``).
        title : text above the heatmaps.
        **kwargs : ``mode``, ``label``, ``labels``, ``cell``, ``selection`` as in the constructor.

        The regions become an :class:`~mri_widgets.ActivationAreas`
        (:meth:`~mri_widgets.ActivationAreas.from_regions`) at :attr:`areas`; the view's counts,
        linked outlines and examples (in document order) work as with a model.
        """
        from ..analysis.areas import ActivationAreas
        from ..corpus import Corpus

        reg = np.asarray(regions)
        if reg.ndim != 2:
            raise ValueError(f"regions has shape {reg.shape}; expected (n_docs, n_layers): each document's region "
                             "per layer")
        if isinstance(labels, str) or len(labels) != reg.shape[0]:
            raise ValueError(f"labels must have one label per document ({reg.shape[0]}, the rows of regions), "
                             f"got {'a string' if isinstance(labels, str) else len(labels)}")
        if texts is None:
            texts = [f"document {i}" for i in range(reg.shape[0])]
        elif isinstance(texts, str) or len(texts) != reg.shape[0]:
            raise ValueError(f"texts must have one text per document ({reg.shape[0]}, the rows of regions)")
        corpus = Corpus(list(texts), list(labels), label_names=label_names)
        areas = ActivationAreas.from_regions(corpus, reg.T, grid, layer_ids=layer_ids, layer_names=layer_names)
        w = cls(areas, **kwargs)
        w.title = f"regions \u00b7 {len(corpus)} documents" if title is None else str(title)
        return w

    @t.validate("mode")
    def _check_mode(self, proposal):
        v = proposal["value"]
        if v not in MODES:
            raise t.TraitError(f"unknown mode {v!r}; choose one of {MODES}")
        return v

    @t.validate("label")
    def _check_label(self, proposal):
        v = proposal["value"]
        if v is not None and v not in self.areas.corpus.label_names:
            raise t.TraitError(f"unknown label {v!r}; labels are {self.areas.corpus.label_names} (or None for all)")
        return v

    @t.validate("labels")
    def _check_labels(self, proposal):
        v = list(proposal["value"])
        names = self.areas.corpus.label_names
        if len(v) != 2:
            raise t.TraitError(f"labels must be two label names (a, b) for mode='diff', got {v!r}")
        bad = [x for x in v if x not in names]
        if bad:
            raise t.TraitError(f"unknown labels {bad}; labels are {names}")
        return v

    @t.validate("cell")
    def _check_cell(self, proposal):
        return check_int(proposal["value"], "cell", min=2, error=t.TraitError, hint=" (px)")

    @property
    def counts(self) -> np.ndarray:
        """(n_layers, n_labels, grid, grid) documents per region and label (dense; the view gets it sparse)."""
        return dense_counts(self.cells, self.cell_counts, len(self.layer_ids), self.grid)

    @property
    def whole(self) -> dict:
        """The view's whole content: :attr:`data` with the dense counts and every document's region
        (``regions``: (n_layers, n_docs)) instead of the sparse counts (for size comparisons)."""
        d = {k: v for k, v in self.data.items() if k not in ("cells", "cell_counts")}
        return {**d, "counts": self.counts, "regions": np.asarray(self.areas.region_ids)}

    @command
    def region_members(self, layer: int, region: int) -> dict:
        """The documents of one region and where they are in every layer.

        ``layer`` is a model layer index (as in ``selection.layer``). Returns ``{"docs": (n,) int32
        document indices, "regions": [(k_l,) int32 sorted distinct regions of those documents in
        layer l, for each shown layer]}``; the view outlines those regions.
        """
        ids = [int(v) for v in self.layer_ids]
        if int(layer) not in ids:
            raise ValueError(f"layer {layer} is not shown; layers are {ids}")
        R = self.grid * self.grid
        region = check_int(region, "region", min=0)
        if region >= R:
            raise ValueError(f"region must be < {R} (grid {self.grid} x {self.grid}), got {region}")
        reg = np.asarray(self.areas.region_ids)
        docs = np.flatnonzero(reg[ids.index(int(layer))] == region).astype(np.int32)
        return {"docs": docs, "regions": [np.unique(reg[l, docs]).astype(np.int32) for l in range(reg.shape[0])]}

    @command
    def region_examples(self, layer: int, region: int, k: int = 3) -> list:
        """A few texts of one region (the most typical first), for the view's tooltip."""
        return [{"text": e["text"], "label": e["label"]} for e in self.areas.examples(int(layer), int(region), int(k))]


def sparse_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(n_layers, n_labels, grid, grid)`` counts -> ``(cells, cell_counts)``: the flat index
    ``layer * grid**2 + region`` of every region holding a document (int32, increasing) and its
    counts per label (``(n_cells, n_labels)``, uint16, int32 past 65,535)."""
    counts = np.asarray(counts)
    if counts.ndim != 4:
        raise ValueError(f"counts must be (n_layers, n_labels, grid, grid), got shape {counts.shape}")
    L, K, g, _ = counts.shape
    per_cell = counts.reshape(L, K, g * g).transpose(0, 2, 1).reshape(L * g * g, K)  # (L*R, K)
    cells = np.flatnonzero(per_cell.any(axis=1))
    vals = per_cell[cells]
    dtype = np.uint16 if vals.max(initial=0) < 2 ** 16 else np.int32
    return cells.astype(np.int32), np.ascontiguousarray(vals, dtype=dtype)


def dense_counts(cells: np.ndarray, cell_counts: np.ndarray, n_layers: int, grid: int) -> np.ndarray:
    """Inverse of :func:`sparse_counts`: the dense ``(n_layers, n_labels, grid, grid)`` counts (int64)."""
    cells = np.asarray(cells, dtype=np.int64)
    vals = np.asarray(cell_counts)
    R = grid * grid
    per_cell = np.zeros((n_layers * R, vals.shape[1]), dtype=np.int64)
    per_cell[cells] = vals
    return per_cell.reshape(n_layers, grid, grid, -1).transpose(0, 3, 1, 2).copy()
