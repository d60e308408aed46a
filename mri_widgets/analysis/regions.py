"""Activation regions: per-layer 2-D reduction, grid binning and region graphs.

Pure numpy (plus networkx for the graph containers, scipy for ranks); no model
and no widget code. Follows LLM-MRI: each layer's document vectors are reduced
on their own (axes of different layers are unrelated), each axis is cut into
``grid`` equal bins over that layer's range, and a document's region is its
cell. Graph nodes are ``(layer, region)`` pairs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import networkx as nx
import numpy as np
from scipy.linalg import eigh
from scipy.stats import rankdata

__all__ = [
    "reduce",
    "bin_regions",
    "grid_counts",
    "region_graph",
    "region_graph_arrays",
    "correlation_graph",
    "spearman_matrix",
]

METHODS = ("pca", "svd", "umap")


# --------------------------------------------------------------------- reduce
def _check_matrix(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_docs, n_features); got shape {X.shape}.")
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 documents to reduce; got {X.shape[0]}.")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or inf; check the captured activations.")
    return X


def _constant_columns(X: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Columns that cannot be told apart from a constant, judged against their own scale.

    A column whose values are all equal can still show a tiny variance after floating-point
    rounding of its mean. The rounding error of the two-pass variance of ``n`` values is
    bounded by about ``n * eps * var + (n * eps * mean)**2`` (Chan, Golub & LeVeque), which is
    the criterion scikit-learn's ``StandardScaler`` uses; a variance within that bound is
    rounding noise. The bound scales with the column (multiplying a column by ``c`` multiplies
    both sides by ``c**2``), so a column of tiny but varying values, such as the dimensions a
    final LayerNorm gain of 5e-33 leaves, is kept and standardised like any other.
    """
    n = X.shape[0]
    eps = np.finfo(np.float64).eps
    bound = n * eps * var + (n * eps * mean) ** 2
    return var <= bound


def _standard_scale(X: np.ndarray, center: bool = True) -> np.ndarray:
    """(X - mean) / std per column (population std); constant columns -> 0.

    Constant columns are detected relative to each column's own scale (see
    `_constant_columns`), so the result does not change when a column is multiplied by any
    non-zero factor.
    """
    mean = X.mean(axis=0)
    var = X.var(axis=0)
    # a constant column carries no information: map it to 0 rather than dividing by 0
    keep = ~_constant_columns(X, mean, var)
    std = np.sqrt(var)
    Z = (X - mean) if center else X.copy()
    Z[:, keep] /= std[keep]
    Z[:, ~keep] = 0.0
    return Z


def _minmax_scale(X: np.ndarray) -> np.ndarray:
    """(X - min) / (max - min) per column; constant columns -> 0."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    span = hi - lo
    keep = span > 0
    Z = np.zeros_like(X)
    Z[:, keep] = (X[:, keep] - lo[keep]) / span[keep]
    return Z


def _top_eigvecs(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending) and eigenvectors of symmetric C."""
    m = C.shape[0]
    evals, vecs = eigh(C, subset_by_index=[m - k, m - 1])
    return evals[::-1], vecs[:, ::-1]


def _svd_scores(Z: np.ndarray, k: int) -> np.ndarray:
    """Scores on the top-k right singular vectors of Z, signs fixed.

    The axes come from the eigendecomposition of the smaller of ``Z.T @ Z``
    and ``Z @ Z.T`` (fast for many documents or many features). Sign
    convention: each axis (loading vector) is flipped so that its
    largest-magnitude entry (first one on ties) is positive.
    """
    n, d = Z.shape
    if d <= n:
        V = _top_eigvecs(Z.T @ Z, k)[1]
    else:
        evals, U = _top_eigvecs(Z @ Z.T, k)
        s = np.sqrt(np.clip(evals, 0.0, None))
        tiny = s <= 1e-12 * max(1.0, s[0])
        V = (Z.T @ U) / np.where(tiny, 1.0, s)
        V[:, tiny] = 0.0  # a null direction: its scores are 0 whatever its sign
    pivot = np.abs(V).argmax(axis=0)
    signs = np.sign(V[pivot, np.arange(k)])
    signs[signs == 0] = 1.0
    return Z @ (V * signs)


def reduce(X, method: str = "pca", n_components: int = 2, seed: int = 0) -> np.ndarray:
    """Reduce one layer's document vectors to ``n_components`` dimensions.

    Parameters
    ----------
    X : array_like, shape (n_docs, n_features)
        One vector per document (e.g. pooled hidden states of one layer).
    method : {"pca", "svd", "umap"}
        * ``"pca"``: standard scaling (centre, divide by the population std;
          columns indistinguishable from a constant, judged against their own
          scale as scikit-learn's StandardScaler does, become 0), then projection on the top
          principal axes (SVD of the scaled matrix). This is LLM-MRI's PCA and
          its 2-D "SVD", which standard-scales too and so equals PCA.
        * ``"svd"``: columns divided by their std but *not* centred, then
          truncated SVD (like scikit-learn's TruncatedSVD); the first axis then
          carries the mean direction.
        * ``"umap"``: min-max scaling per column, then UMAP with the cosine
          metric and ``random_state=seed`` (needs ``umap-learn``).
    n_components : int
        Output dimension; at most ``min(n_docs, n_features)`` for PCA/SVD.
    seed : int
        Random state for UMAP. PCA/SVD are deterministic; their component
        signs are fixed (largest-magnitude loading positive).

    Returns
    -------
    numpy.ndarray of float64, shape (n_docs, n_components)

    Raises
    ------
    ValueError
        Bad shape, non-finite values, unknown method, too many components.
    ImportError
        ``method="umap"`` without ``umap-learn`` installed.
    """
    X = _check_matrix(X)
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"unknown reduction {method!r}; choose one of {METHODS}.")
    k = int(n_components)
    if k < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}.")
    if method == "umap":
        return _umap(X, k, seed)
    if k > min(X.shape):
        raise ValueError(
            f"n_components={k} exceeds min(n_docs, n_features)={min(X.shape)} "
            f"for {method}; ask for fewer components."
        )
    Z = _standard_scale(X, center=(method == "pca"))
    return _svd_scores(Z, k)


def _umap(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    if importlib.util.find_spec("umap") is None:
        raise ImportError(
            "reduction='umap' needs the optional package umap-learn: "
            "pip install umap-learn (or use reduction='pca')."
        )
    import umap  # optional dependency

    if k >= X.shape[0] - 1:
        raise ValueError(f"UMAP needs n_components < n_docs - 1; got {k} for {X.shape[0]} docs.")
    model = umap.UMAP(
        n_components=k,
        metric="cosine",
        random_state=seed,
        n_neighbors=min(15, X.shape[0] - 1),
    )
    return np.asarray(model.fit_transform(_minmax_scale(X)), dtype=np.float64)


# ---------------------------------------------------------------------- grid
def _check_grid(grid) -> int:
    g = int(grid)
    if g != grid or g < 1:
        raise ValueError(f"grid must be a positive integer; got {grid!r}.")
    return g


def _axis_bins(y: np.ndarray, grid: int) -> np.ndarray:
    """Equal-width bins over y.min()..y.max(); bins are [a, b), the max goes last."""
    lo, hi = y.min(), y.max()
    if not hi > lo:
        return np.zeros(y.shape, dtype=np.int64)
    b = np.floor((y - lo) / (hi - lo) * grid).astype(np.int64)
    return np.clip(b, 0, grid - 1)


def bin_regions(Y2, grid: int) -> np.ndarray:
    """Region id of each document from its 2-D coordinates.

    Each axis is cut into ``grid`` equal-width bins over that axis's
    min..max: bin ``floor((y - min) / (max - min) * grid)``, the maximum
    falling in the last bin; a constant axis puts everything in bin 0.
    The region id is ``row * grid + col`` with ``col`` the bin of axis 0 (x)
    and ``row`` the bin of axis 1 (y); row 0 holds the smallest y.

    Parameters
    ----------
    Y2 : array_like, shape (n_docs, 2)
    grid : int

    Returns
    -------
    numpy.ndarray of int64, shape (n_docs,), values in ``[0, grid**2)``.
    """
    g = _check_grid(grid)
    Y2 = np.asarray(Y2, dtype=np.float64)
    if Y2.ndim != 2 or Y2.shape[1] != 2 or Y2.shape[0] == 0:
        raise ValueError(f"Y2 must have shape (n_docs, 2); got {Y2.shape}.")
    if not np.isfinite(Y2).all():
        raise ValueError("Y2 contains NaN or inf.")
    col = _axis_bins(Y2[:, 0], g)
    row = _axis_bins(Y2[:, 1], g)
    return row * g + col


def _label_mask(label_ids: np.ndarray, label) -> np.ndarray:
    wanted = np.atleast_1d(np.asarray(label, dtype=np.int64))
    return np.isin(label_ids, wanted)


def grid_counts(regions, grid: int, label_ids=None, label=None) -> np.ndarray:
    """Documents per cell of one layer, as a (grid, grid) array ``[row, col]``.

    Parameters
    ----------
    regions : array_like of int, shape (n_docs,)
        Region ids from `bin_regions`.
    grid : int
    label_ids : array_like of int, shape (n_docs,), optional
        Label id of each document; needed when ``label`` is given.
    label : int or sequence of int, optional
        Count only documents with these label ids (all documents when None).

    Returns
    -------
    numpy.ndarray of int64, shape (grid, grid)
    """
    g = _check_grid(grid)
    regions = np.asarray(regions, dtype=np.int64).ravel()
    if regions.size and (regions.min() < 0 or regions.max() >= g * g):
        raise ValueError(f"region ids must lie in [0, {g * g}) for grid={g}.")
    if label is not None:
        if label_ids is None:
            raise ValueError("label was given without label_ids.")
        label_ids = np.asarray(label_ids, dtype=np.int64).ravel()
        if label_ids.shape != regions.shape:
            raise ValueError(
                f"label_ids has {label_ids.size} entries for {regions.size} regions."
            )
        regions = regions[_label_mask(label_ids, label)]
    return np.bincount(regions, minlength=g * g).reshape(g, g)


# --------------------------------------------------------------------- graphs
def _select_labels(label_names: Sequence[str], labels) -> list[int]:
    names = [str(n) for n in label_names]
    if labels is None:
        return list(range(len(names)))
    if isinstance(labels, (str, int, np.integer)):
        labels = [labels]
    ids = []
    for lab in labels:
        if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
            if not 0 <= lab < len(names):
                raise KeyError(f"label id {lab} out of range; labels are {names}.")
            ids.append(int(lab))
        elif str(lab) in names:
            ids.append(names.index(str(lab)))
        else:
            raise KeyError(f"unknown label {lab!r}; labels are {names}.")
    if not ids:
        raise ValueError("labels is empty; pass None for all labels.")
    return sorted(set(ids))


def region_graph_arrays(regions_per_layer, label_ids, n_labels: int, labels=None, min_weight: int = 1) -> dict:
    """The region graph as arrays, built with one sort over every layer pair (no Python loop per item).

    Parameters
    ----------
    regions_per_layer : int array (n_layers, n_docs); label_ids : int array (n_docs,);
    n_labels : number of label names; labels : label ids to keep (sorted; None: all);
    min_weight : edges with fewer documents are dropped.

    Returns
    -------
    dict of arrays: ``node_layer``, ``node_region`` (n,), sorted by (layer, region); ``node_counts``
    (n, len(labels)) documents per kept label; ``edge_source``, ``edge_target`` (m,) node
    indices, sorted by (source, target); ``edge_counts`` (m, len(labels)); ``edge_weight`` (m,);
    ``labels`` (the kept label ids). Same content as :func:`region_graph`.
    """
    R = np.asarray(regions_per_layer, dtype=np.int64)
    lab = np.asarray(label_ids, dtype=np.int64).ravel()
    chosen = np.arange(n_labels) if labels is None else np.asarray(sorted(set(int(x) for x in labels)), np.int64)
    keep = np.isin(lab, chosen)
    R, lab = R[:, keep], lab[keep]
    # label ids renumbered 0..Kc-1 in the kept order
    col = np.full(max(n_labels, 1), -1, np.int64)
    col[chosen] = np.arange(chosen.size)
    c = col[lab]
    Kc = max(int(chosen.size), 1)
    L, n = R.shape
    n_reg = int(R.max()) + 1 if R.size else 1
    # nodes: unique (layer, region, label) codes
    layer = np.repeat(np.arange(L, dtype=np.int64), n)
    codes, cnt = np.unique((layer * n_reg + R.reshape(-1)) * Kc + np.tile(c, L), return_counts=True)
    node_code, inv = np.unique(codes // Kc, return_inverse=True)
    node_counts = np.zeros((node_code.size, Kc), np.int64)
    node_counts[inv, codes % Kc] = cnt
    out = {"node_layer": node_code // n_reg, "node_region": node_code % n_reg,
           "node_counts": node_counts[:, :chosen.size], "labels": chosen}
    if L < 2 or n == 0:
        z = np.zeros(0, np.int64)
        return {**out, "edge_source": z, "edge_target": z, "edge_counts": np.zeros((0, chosen.size), np.int64),
                "edge_weight": z}
    src = (np.arange(L - 1, dtype=np.int64)[:, None] * n_reg + R[:-1]).reshape(-1)  # node codes
    dst = (np.arange(1, L, dtype=np.int64)[:, None] * n_reg + R[1:]).reshape(-1)
    total = L * n_reg
    ecodes, ecnt = np.unique((src * total + dst) * Kc + np.tile(c, L - 1), return_counts=True)
    pair, inv = np.unique(ecodes // Kc, return_inverse=True)
    edge_counts = np.zeros((pair.size, Kc), np.int64)
    edge_counts[inv, ecodes % Kc] = ecnt
    weight = edge_counts.sum(1)
    ok = weight >= min_weight
    pair, edge_counts, weight = pair[ok], edge_counts[ok], weight[ok]
    out.update(edge_source=np.searchsorted(node_code, pair // total), edge_target=np.searchsorted(node_code, pair % total),
               edge_counts=edge_counts[:, :chosen.size], edge_weight=weight)
    return out


def region_graph(
    regions_per_layer,
    label_ids,
    label_names: Sequence[str],
    labels=None,
    min_weight: int = 1,
) -> nx.DiGraph:
    """Graph of regions linked through the documents that pass through them.

    Parameters
    ----------
    regions_per_layer : array_like of int, shape (n_layers, n_docs)
        Region id of each document at each layer.
    label_ids : array_like of int, shape (n_docs,)
        Index of each document's label in ``label_names``.
    label_names : sequence of str
    labels : str, int or sequence of them, optional
        Labels (names or ids) whose documents are used; all when None.
    min_weight : int
        Edges with fewer documents are dropped (nodes are kept).

    Returns
    -------
    networkx.DiGraph
        Nodes ``(layer, region)`` for every region holding at least one
        selected document, with attributes ``layer``, ``region``, ``counts``
        (``{label name: documents}`` for the selected labels, zeros included)
        and ``total``. Edge ``(l, a) -> (l + 1, b)`` has ``weight`` = number of
        selected documents in ``a`` at layer ``l`` and ``b`` at ``l + 1``, and
        per-label ``counts``. ``G.graph`` holds ``n_layers``, ``labels`` (the
        selected names) and ``mode="2d"``.
    """
    R = np.asarray(regions_per_layer, dtype=np.int64)
    if R.ndim != 2 or R.shape[1] == 0:
        raise ValueError(f"regions_per_layer must be (n_layers, n_docs); got {R.shape}.")
    if R.size and R.min() < 0:
        raise ValueError("region ids must be non-negative.")
    lab = np.asarray(label_ids, dtype=np.int64).ravel()
    names = [str(n) for n in label_names]
    if lab.shape != (R.shape[1],):
        raise ValueError(f"label_ids has {lab.size} entries for {R.shape[1]} documents.")
    if lab.size and (lab.min() < 0 or lab.max() >= len(names)):
        raise ValueError(f"label_ids must lie in [0, {len(names)}) (one per label name).")
    chosen = _select_labels(names, labels)
    keep = np.isin(lab, chosen)
    R, lab = R[:, keep], lab[keep]
    chosen_names = [names[i] for i in chosen]
    G = nx.DiGraph(n_layers=R.shape[0], labels=chosen_names, mode="2d")
    n_reg = int(R.max()) + 1 if R.size else 1
    K = len(names)
    for layer in range(R.shape[0]):
        _add_layer_nodes(G, layer, R[layer], lab, n_reg, K, names, chosen)
    for layer in range(R.shape[0] - 1):
        _add_layer_edges(G, layer, R[layer], R[layer + 1], lab, n_reg, K, names, chosen, min_weight)
    return G


def _counts_dict(row: np.ndarray, names: list[str], chosen: list[int]) -> dict[str, int]:
    return {names[c]: int(row[c]) for c in chosen}


def _add_layer_nodes(G, layer, reg, lab, n_reg, K, names, chosen):
    table = np.bincount(reg * K + lab, minlength=n_reg * K).reshape(n_reg, K)
    totals = table.sum(axis=1)
    for r in np.flatnonzero(totals):
        G.add_node(
            (layer, int(r)),
            layer=layer,
            region=int(r),
            counts=_counts_dict(table[r], names, chosen),
            total=int(totals[r]),
        )


def _add_layer_edges(G, layer, a, b, lab, n_reg, K, names, chosen, min_weight):
    codes, n = np.unique((a * n_reg + b) * K + lab, return_counts=True)
    pairs, inv = np.unique(codes // K, return_inverse=True)
    table = np.zeros((pairs.size, K), dtype=np.int64)
    table[inv, codes % K] = n
    weights = table.sum(axis=1)
    for p in np.flatnonzero(weights >= min_weight):
        src, dst = divmod(int(pairs[p]), n_reg)
        G.add_edge(
            (layer, src),
            (layer + 1, dst),
            weight=int(weights[p]),
            counts=_counts_dict(table[p], names, chosen),
        )


def spearman_matrix(A, B) -> np.ndarray:
    """Spearman rho between every column of A and every column of B.

    Ranks each column (ties get their average rank) and takes Pearson's r of
    the ranks. A constant column gives NaN.

    Parameters
    ----------
    A : array_like, shape (n_docs, p)
    B : array_like, shape (n_docs, q)

    Returns
    -------
    numpy.ndarray, shape (p, q)
    """
    ra = rankdata(np.asarray(A, dtype=np.float64), axis=0)
    rb = rankdata(np.asarray(B, dtype=np.float64), axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    na = np.sqrt((ra**2).sum(axis=0))
    nb = np.sqrt((rb**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ra.T @ rb) / np.outer(na, nb)


def correlation_graph(components_per_layer, threshold: float = 0.3) -> nx.DiGraph:
    """N-D mode graph: components of neighbouring layers joined by Spearman rho.

    Parameters
    ----------
    components_per_layer : array_like, shape (n_layers, n_docs, n_components)
        Reduced coordinates of each document at each layer.
    threshold : float
        An edge ``(l, i) -> (l + 1, j)`` exists when rho(component i at l,
        component j at l + 1) across documents is strictly greater.

    Returns
    -------
    networkx.DiGraph
        Nodes ``(layer, i)`` for every layer and component, attributes
        ``layer`` and ``component``; edges carry ``weight`` = rho.
        ``G.graph`` holds ``n_layers``, ``threshold`` and ``mode="nd"``.
    """
    C = np.asarray(components_per_layer, dtype=np.float64)
    if C.ndim != 3 or C.shape[1] < 2:
        raise ValueError(
            f"components_per_layer must be (n_layers, n_docs >= 2, n_components); got {C.shape}."
        )
    n_layers, _, k = C.shape
    G = nx.DiGraph(n_layers=n_layers, threshold=float(threshold), mode="nd")
    G.add_nodes_from(((l, i), {"layer": l, "component": i}) for l in range(n_layers) for i in range(k))
    for l in range(n_layers - 1):
        rho = spearman_matrix(C[l], C[l + 1])
        for i, j in zip(*np.nonzero(rho > threshold)):
            G.add_edge((l, int(i)), (l + 1, int(j)), weight=float(rho[i, j]))
    return G
