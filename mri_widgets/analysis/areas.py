"""ActivationAreas: where the documents of a labelled corpus land, layer by layer.

One streaming capture pools each document's activations (mean over real tokens, last real
token, or first token) at every layer; each layer's pooled vectors are then reduced on their
own and binned into a grid of regions (``mri_widgets.analysis.regions``). Only the pooled
vectors (n_docs, n_layers, d) are kept, never the per-token activations.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import networkx as nx
import numpy as np
import torch

from .._checks import check_bool, check_int
from ..corpus import Corpus
from .graph_metrics import compare_graphs
from .regions import bin_regions, correlation_graph, grid_counts, reduce, region_graph

__all__ = ["ActivationAreas", "POOLS", "AREA_SITES", "pool_batch"]

#: pooling of a document's token vectors into one vector
POOLS = ("mean", "last", "first")
#: capture sites ActivationAreas can read (one vector per token and layer)
AREA_SITES = ("resid", "mlp")
REDUCTIONS = ("pca", "svd", "umap")
#: marker and layout version of a saved ActivationAreas file
AREAS_FORMAT = "mri_widgets.ActivationAreas"
AREAS_VERSION = 1


def pool_batch(acts: torch.Tensor, mask: torch.Tensor, pool: str) -> torch.Tensor:
    """Pool token vectors into one vector per text.

    Parameters
    ----------
    acts : tensor (b, n_layers, seq, d), right-padded (real tokens first).
    mask : bool tensor (b, seq) of real tokens.
    pool : ``"mean"`` (mean over real tokens), ``"last"`` (last real token) or ``"first"``.

    Returns
    -------
    float32 tensor (b, n_layers, d)
    """
    x = acts.float()
    if pool == "mean":
        m = mask.to(x.dtype)[:, None, :, None]
        n = mask.sum(1).clamp(min=1).to(x.dtype)[:, None, None]
        return (x * m).sum(2) / n
    if pool == "last":
        last = (mask.sum(1) - 1).clamp(min=0)
        idx = last[:, None, None, None].expand(x.shape[0], x.shape[1], 1, x.shape[3])
        return x.gather(2, idx).squeeze(2)
    if pool == "first":
        return x[:, :, 0, :]
    raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")


def _check_choice(value, choices, what: str, hint: str = "") -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}{hint}")
    return value.lower()


#: largest ``grid`` (bins per axis): 100 x 100 = 10,000 regions per layer, far past what a
#: corpus of thousands of documents fills (LLM-MRI uses 10); the counts grow as grid**2.
MAX_GRID = 100


def _check_fit_args(reduction, grid, n_components, seed=0, threshold=0.0, n_docs=None):
    """Check the reduction and binning options before any work; return them normalised."""
    if _check_choice(reduction, REDUCTIONS, "reduction") == "umap" and importlib.util.find_spec("umap") is None:
        raise ImportError("reduction='umap' needs the optional package umap-learn: pip install umap-learn "
                          "(or use reduction='pca')")
    grid = check_int(grid, "grid", min=1, max=MAX_GRID,
                     hint=f" (bins per axis: a layer has grid**2 regions; LLM-MRI uses 10, at most {MAX_GRID})")
    n_components = check_int(n_components, "n_components", min=2,
                             hint=" (2 = regions, more = N-D mode)")
    if n_docs is not None and n_components > n_docs:
        raise ValueError(f"n_components={n_components} but the corpus has {n_docs} texts; PCA/SVD give at most "
                         f"one component per text: use n_components <= {n_docs}")
    seed = check_int(seed, "seed")
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a Spearman rho between -1 and 1, got {threshold!r}")
    return grid, n_components, seed, float(threshold)


class ActivationAreas:
    """Activation regions of a labelled corpus (LLM-MRI, live and with real pooling).

    Parameters
    ----------
    model : LoadedModel
        From :func:`mri_widgets.load` (encoder or decoder).
    corpus : Corpus
        Labelled texts (:class:`mri_widgets.Corpus`, e.g. ``mri_widgets.datasets.emotions()``).
    site : ``"resid"`` (embeddings then each block's output; layer 0 = embeddings) or ``"mlp"``
        (each MLP's neuron activations).
    pool : ``"mean"`` over real tokens (default), ``"last"`` real token (what a causal model has
        read the whole text at) or ``"first"`` token (LLM-MRI's choice: [CLS] for an encoder,
        meaningless for a causal model, whose first token sees nothing else).
    reduction : ``"pca"``, ``"svd"`` or ``"umap"`` (needs ``umap-learn``); see
        :func:`mri_widgets.analysis.regions.reduce`.
    grid : bins per axis; a 2-D layer has ``grid**2`` regions, id ``row * grid + col``.
    n_components : 2 for regions; more gives the N-D mode after LLM-MRI's, where :meth:`graph`
        joins components of neighbouring layers by Spearman correlation (regions still use the
        first two components). It differs from LLM-MRI's N-D mode in three ways. *Scaling*: the
        components come from the same :func:`~mri_widgets.analysis.regions.reduce` as the 2-D
        mode (PCA after standard scaling, so every dimension counts alike; ``"svd"`` divides by
        the std without centring), while LLM-MRI's N-D PCA only centres and its SVD neither
        centres nor scales, so a few large-variance dimensions dominate there. *Fit*: each layer
        is reduced once on all documents and a label's graph correlates those shared components
        over its documents; LLM-MRI refits the reduction on each label's documents, which
        ``graph(labels, refit=True)`` / ``compare_labels(refit=True)`` reproduce. *Signs*:
        ours are fixed (largest loading positive); LLM-MRI keeps the SVD's arbitrary signs, and
        an edge (rho > threshold) flips with them.
    seed : random state of UMAP.
    threshold : N-D mode: an edge needs Spearman rho strictly above this.
    batch_size, max_length : passed to the capture (``max_length`` truncates long texts). The default
        ``batch_size=None`` forms batches by a token budget, texts sorted by length (see
        :meth:`LoadedModel.capture`): over short sentences this runs faster than one padded batch
        of the whole corpus, with bounded memory.
    layers : capture only these layers (indices of the site; for ``resid`` 0 is the embeddings);
        default all. Every method takes these indices, e.g. ``areas.grid(12)``.
    progress : show progress bars (default: when there are several batches).

    Attributes
    ----------
    corpus : the Corpus.
    layer_ids : list of int, the captured layer indices.
    layers : list of str, their names (``"embeddings"``, ``"layer 1"``, ... for ``resid``, where
        ``"layer k"`` is block k-1's output; ``"mlp 0"``, ... for ``mlp``).
    pooled : float32 array (n_docs, n_layers, d), the pooled vectors.
    coords : float64 array (n_layers, n_docs, n_components), reduced coordinates.
    region_ids : int64 array (n_layers, n_docs), each document's region per layer.

    Examples
    --------
    >>> lm = mri_widgets.load("demo")
    >>> areas = ActivationAreas(lm, mri_widgets.datasets.emotions(), layers=range(0, 31, 3))
    >>> areas.grid(12, label="joy")      # (10, 10) counts of joy sentences at layer 12
    >>> G = areas.graph(["joy", "fear"])  # networkx.DiGraph of regions
    """

    def __init__(self, model, corpus: Corpus, *, site: str = "resid", pool: str = "mean", reduction: str = "pca",
                 grid: int = 10, n_components: int = 2, seed: int = 0, threshold: float = 0.3,
                 batch_size: Optional[int] = None, max_length: Optional[int] = None, layers=None,
                 progress: Optional[bool] = None):
        if not isinstance(corpus, Corpus):
            raise TypeError(f"corpus must be a mri_widgets.Corpus, got {type(corpus).__name__}; "
                            "build one with Corpus(texts, labels) or Corpus.from_pandas(df, text=..., label=...)")
        if not hasattr(model, "capture") or not hasattr(model, "adapter"):
            raise TypeError(f"model must be a LoadedModel from mri_widgets.load(), got {type(model).__name__}")
        self.site = _check_choice(site, AREA_SITES, "site")
        self.pool = _check_choice(pool, POOLS, "pool")
        _check_fit_args(reduction, grid, n_components, seed, threshold, len(corpus))
        progress = None if progress is None else check_bool(progress, "progress")
        if len(corpus) < 3:
            raise ValueError(f"the corpus has {len(corpus)} texts; regions need at least 3")
        self.model = model
        self.corpus = corpus

        n_docs = len(corpus)
        store: dict = {}

        def reducer(batch):
            pooled = pool_batch(batch.acts[self.site], batch.mask, self.pool).cpu().numpy()
            if "x" not in store:
                store["x"] = np.empty((n_docs, pooled.shape[1], pooled.shape[2]), np.float32)
                store["layers"] = list(batch.layers[self.site])
            store["x"][batch.indices] = pooled

        model.capture(corpus.texts, (self.site,), batch_size=batch_size, max_length=max_length,
                      reducer=reducer, layers=layers, progress=progress)
        self.pooled: np.ndarray = store["x"]
        self.layer_ids: list[int] = [int(l) for l in store["layers"]]
        self._fit(reduction, grid, n_components, seed, threshold, progress)

    def _fit(self, reduction, grid, n_components, seed, threshold, progress=None) -> None:
        """Reduce every layer's pooled vectors and bin them into regions."""
        from tqdm.auto import tqdm

        self.reduction = _check_choice(reduction, REDUCTIONS, "reduction")
        self.grid_size = int(grid)
        self.n_components = int(n_components)
        self.seed = int(seed)
        self.threshold = float(threshold)
        self.mode = "2d" if self.n_components == 2 else "nd"
        self._pos = {l: i for i, l in enumerate(self.layer_ids)}
        if self.site == "resid":
            self.layers = ["embeddings" if l == 0 else f"layer {l}" for l in self.layer_ids]
        else:
            self.layers = [f"{self.site} {l}" for l in self.layer_ids]
        coords = []
        show = progress if progress is not None else len(self.layer_ids) > 8
        for i in tqdm(range(len(self.layer_ids)), desc="reduce", disable=not show, leave=False):
            coords.append(reduce(self.pooled[:, i, :], self.reduction, self.n_components, self.seed))
        self.coords: np.ndarray = np.stack(coords)
        self.region_ids: np.ndarray = np.stack([bin_regions(c[:, :2], self.grid_size) for c in self.coords])

    def with_options(self, *, reduction: Optional[str] = None, grid: Optional[int] = None,
                     n_components: Optional[int] = None, seed: Optional[int] = None,
                     threshold: Optional[float] = None, progress: Optional[bool] = None) -> "ActivationAreas":
        """The same pooled vectors reduced and binned differently, without running the model again.

        Examples
        --------
        >>> nd = areas.with_options(n_components=4)     # N-D mode (correlation graph)
        >>> coarse = areas.with_options(grid=5)
        """
        if self.pooled is None:
            raise ValueError("these regions were given (ActivationAreas.from_regions) without pooled vectors: "
                             "with_options needs ActivationAreas.from_pooled or a model run")
        new = object.__new__(type(self))
        new.model, new.corpus, new.site, new.pool = self.model, self.corpus, self.site, self.pool
        new.pooled, new.layer_ids = self.pooled, list(self.layer_ids)
        args = dict(reduction=self.reduction if reduction is None else reduction,
                    grid=self.grid_size if grid is None else grid,
                    n_components=self.n_components if n_components is None else n_components,
                    seed=self.seed if seed is None else seed,
                    threshold=self.threshold if threshold is None else threshold)
        _check_fit_args(args["reduction"], args["grid"], args["n_components"], args["seed"], args["threshold"],
                        len(self.corpus))
        progress = None if progress is None else check_bool(progress, "progress")
        new._fit(**args, progress=progress)
        return new

    @classmethod
    def from_pooled(cls, corpus: Corpus, pooled, layer_ids, *, site: str = "resid", pool: str = "mean",
                    reduction: str = "pca", grid: int = 10, n_components: int = 2, seed: int = 0,
                    threshold: float = 0.3, model=None, progress: Optional[bool] = None) -> "ActivationAreas":
        """Regions from pooled vectors computed elsewhere (a saved file, a distributed job).

        ``pooled`` is float32 (n_docs, n_layers, d) in the order of ``corpus``, ``layer_ids`` the
        layer index of each entry of axis 1; the reduction and binning run here, exactly as in the
        constructor. ``model`` is optional (nothing here runs it).
        """
        if not isinstance(corpus, Corpus):
            raise TypeError(f"corpus must be a mri_widgets.Corpus, got {type(corpus).__name__}")
        pooled = np.asarray(pooled, dtype=np.float32)
        layer_ids = [check_int(l, "layer id", min=0) for l in layer_ids]
        if pooled.ndim != 3 or pooled.shape[0] != len(corpus) or pooled.shape[1] != len(layer_ids):
            raise ValueError(f"pooled has shape {pooled.shape}; expected ({len(corpus)}, {len(layer_ids)}, d): one "
                             "vector per document of the corpus and per layer id")
        if len(set(layer_ids)) != len(layer_ids):
            raise ValueError(f"layer ids have duplicates: {layer_ids}")
        if len(corpus) < 3:
            raise ValueError(f"the corpus has {len(corpus)} texts; regions need at least 3")
        _check_fit_args(reduction, grid, n_components, seed, threshold, len(corpus))
        new = object.__new__(cls)
        new.model, new.corpus = model, corpus
        new.site = _check_choice(site, AREA_SITES, "site")
        new.pool = _check_choice(pool, POOLS, "pool")
        new.pooled, new.layer_ids = pooled, layer_ids
        progress = None if progress is None else check_bool(progress, "progress")
        new._fit(reduction, grid, n_components, seed, threshold, progress)
        return new

    @classmethod
    def from_regions(cls, corpus: Corpus, region_ids, grid: int, *, layer_ids=None, layer_names=None,
                     site: str = "resid", pool: str = "mean") -> "ActivationAreas":
        """Regions assigned elsewhere: ``region_ids`` (n_layers, n_docs) ints in ``0 .. grid**2 - 1``.

        No pooled vectors or coordinates exist: :meth:`counts`, :meth:`docs`, :meth:`paths` and the
        2-D :meth:`graph` work; :meth:`examples` lists a region's documents in corpus order;
        :meth:`with_options`, :meth:`save` and the N-D mode need :meth:`from_pooled`.
        ``layer_ids`` defaults to ``0 .. n_layers - 1``; ``layer_names`` to ``"layer 0"``, ....
        """
        if not isinstance(corpus, Corpus):
            raise TypeError(f"corpus must be a mri_widgets.Corpus, got {type(corpus).__name__}")
        grid = check_int(grid, "grid", min=1, max=MAX_GRID, hint=" (bins per axis: region ids are 0 .. grid**2 - 1)")
        reg = np.asarray(region_ids)
        if reg.ndim != 2 or reg.shape[1] != len(corpus) or reg.shape[0] < 1:
            raise ValueError(f"region_ids has shape {reg.shape}; expected (n_layers, {len(corpus)}): one region per "
                             "layer and document of the corpus")
        if reg.dtype.kind not in "iu" and not (reg.dtype.kind == "f" and np.array_equal(reg, np.round(reg))):
            raise ValueError(f"region ids must be integers (row * grid + col), got dtype {reg.dtype}")
        if reg.size and (reg.min() < 0 or reg.max() >= grid * grid):
            raise ValueError(f"region ids must be in 0..{grid * grid - 1} for grid={grid} (id = row * grid + col), "
                             f"got {int(reg.min())}..{int(reg.max())}")
        L = reg.shape[0]
        layer_ids = list(range(L)) if layer_ids is None else [check_int(l, "layer id", min=0) for l in layer_ids]
        if len(layer_ids) != L or len(set(layer_ids)) != L:
            raise ValueError(f"layer_ids must be {L} distinct ints (one per row of region_ids), got {layer_ids}")
        if layer_names is None:
            layer_names = [f"layer {l}" for l in layer_ids]
        elif isinstance(layer_names, str) or len(layer_names) != L:
            raise ValueError(f"layer_names must be {L} names (one per row of region_ids), got {layer_names!r}")
        new = object.__new__(cls)
        new.model, new.corpus, new.pooled, new.coords = None, corpus, None, None
        new.site = _check_choice(site, AREA_SITES, "site")
        new.pool = _check_choice(pool, POOLS, "pool")
        new.reduction, new.grid_size, new.n_components, new.seed, new.threshold = "given", grid, 2, 0, 0.0
        new.mode = "2d"
        new.layer_ids = layer_ids
        new._pos = {l: i for i, l in enumerate(layer_ids)}
        new.layers = [str(n) for n in layer_names]
        new.region_ids = reg.astype(np.int64)
        return new

    def save(self, path) -> None:
        """Write the pooled vectors, the corpus and the options to ``path`` (``.npz``, no pickle).

        :meth:`load` rebuilds the same regions (the reduction runs again, deterministically).
        """
        if self.pooled is None:
            raise ValueError("these regions were given (ActivationAreas.from_regions) without pooled vectors: "
                             "save needs ActivationAreas.from_pooled or a model run")
        import json
        import os

        meta = {"format": AREAS_FORMAT, "version": AREAS_VERSION, "site": self.site, "pool": self.pool,
                "reduction": self.reduction, "grid": self.grid_size, "n_components": self.n_components,
                "seed": self.seed, "threshold": self.threshold, "layer_ids": list(self.layer_ids),
                "label_names": list(self.corpus.label_names), "n_docs": len(self.corpus),
                "d": int(self.pooled.shape[2]),
                "model_name": getattr(self.model, "name", None) if self.model is not None else None}
        enc = [t.encode("utf-8") for t in self.corpus.texts]
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                  "pooled": np.ascontiguousarray(self.pooled, dtype=np.float32),
                  "label_ids": np.asarray(self.corpus.label_ids, dtype=np.int64),
                  "texts_utf8": np.frombuffer(b"".join(enc), dtype=np.uint8),
                  "texts_offsets": np.cumsum([0] + [len(e) for e in enc]).astype(np.int64)}
        with open(os.fspath(path), "wb") as f:  # a file object: numpy does not append ".npz"
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path, *, model=None, progress: Optional[bool] = None) -> "ActivationAreas":
        """Read a file written by :meth:`save` (or ``mri-widgets areas``). Nothing is executed.

        The file is treated as untrusted, as :meth:`NeuronScan.load
        <mri_widgets.analysis.neurons.NeuronScan.load>` does: members, dtypes, shapes and sizes are
        checked against the metadata before any data is read; a bad file raises ``ValueError``.
        """
        import json
        import os
        import zipfile

        from .neurons import NeuronScanError, _read_npy, open_npz

        path = os.fspath(path)
        bad = f"{path!r} is not an ActivationAreas file (write one with ActivationAreas.save or mri-widgets areas)"
        zf = open_npz(path, bad, ValueError)
        try:
            with zf:
                infos = {}
                for info in zf.infolist():
                    name = info.filename[:-4] if info.filename.endswith(".npy") else None
                    if name not in ("meta", "pooled", "label_ids", "texts_utf8", "texts_offsets") or name in infos:
                        raise ValueError(f"{bad}: unexpected or repeated member {info.filename!r}")
                    infos[name] = info
                if len(infos) != 5:
                    raise ValueError(f"{bad}: missing members {sorted({'meta', 'pooled', 'label_ids', 'texts_utf8', 'texts_offsets'} - set(infos))}")
                meta = json.loads(_read_npy(zf, infos["meta"], np.uint8, None, 1 << 24, bad).tobytes().decode("utf-8"))
                if not isinstance(meta, dict) or meta.get("format") != AREAS_FORMAT:
                    raise ValueError(f"{bad}: wrong format marker")
                if meta.get("version") != AREAS_VERSION:
                    raise ValueError(f"{path!r} has format version {meta.get('version')!r}; this mri_widgets reads "
                                     f"version {AREAS_VERSION}")
                n = check_int(meta.get("n_docs"), "metadata n_docs", min=3)
                d = check_int(meta.get("d"), "metadata d", min=1)
                layer_ids = meta.get("layer_ids")
                names = meta.get("label_names")
                if not isinstance(layer_ids, list) or not layer_ids or not isinstance(names, list) or not names \
                        or not all(isinstance(x, str) for x in names):
                    raise ValueError(f"{bad}: metadata 'layer_ids' and 'label_names' must be non-empty lists")
                layer_ids = [check_int(l, "layer id", min=0) for l in layer_ids]
                pooled = _read_npy(zf, infos["pooled"], np.float32, (n, len(layer_ids), d), None, bad)
                label_ids = _read_npy(zf, infos["label_ids"], np.int64, (n,), None, bad)
                if ((label_ids < 0) | (label_ids >= len(names))).any():
                    raise ValueError(f"{bad}: a label id is outside 0..{len(names) - 1}")
                off = _read_npy(zf, infos["texts_offsets"], np.int64, (n + 1,), None, bad)
                if off[0] != 0 or (np.diff(off) < 0).any():
                    raise ValueError(f"{bad}: text offsets must start at 0 and never decrease")
                blob = _read_npy(zf, infos["texts_utf8"], np.uint8, (int(off[-1]),), None, bad).tobytes()
                texts = [blob[off[i]:off[i + 1]].decode("utf-8") for i in range(n)]
        except NeuronScanError as e:
            raise ValueError(str(e)) from None
        except (UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
            raise ValueError(f"{bad}: {type(e).__name__}: {e}") from None
        corpus = Corpus(texts, [names[i] for i in label_ids], label_names=names)
        return cls.from_pooled(corpus, pooled, layer_ids, site=meta.get("site"), pool=meta.get("pool"),
                               reduction=meta.get("reduction"), grid=meta.get("grid"),
                               n_components=meta.get("n_components"), seed=meta.get("seed"),
                               threshold=meta.get("threshold"), model=model, progress=progress)

    # ---- lookups -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"ActivationAreas({len(self.corpus)} docs, {len(self.corpus.label_names)} labels, site={self.site!r}, "
                f"pool={self.pool!r}, reduction={self.reduction!r}, {len(self.layer_ids)} layers, "
                f"grid={self.grid_size}, n_components={self.n_components})")

    @property
    def n_regions(self) -> int:
        """Regions per layer (``grid ** 2``)."""
        return self.grid_size ** 2

    @property
    def label_names(self) -> list[str]:
        return list(self.corpus.label_names)

    def layer_index(self, layer) -> int:
        """Position of ``layer`` (a captured layer index) in :attr:`layer_ids`; clear IndexError otherwise."""
        l = check_int(layer, "layer")
        if l not in self._pos:
            what = "resid layer (0 = embeddings)" if self.site == "resid" else f"{self.site} layer"
            ids = self.layer_ids
            span = f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else str(ids)
            raise IndexError(f"{what} {l} was not captured; captured layers: {span}")
        return self._pos[l]

    def _check_region(self, region) -> int:
        region = check_int(region, "region")
        if not 0 <= int(region) < self.n_regions:
            raise IndexError(f"region {region} out of range: a {self.grid_size}x{self.grid_size} grid has regions "
                             f"0..{self.n_regions - 1} (id = row * {self.grid_size} + col)")
        return int(region)

    def _label_ids(self, label) -> Optional[list[int]]:
        if label is None:
            return None
        names = [label] if isinstance(label, str) else list(label)
        if not names:
            raise ValueError("labels is empty; pass None for all labels")
        return [self.corpus.label_id(n) for n in names]  # KeyError naming the known labels

    # ---- regions -----------------------------------------------------------------------------
    def regions(self, layer) -> np.ndarray:
        """Region id (``row * grid + col``) of every document at ``layer``, int64 (n_docs,)."""
        return self.region_ids[self.layer_index(layer)].copy()

    def grid(self, layer, label=None) -> np.ndarray:
        """Documents per region at ``layer`` as a (grid, grid) int array ``[row, col]``.

        ``label``: a label name or a list of names (all documents when None).
        """
        pos = self.layer_index(layer)
        ids = self._label_ids(label)
        return grid_counts(self.region_ids[pos], self.grid_size, self.corpus.label_ids, ids)

    def counts(self, labels=None) -> np.ndarray:
        """Documents per layer, label and region: int64 (n_layers, n_labels, grid, grid).

        ``labels`` restricts and orders the label axis (default: all, in ``corpus.label_names``).
        """
        ids = self._label_ids(labels) if labels is not None else list(range(len(self.corpus.label_names)))
        g, K = self.grid_size, len(self.corpus.label_names)
        lab = self.corpus.label_ids
        out = np.zeros((len(self.layer_ids), len(ids), g * g), np.int64)
        for i, reg in enumerate(self.region_ids):
            table = np.bincount(reg * K + lab, minlength=g * g * K).reshape(g * g, K)
            out[i] = table[:, ids].T
        return out.reshape(len(self.layer_ids), len(ids), g, g)

    def docs(self, layer, region) -> np.ndarray:
        """Indices of the documents in ``region`` at ``layer``."""
        pos = self.layer_index(layer)
        return np.flatnonzero(self.region_ids[pos] == self._check_region(region))

    def examples(self, layer, region, k: int = 3) -> list[dict]:
        """Up to ``k`` documents of a region, the most typical first (closest to the region's mean).

        Returns a list of ``{"index", "text", "label"}``.
        """
        idx = self.docs(layer, region)
        if idx.size == 0 or k <= 0:
            return []
        if self.coords is None:  # regions given without coordinates (from_regions): corpus order
            return [{"index": int(i), "text": self.corpus.texts[i], "label": self.corpus.labels[i]}
                    for i in idx[:int(k)]]
        pts = self.coords[self.layer_index(layer)][idx, :2]
        order = np.argsort(((pts - pts.mean(0)) ** 2).sum(1), kind="stable")[:int(k)]
        return [{"index": int(i), "text": self.corpus.texts[i], "label": self.corpus.labels[i]} for i in idx[order]]

    def paths(self, layer, region, labels=None) -> dict:
        """Where the documents of one region go in every captured layer.

        Returns
        -------
        dict with ``docs`` (document indices), ``nodes`` ({(layer, region): documents}) and
        ``edges`` ({((l, a), (l2, b)): documents}) between neighbouring captured layers.
        """
        docs = self.docs(layer, region)
        if labels is not None:
            docs = docs[np.isin(self.corpus.label_ids[docs], self._label_ids(labels))]
        nodes: dict = {}
        edges: dict = {}
        R = self.region_ids[:, docs]
        for i, l in enumerate(self.layer_ids):
            r, n = np.unique(R[i], return_counts=True)
            nodes.update({(l, int(a)): int(c) for a, c in zip(r, n)})
            if i + 1 < len(self.layer_ids):
                pairs, n = np.unique(R[i] * self.n_regions + R[i + 1], return_counts=True)
                nxt = self.layer_ids[i + 1]
                edges.update({((l, int(p // self.n_regions)), (nxt, int(p % self.n_regions))): int(c)
                              for p, c in zip(pairs, n)})
        return {"docs": docs, "nodes": nodes, "edges": edges}

    # ---- graphs ------------------------------------------------------------------------------
    def _graph_positional(self, labels=None, min_weight=1, docs=None, refit=False):
        """The graph with layer = position in layer_ids (neighbouring captured layers are 1 apart)."""
        refit = check_bool(refit, "refit")
        if refit and self.mode == "2d":
            raise ValueError("refit=True applies to the N-D mode (n_components > 2): regions of the 2-D mode "
                             "share one grid per layer; use areas.with_options(n_components=4)")
        if self.mode == "2d":
            return region_graph(self.region_ids, self.corpus.label_ids, self.corpus.label_names,
                                labels=labels, min_weight=min_weight)
        keep = np.ones(len(self.corpus), bool)
        if labels is not None:
            keep = np.isin(self.corpus.label_ids, self._label_ids(labels))
        if keep.sum() < 3:
            raise ValueError(f"labels {labels!r} select {int(keep.sum())} documents; correlations need at least 3")
        if refit:  # LLM-MRI's N-D mode: each layer reduced again on these documents only
            C = np.stack([reduce(self.pooled[keep, i, :], self.reduction, self.n_components, self.seed)
                          for i in range(len(self.layer_ids))])
        else:
            C = self.coords[:, keep, :]
        G = correlation_graph(C, self.threshold)
        if min_weight is not None and min_weight != 1:
            G.remove_edges_from([(u, v) for u, v, w in G.edges(data="weight") if w < min_weight])
        return G

    def graph(self, labels=None, min_weight=1, *, refit: bool = False) -> nx.DiGraph:
        """The region graph (2-D mode) or the component correlation graph (N-D mode).

        Parameters
        ----------
        labels : label name or list of names; documents of these labels only (all when None).
        min_weight : drop edges lighter than this (2-D: documents; N-D: rho, default keeps all
            edges above ``threshold``).
        refit : N-D mode only. ``False`` (default): correlate the components fitted once on all
            documents over the chosen documents, so every label's graph has the same axes.
            ``True``: reduce each layer again on the chosen documents only, as LLM-MRI's N-D
            graph does per label (each label then has its own axes; costs one reduction per layer).

        Returns
        -------
        networkx.DiGraph
            2-D: nodes ``(layer, region)`` with ``layer`` (captured layer index), ``region``,
            ``counts`` ({label: documents}) and ``total``; edge ``(l, a) -> (l', b)`` between
            neighbouring captured layers with ``weight`` (documents in a at l and b at l') and
            ``counts`` per label. N-D: nodes ``(layer, component)``, edges ``weight`` = Spearman
            rho > ``threshold``. ``G.graph`` holds ``mode``, ``layer_ids``, ``layer_names``.
        """
        if labels is not None:
            self._label_ids(labels)  # clear KeyError for unknown labels
        G = self._graph_positional(labels, 1 if self.mode == "nd" and min_weight == 1 else min_weight,
                                   refit=refit)
        mapping = {n: (self.layer_ids[n[0]], n[1]) for n in G.nodes}
        G = nx.relabel_nodes(G, mapping, copy=True)
        for n, d in G.nodes(data=True):
            d["layer"] = n[0]
        G.graph.update(layer_ids=list(self.layer_ids), layer_names=list(self.layers), site=self.site,
                       pool=self.pool, grid=self.grid_size)
        return G

    def compare_labels(self, labels=None, *, refit: bool = False):
        """:func:`mri_widgets.graph_metrics` of each label's graph, side by side.

        Returns
        -------
        pandas.DataFrame, one column per label, one row per metric. Layers are counted by
        position among the captured layers. In N-D mode each label's graph correlates the
        components over that label's documents only; with ``refit=True`` the components are
        refitted on that label's documents (LLM-MRI's way, see :meth:`graph`).
        """
        names = self.label_names if labels is None else [self.corpus.label_names[i] for i in self._label_ids(labels)]
        return compare_graphs({n: self._graph_positional([n], refit=refit) for n in names})

    def plot_metrics(self, labels=None, selection=None, **kwargs):
        """A bqplot chart of :meth:`compare_labels`' ``degree_by_layer`` per label across layers.

        Returns a :class:`mri_widgets.AreaMetrics` linked to ``selection`` (``layer``, ``label``);
        needs bqplot (``pip install "mri_widgets[charts]"``).
        """
        from ..widgets.charts import AreaMetrics

        return AreaMetrics(self, labels, selection, **kwargs)
