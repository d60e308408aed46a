"""Network metrics of layered region graphs (LLM-MRI's ``Metrics``), made exact.

Works on any networkx graph whose nodes carry an integer ``layer`` attribute
and whose edges join neighbouring layers (as built by
`mri_widgets.analysis.regions.region_graph` / `correlation_graph`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

__all__ = ["graph_metrics", "compare_graphs", "weighted_assortativity"]

NAN = float("nan")


# ------------------------------------------------------------------ helpers
def _moments(x: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, sample variance, adjusted skewness G1 and excess kurtosis G2.

    Same estimators as pandas ``Series.var/skew/kurt`` except that a constant
    sample gives NaN skewness and kurtosis (pandas reports 0).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return NAN, NAN, NAN, NAN
    mean = float(x.mean())
    d = x - mean
    var = float((d**2).sum() / (n - 1)) if n > 1 else NAN
    m2 = float((d**2).mean())
    flat = m2 <= 1e-12 * max(1.0, mean * mean)
    skew = kurt = NAN
    if n >= 3 and not flat:
        m3 = float((d**3).mean())
        skew = math.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5
    if n >= 4 and not flat:
        m4 = float((d**4).mean())
        kurt = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * m4 / m2**2 - 3 * (n - 1))
    return mean, var, skew, kurt


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return NAN
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx**2).sum() * (dy**2).sum()))
    if den <= 1e-12 * max(1.0, float(np.abs(x).max() * np.abs(y).max())):
        return NAN
    return float((dx * dy).sum() / den)


def weighted_assortativity(G) -> float:
    """Pearson correlation of strengths across the ends of each edge.

    Directed: pairs (out-strength(u), in-strength(v)) for every edge u -> v.
    Undirected: pairs (s(u), s(v)) and (s(v), s(u)) for every edge. This is
    ``nx.degree_assortativity_coefficient(G, weight="weight")``; NaN when
    there are no edges or either side has zero variance.
    """
    if G.number_of_edges() == 0:
        return NAN
    if G.is_directed():
        s_out = dict(G.out_degree(weight="weight"))
        s_in = dict(G.in_degree(weight="weight"))
        x = np.array([s_out[u] for u, _ in G.edges()], dtype=np.float64)
        y = np.array([s_in[v] for _, v in G.edges()], dtype=np.float64)
    else:
        s = dict(G.degree(weight="weight"))
        a = np.array([s[u] for u, _ in G.edges()], dtype=np.float64)
        b = np.array([s[v] for _, v in G.edges()], dtype=np.float64)
        x, y = np.concatenate([a, b]), np.concatenate([b, a])
    return _pearson(x, y)


def _density(G) -> float:
    return nx.density(G) if G.number_of_nodes() >= 2 else NAN


def _layers(G) -> tuple[list, np.ndarray, int]:
    """Nodes, each node's layer *position* and the number of layer positions.

    A graph that names its captured layers in ``G.graph["layer_ids"]`` (as
    ``ActivationAreas.graph`` does, e.g. layers 0, 3, 6, ...) is measured by
    position among those layers: layer ``layer_ids[j]`` counts as ``j``, so
    neighbouring captured layers are one apart, as in ``compare_labels``.
    """
    if not isinstance(G, nx.Graph):
        raise TypeError(
            f"graph_metrics takes a networkx graph (e.g. areas.graph() or region_graph(...)), "
            f"got {type(G).__name__}"
        )
    nodes = list(G.nodes())
    try:
        raw = [G.nodes[n]["layer"] for n in nodes]
    except KeyError:
        raise KeyError(
            "every node needs an integer 'layer' attribute (as region_graph sets)."
        ) from None
    for n, v in zip(nodes, raw):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"node {n!r} has layer {v!r}; layers must be integers")
    layers = np.array(raw, dtype=np.int64)
    layer_ids = G.graph.get("layer_ids")
    if layer_ids is not None:
        where = {int(l): j for j, l in enumerate(layer_ids)}
        unknown = sorted({int(l) for l in layers.tolist()} - where.keys())
        if unknown:
            raise ValueError(
                f"nodes have layers {unknown[:5]} that are not in G.graph['layer_ids'] = "
                f"{list(layer_ids)}; fix layer_ids or the nodes' 'layer' attributes."
            )
        layers = np.array([where[int(l)] for l in layers.tolist()], dtype=np.int64)
        return nodes, layers, len(where)
    if layers.size and layers.min() < 0:
        raise ValueError("node layers must be >= 0.")
    n_layers = G.graph.get("n_layers")
    if n_layers is None:
        n_layers = int(layers.max()) + 1 if layers.size else 0
    elif layers.size and layers.max() >= n_layers:
        raise ValueError(
            f"a node has layer {int(layers.max())} >= G.graph['n_layers'] = {n_layers}; for a graph "
            "on a subset of layers set G.graph['layer_ids'] to the captured layers (areas.graph() does)."
        )
    return nodes, layers, int(n_layers)


# ------------------------------------------------------------- projections
def _collaboration_projections(G, nodes, layers) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Newman collaboration-weighted projections onto even and odd layers.

    With ``B`` the (even nodes x odd nodes) 0/1 adjacency of the undirected
    graph and ``k_t`` the degree of node t, the even projection is
    ``W = B diag(1/(k_t - 1)) B^T`` with a zero diagonal (terms with
    ``k_t <= 1`` dropped), i.e. ``w_uv = sum over shared neighbours t of
    1/(k_t - 1)``, exactly ``bipartite.collaboration_weighted_projected_graph``;
    the odd one swaps the roles. Rows follow the order of ``nodes`` within
    each parity.
    """
    even = layers % 2 == 0
    pos = np.empty(len(nodes), dtype=np.int64)
    pos[even] = np.arange(even.sum())
    pos[~even] = np.arange((~even).sum())
    index = dict(zip(nodes, range(len(nodes))))
    rows, cols = [], []
    for u, v in G.edges():
        a, b = index[u], index[v]
        if not even[a]:
            a, b = b, a
        rows.append(pos[a])
        cols.append(pos[b])
    shape = (int(even.sum()), int((~even).sum()))
    B = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    B.data[:] = 1.0  # u->v and v->u count once, as in the undirected graph
    return _project(B), _project(B.T.tocsr())


def _project(B: sp.csr_matrix) -> sp.csr_matrix:
    k = np.asarray(B.sum(axis=0)).ravel()
    inv = np.divide(1.0, k - 1, out=np.zeros_like(k), where=k > 1)
    W = (B @ sp.diags(inv) @ B.T).tocsr()
    W = (W - sp.diags(W.diagonal())).tocsr()
    W.eliminate_zeros()
    return W


def _projection_metrics(W: sp.spmatrix) -> dict[str, float]:
    """Metrics of one undirected weighted projection given as a sparse matrix.

    Returns ``n_nodes``, ``mean_degree``, ``var_degree``, ``mean_strength``,
    ``var_strength``; ``clustering``, the average over all nodes of Onnela's
    weighted clustering ``c_i = [(W^)^3]_ii / (k_i (k_i - 1))`` with
    ``W^ = (W / max W) ** (1/3)`` elementwise and ``c_i = 0`` when
    ``k_i < 2`` (= ``nx.average_clustering(P, weight="weight")``);
    ``assortativity`` (Pearson of the strengths at the two ends of each edge,
    both orientations); ``density`` ``2m / (n(n-1))``; ``avg_shortest_path``,
    the mean hop count over ordered node pairs of the largest connected
    component (ties: the component holding the lowest row); NaN below 2 nodes.
    """
    W = sp.csr_matrix(W)
    n = W.shape[0]
    deg = np.diff(W.indptr).astype(np.float64)
    stren = np.asarray(W.sum(axis=1)).ravel()
    mean_d, var_d, _, _ = _moments(deg)
    mean_s, var_s, _, _ = _moments(stren)
    upper = sp.triu(W, k=1).tocoo()
    x, y = stren[upper.row], stren[upper.col]
    return {
        "n_nodes": n,
        "mean_degree": mean_d,
        "var_degree": var_d,
        "mean_strength": mean_s,
        "var_strength": var_s,
        "clustering": _weighted_clustering(W, deg),
        "assortativity": _pearson(np.concatenate([x, y]), np.concatenate([y, x])),
        "density": float(W.nnz / (n * (n - 1))) if n >= 2 else NAN,
        "avg_shortest_path": _lcc_path_length(W),
    }


def _weighted_clustering(W: sp.csr_matrix, deg: np.ndarray) -> float:
    if W.shape[0] == 0:
        return NAN
    if W.nnz == 0:
        return 0.0
    A = W / W.max()
    A.data = np.cbrt(A.data)
    tri = np.asarray((A @ A).multiply(A).sum(axis=1)).ravel()
    den = deg * (deg - 1)
    c = np.divide(tri, den, out=np.zeros_like(tri), where=den > 0)
    return float(c.mean())


def _lcc_path_length(W: sp.csr_matrix, chunk: int = 256) -> float:
    if W.shape[0] < 2:
        return NAN
    _, comp = csgraph.connected_components(W, directed=False)
    sizes = np.bincount(comp)
    members = np.flatnonzero(comp == sizes.argmax())
    if members.size < 2:
        return NAN
    sub = W[members][:, members]
    total = 0.0
    for start in range(0, members.size, chunk):
        idx = np.arange(start, min(start + chunk, members.size))
        total += csgraph.shortest_path(sub, directed=False, unweighted=True, indices=idx).sum()
    return float(total / (members.size * (members.size - 1)))


# ------------------------------------------------------------------ public
def graph_metrics(G) -> dict:
    """LLM-MRI's graph metrics for one layered graph.

    Notation: n nodes, m edges, ``k_i`` = degree (in + out, unweighted),
    ``s_i`` = strength (sum of incident edge weights, in + out), ``l_i`` =
    node layer, ``L = n_layers - 1`` (``n_layers`` from ``G.graph["n_layers"]``,
    else the largest layer + 1). When ``G.graph["layer_ids"]`` lists the
    captured layers (``ActivationAreas.graph`` on ``layers=range(0, 31, 3)``),
    ``l_i`` is the node's position among them and ``n_layers`` their number, so
    the result equals the one ``ActivationAreas.compare_labels`` reports.

    Returns
    -------
    dict
        * ``n_nodes``, ``n_edges``.
        * ``mean_degree``, ``var_degree``, ``skew_degree``, ``kurt_degree``
          and the same four for strength (``*_strength``): mean, sample
          variance (ddof 1), adjusted skewness
          ``G1 = sqrt(n(n-1))/(n-2) * m3/m2^1.5`` and excess kurtosis
          ``G2 = (n-1)/((n-2)(n-3)) * ((n+1) m4/m2^2 - 3(n-1))`` with
          ``m_k`` the k-th central moment (pandas' estimators).
        * ``assortativity``: Pearson correlation over edges u -> v of
          (out-strength u, in-strength v), i.e.
          ``nx.degree_assortativity_coefficient(G, weight="weight")``.
        * ``density``: ``m / (n(n-1))`` for a DiGraph (``2m / (n(n-1))``
          undirected).
        * ``center_of_mass``: ``sum_i (l_i - L/2) / n``, the mean layer offset
          of the nodes from the middle layer ``L/2 = (n_layers - 1)/2`` of
          layers ``0..n_layers-1``. Negative: nodes crowd the early layers;
          0 for a graph with as many nodes on every layer. By design this is
          LLM-MRI's value + 0.5: LLM-MRI sums node count per layer times
          ``layer - n_layers/2`` (over n), i.e. it measures from half the
          layer *count*, which is half a layer past the middle index, so a
          balanced graph scores -0.5 there and every graph is shifted towards
          "early". Subtract 0.5 to compare with numbers LLM-MRI reported.
        * ``center_of_strength``: ``sum_l sd_l (l - L/2) / sum_l sd_l`` with
          ``sd_l`` the sample std (ddof 1; 0 for a layer of one node) of the
          strengths of layer l's nodes. LLM-MRI sums ``sd_l (l - L/2)``
          without normalising; we divide by ``sum_l sd_l`` so it is a
          position in layers, comparable across labels of different sizes.
          (Total strength itself would not do: in a document-flow graph every
          layer's total is fixed by the document count.)
        * ``even_*`` / ``odd_*``: the projection of the (undirected) graph
          onto the nodes of even / odd layers, with Newman's collaboration
          weights ``w_uv = sum_{shared neighbours t} 1 / (k_t - 1)`` (LLM-MRI's
          ``bipartite.collaboration_weighted_projected_graph``), and on it:
          ``n_nodes``; ``mean_degree``, ``var_degree``, ``mean_strength``,
          ``var_strength`` (as above); ``clustering``, the mean over all
          nodes of Onnela's ``c_i = [(W^)^3]_ii / (k_i (k_i - 1))`` with
          ``W^ = (w / max w) ** (1/3)`` (0 when ``k_i < 2``; =
          ``nx.average_clustering(P, weight="weight")``); ``assortativity``
          (strengths at both ends of each edge, both orientations);
          ``density`` ``2m / (n(n-1))``; ``avg_shortest_path``, the mean hop
          count over ordered pairs of the largest connected component.
          LLM-MRI used the collaboration weights as distances there (a strong
          tie then counts as far) and gave NaN unless connected.
        * ``degree_by_layer``: list, mean degree of each layer's nodes
          (NaN for a layer without nodes).

        Undefined values are NaN: moments of too few values (variance < 2,
        skew < 3, kurtosis < 4 nodes) or of a constant sample, assortativity
        without edges or variance, density below 2 nodes, centres of an empty
        graph or with zero total spread.

    Raises
    ------
    TypeError
        ``G`` is not a networkx graph, or a node's layer is not an integer.
    KeyError
        A node lacks the ``layer`` attribute.
    ValueError
        An edge joins two layers of the same parity (projection undefined).
    """
    nodes, layers, n_layers = _layers(G)
    deg = np.array([G.degree(n) for n in nodes], dtype=np.float64)
    stren = np.array([G.degree(n, weight="weight") for n in nodes], dtype=np.float64)
    out: dict = {"n_nodes": len(nodes), "n_edges": G.number_of_edges()}
    for name, vals in (("degree", deg), ("strength", stren)):
        for stat, v in zip(("mean", "var", "skew", "kurt"), _moments(vals)):
            out[f"{stat}_{name}"] = v
    out["assortativity"] = weighted_assortativity(G)
    out["density"] = _density(G)
    offset = layers - (n_layers - 1) / 2
    out["center_of_mass"] = float(offset.mean()) if len(nodes) else NAN
    out["center_of_strength"] = _center_of_strength(stren, layers, n_layers)
    _check_parity(G, dict(zip(nodes, layers.tolist())))
    for side, W in zip(("even", "odd"), _collaboration_projections(G, nodes, layers)):
        for k, v in _projection_metrics(W).items():
            out[f"{side}_{k}"] = v
    out["degree_by_layer"] = _per_layer_mean(deg, layers, n_layers)
    return out


def _check_parity(G, position: dict) -> None:
    for u, v in G.edges():
        if (position[u] - position[v]) % 2 == 0:
            raise ValueError(
                f"edge {u!r} -> {v!r} joins layers of the same parity; the even/odd "
                "projections need edges between neighbouring layers."
            )


def _per_layer_mean(values: np.ndarray, layers: np.ndarray, n_layers: int) -> list[float]:
    count = np.bincount(layers, minlength=n_layers).astype(np.float64)
    total = np.bincount(layers, weights=values, minlength=n_layers)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(v) for v in np.where(count > 0, total / count, np.nan)]


def _center_of_strength(stren: np.ndarray, layers: np.ndarray, n_layers: int) -> float:
    if stren.size == 0:
        return NAN
    count = np.bincount(layers, minlength=n_layers)
    s1 = np.bincount(layers, weights=stren, minlength=n_layers)
    s2 = np.bincount(layers, weights=stren**2, minlength=n_layers)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1**2 / np.maximum(count, 1)) / (count - 1)
    sd = np.sqrt(np.clip(np.where(count > 1, var, 0.0), 0.0, None))
    if sd.sum() <= 0:
        return NAN
    offset = np.arange(n_layers) - (n_layers - 1) / 2
    return float((sd * offset).sum() / sd.sum())


def compare_graphs(graphs: Mapping) -> "pandas.DataFrame":  # noqa: F821
    """`graph_metrics` of several graphs side by side.

    Parameters
    ----------
    graphs : mapping label -> graph

    Returns
    -------
    pandas.DataFrame
        One column per label, one row per metric; ``degree_by_layer`` is
        spread over rows ``degree_by_layer[0]``, ``degree_by_layer[1]``, ...
        (NaN where a graph has fewer layers).
    """
    import pandas as pd  # keep the module importable without pandas

    if not isinstance(graphs, Mapping) or not graphs:
        raise TypeError("compare_graphs takes a non-empty dict {label: graph}.")
    columns, rows = {}, {}
    for label, G in graphs.items():
        m = graph_metrics(G)
        per_layer = m.pop("degree_by_layer")
        m.update({f"degree_by_layer[{i}]": v for i, v in enumerate(per_layer)})
        columns[label] = pd.Series(m, dtype=np.float64)
        rows.update(dict.fromkeys(m))
    longest = max(columns.values(), key=len).index
    order = [r for r in rows if not r.startswith("degree_by_layer")]
    order += [r for r in longest if r.startswith("degree_by_layer")]
    return pd.DataFrame(columns).reindex(order)
