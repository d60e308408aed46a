"""FlowGraph: the semantic information-flow graph of a prompt (VISIT) in the shared graph view.

The graph of :func:`mri_widgets.flow_graph` drawn top to bottom (positions from
:func:`~mri_widgets.analysis.flow.flow_layout`: the residual stream as a vertical spine on the left,
each layer's heads and then its neurons branching off to the right, labels beside the nodes; the
first view is readable, at the top of the graph, and the toolbar's "fit" shows it all), each node
coloured by the rank of the target
token in its reading through the final norm and unembedding (green: rank 1, red: last), its
tooltip listing the top tokens. Clicking a head node (query, key, value, output) sets
``selection.layer`` and ``selection.head``; clicking a neuron node sets ``selection.layer`` and
``selection.neuron`` (so :class:`~mri_widgets.HeadMap` and :class:`~mri_widgets.NeuronViewer`
follow); clicking a residual node or a layer header sets ``selection.layer``.

With ``interventions=`` (a shared :class:`~mri_widgets.Interventions`), the graph is the run under
the enabled interventions, recomputed whenever they change, and a panel beside it compares that
run with the clean one: the target's probability and rank, and the prediction, before and after
(:attr:`FlowGraph.comparison`). With a head or neuron node selected, the view offers "ablate
(zero / mean)".
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import traitlets as t

from ..analysis.flow import (RESIDUAL_KINDS, _count, _layers, _position, _target_id, build_flow_graph,
                             capture_flow, flow_layout, head_weights)
from .graph_view import GraphError
from .graph_view import CATEGORICAL, GraphView
from .interventions import AblationControls
from .selection import Selection

__all__ = ["FlowGraph", "rank_colors"]

#: green (target ranked first) -> yellow -> red (ranked last)
_RANK_STOPS = np.array([[26, 152, 80], [254, 224, 139], [215, 48, 39]], np.float64)

_MEASURE_COLORS = {"norm": "#9a9a9a", "attention": CATEGORICAL[0], "activation": CATEGORICAL[1]}

_SHAPES = {"block_in": "round-rectangle", "attn_in": "round-rectangle", "attn_out": "round-rectangle",
           "resid_mid": "round-rectangle", "mlp_in": "round-rectangle", "mlp_out": "round-rectangle",
           "block_out": "round-rectangle", "query": "diamond", "key": "triangle", "value": "triangle",
           "head_out": "hexagon", "neuron_key": "ellipse", "neuron_value": "ellipse"}

_SHORT = {"block_in": "in", "attn_in": "attn in", "attn_out": "attn out", "resid_mid": "mid",
          "mlp_in": "mlp in", "mlp_out": "mlp out", "block_out": "out"}

# ---- drawing sizes (layout units = px at zoom 1) --------------------------------------------------
#: node label font size; labels sit right of their node
LABEL_SIZE = 12.0
#: column and row spacing of flow_layout: a label of ~20 characters fits between two columns
DX, DY = 150.0, 20.0
#: the first view never zooms out further: labels stay >= ~10 px on screen (the "fit" button shows all)
MIN_ZOOM = 0.85
#: node diameters: residual stages, head nodes, neuron nodes
_SIZES = {"residual": 16.0, "head": 14.0, "neuron": 12.0}
#: layer headers and sub-block headers (font px at zoom 1)
_HEADER_SIZE, _SUBHEADER_SIZE = 20.0, 12.0
#: automatic canvas height: the graph at MIN_ZOOM, within these bounds (px)
_AUTO_HEIGHT = (360, 720)
#: longest token shown in a label (the tooltip has it whole)
_LABEL_TOKEN = 10


def rank_colors(ranks, vocab_size: int) -> np.ndarray:
    """(n, 3) uint8 colours of target ranks (1 = top) on a log scale: green -> yellow -> red."""
    r = np.clip(np.asarray(ranks, np.float64), 1, max(2, vocab_size))
    x = np.log(r) / math.log(max(2, vocab_size))
    seg = np.minimum((x * 2).astype(int), 1)
    f = (x * 2 - seg)[:, None]
    out = _RANK_STOPS[seg] * (1 - f) + _RANK_STOPS[seg + 1] * f
    return np.round(out).astype(np.uint8)


def _tok(s: str) -> str:
    """A token as visible text: quotes keep leading spaces visible, newlines and tabs escaped."""
    return "'" + s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + "'"


def _label_tok(s: str) -> str:
    """A token for a node label: visible as :func:`_tok`, cut to ``_LABEL_TOKEN`` characters."""
    s = s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return "'" + (s if len(s) <= _LABEL_TOKEN else s[:_LABEL_TOKEN - 1] + "\u2026") + "'"


def _parse_layers(value):
    """The layers box as typed: an empty string means the default; anything else is read by
    :func:`mri_widgets._checks.parse_layers` ("10,11", "8-11", "8:12", a list)."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


class LayerSpec(t.TraitType):
    """A trait for layers: None (the default layers), a list of ints, or a string to parse
    (``"8-11"``, ``"10,11"``); tuples, ranges and numpy integers become a list of ints."""

    info_text = "None, a list of layer indices, or a string such as '8-11'"

    def __init__(self, **kwargs):
        super().__init__(default_value=None, allow_none=True, **kwargs)

    def validate(self, obj, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (bool, bytes, float)) or not hasattr(value, "__iter__"):
            self.error(obj, value)
        out = []
        for v in value:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise t.TraitError(f"layers must hold integers, got {v!r} in {value!r}")
            out.append(int(v))
        return out


class FlowGraph(GraphView, AblationControls):
    """The information flow of one prompt position through chosen layers (VISIT), live.

    Parameters
    ----------
    model : LoadedModel (or anything :func:`mri_widgets.load` accepts)
    prompt : str
    layers, position, target, top_heads, top_neurons, bottom_neurons, top_keys :
        as in :func:`mri_widgets.flow_graph` (``layers=None``: the last 2 layers).
    height : height of the drawing in px; None (default): the graph's height at a readable zoom,
        between 360 and 720 px.
    selection : the shared :class:`Selection`.
    interventions : a shared :class:`~mri_widgets.Interventions`, optional: the graph shows the run
        under its enabled interventions and :attr:`comparison` the target before and after.

    Attributes (synced traits; set them from Python, or from the view's toolbar, to redraw)
    ----------------------------------------------------------------------------------------
    layers : list of int -- also accepts ``"8-11"`` or ``"10,11"``.
    position : int -- token position followed (-1: last).
    target : str, int or None -- the token whose rank colours the nodes (None: the model's
        prediction).
    prompt : str
    comparison : dict -- empty without enabled interventions; else ``{position, token, target,
        target_id, interventions: [labels], clean: {...}, intervened: {...}}`` where each run
        holds the target's ``prob`` and ``rank`` (1 = top) at ``position`` and the run's
        ``prediction``, ``prediction_id`` and ``prediction_prob``. The target is the ``target``
        asked for, else the clean run's prediction (the graph is then coloured by its rank too).

    Other attributes: ``graph`` (the networkx.DiGraph drawn), ``nodes`` (its nodes in drawing
    order: index i in the view is ``nodes[i]``).
    """

    #: the prompt whose flow is drawn
    prompt = t.Unicode("").tag(sync=True)
    #: layers drawn: a list of ints once drawn; also accepts a string such as ``"8-11"`` or ``"10,11"``
    layers = LayerSpec().tag(sync=True)
    #: token position followed (-1: last)
    position = t.Int(-1).tag(sync=True)
    #: the token whose rank colours the nodes: a string, a token id, or None (the model's prediction)
    target = t.Union([t.Unicode(), t.Int()], default_value=None, allow_none=True).tag(sync=True)
    #: the target before and after the enabled interventions (see the class docs); {} without any
    comparison = t.Dict().tag(sync=True)

    def __init__(self, model, prompt: str, *, layers=None, position: int = -1, target=None, top_heads: int = 10,
                 top_neurons: int = 18, bottom_neurons: int = 7, top_keys: int = 3, height: Optional[int] = None,
                 selection: Optional[Selection] = None, interventions=None):
        from ..models.loading import load
        from .interventions import Interventions

        lm = load(model)
        if lm.is_encoder or lm.adapter.unembed_module is None:
            raise ValueError(f"{lm.name} is an encoder without an unembedding: the flow graph needs a causal LM")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if interventions is not None and not isinstance(interventions, Interventions):
            raise TypeError(f"interventions must be a mri_widgets.Interventions, got {type(interventions).__name__}")
        self.interventions = interventions
        self._clean_cache: dict = {}
        self.lm = lm
        self._counts = dict(top_heads=_count(top_heads, "top_heads"), top_neurons=_count(top_neurons, "top_neurons"),
                            bottom_neurons=_count(bottom_neurons, "bottom_neurons"),
                            top_keys=_count(top_keys, "top_keys"))
        self._cache: dict = {}
        if height is not None and (isinstance(height, bool) or not isinstance(height, (int, np.integer))
                                   or height <= 0):
            raise GraphError(f"height must be a positive number of px or None (automatic), got {height!r}")
        self._height = None if height is None else int(height)
        self._updating = True
        state = self._compute(prompt, _parse_layers(layers), position, target)
        nodes, edges, kw = self._drawing(state)
        super().__init__(nodes, edges, selection=selection, **kw)
        self._commit(state)
        self._updating = False
        self._connect_interventions(interventions)

    # ---- computing ---------------------------------------------------------------------------
    def _active(self) -> list:
        return [] if self.interventions is None else self.interventions.active

    def _signature(self) -> tuple:
        """What the drawn run depends on among the interventions (objects and labels)."""
        return tuple((id(it), it.label) for it in self._active())

    def _capture(self, prompt, layers):
        active = self._active()
        key = (prompt, tuple(layers), self._signature())
        if key not in self._cache:
            self._cache.clear()  # one prompt/layers at a time: position and target changes reuse it
            if active:
                with self.lm.intervene(active):
                    cap = capture_flow(self.lm, prompt, layers)
            else:
                cap = capture_flow(self.lm, prompt, layers)
            self._cache[key] = (cap, head_weights(self.lm, layers))
        return self._cache[key]

    def _clean_logits(self, prompt) -> torch.Tensor:
        """(seq, vocab) logits of the clean run (no interventions), as the flow capture reads them."""
        if prompt not in self._clean_cache:
            self._clean_cache.clear()
            n = self.lm.n_layers
            cap = self.lm.capture([prompt], sites=["resid"], layers={"resid": [n]}, progress=False)
            seq = int(cap.mask[0].sum())
            self._clean_cache[prompt] = self.lm.unembed(cap["resid"][0, 0, :seq]).float().cpu()
        return self._clean_cache[prompt]

    def _comparison(self, prompt, cap, pos: int, tid: Optional[int]) -> tuple:
        """(comparison dict, target id) of the clean run and the run under the interventions."""
        active = self._active()
        if not active:
            return {}, tid
        clean = self._clean_logits(prompt)[pos]
        if tid is None:
            tid = int(clean.argmax())
        tok = lambda ids: self.lm.token_str(ids)[0]  # noqa: E731
        return {"position": int(pos), "token": cap.tokens[pos], "target": tok([tid]), "target_id": int(tid),
                "interventions": [str(it.label) for it in active],
                "clean": _readout(clean, tid, tok), "intervened": _readout(cap.logits[pos], tid, tok)}, tid

    def _compute(self, prompt, layers, position, target) -> dict:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        sel = _layers(self.lm, layers)
        tid = _target_id(self.lm, None if target in ("", None) else target)
        cap, maps = self._capture(prompt, sel)
        pos = _position(position, cap.seq_len)
        comparison, tid = self._comparison(prompt, cap, pos, tid)
        G = build_flow_graph(self.lm, cap, maps, position=pos, target_id=tid, prompt=prompt, **self._counts)
        return {"prompt": prompt, "layers": sel, "position": position, "target": target, "graph": G,
                "comparison": comparison, "signature": self._signature()}

    def _commit(self, state) -> None:
        self._updating = True
        try:
            with self.hold_trait_notifications():
                self.prompt = state["prompt"]
                self.layers = list(state["layers"])
                self.position = int(state["position"])
                self.target = None if state["target"] in ("", None) else state["target"]
                if "comparison" in state:
                    self.comparison = state["comparison"]
                    self._drawn_signature = state["signature"]
        finally:
            self._updating = False

    @t.observe("prompt", "layers", "position", "target")
    def _changed(self, change):
        if self._updating:
            return
        old = {"prompt": self.prompt, "layers": self.layers, "position": self.position, "target": self.target}
        old[change["name"]] = change["old"]
        try:
            layers = _parse_layers(self.layers)
            state = self._compute(self.prompt, layers, self.position, self.target)
        except Exception as e:  # show it in the view, restore the last good values, tell Python callers
            self._commit({**old, "graph": None})
            self.error = f"{type(e).__name__}: {e}"
            raise
        nodes, edges, kw = self._drawing(state)
        self._commit(state)
        self.set_graph(nodes, edges, **kw)

    def _interventions_changed(self, change) -> None:
        """The shared interventions changed: redraw the run under the enabled ones (when they differ)."""
        super()._interventions_changed(change)
        if self._signature() == getattr(self, "_drawn_signature", None):
            return
        try:
            state = self._compute(self.prompt, _parse_layers(self.layers), self.position, self.target)
        except Exception as e:  # shown in the view; the interventions widget itself must not fail
            self.error = f"{type(e).__name__}: {e}"
            return
        nodes, edges, kw = self._drawing(state)
        self._commit(state)
        self.set_graph(nodes, edges, **kw)

    # ---- drawing -----------------------------------------------------------------------------
    def _drawing(self, state):
        G = state["graph"]
        self.graph = G
        self._requested_target = state["target"]
        lm = self.lm
        pos = flow_layout(G, dx=DX, dy=DY)
        order = sorted(G.nodes, key=lambda n: (pos[n][1], pos[n][0]))  # reading order: rows, then columns
        self.nodes = order
        index = {n: i for i, n in enumerate(order)}
        A = [G.nodes[n] for n in order]
        xy = np.array([pos[n] for n in order], np.float64).reshape(-1, 2)
        target = G.graph["target"]
        labels, tips, select, sizes = [], [], [], []
        for a in A:
            kind = a["kind"]
            top1 = _label_tok(a["top_tokens"][0])
            if kind in RESIDUAL_KINDS:
                labels.append(f"{_SHORT[kind]} {top1}")
                select.append({"layer": a["layer"]})
                sizes.append(_SIZES["residual"])
            elif "head" in a:
                if kind in ("key", "value"):
                    labels.append(f"{kind[0]}@{a['position']} {_label_tok(a['token'])}")
                else:
                    labels.append(f"h{a['head']} {'q' if kind == 'query' else 'out'} {top1}")
                select.append({"layer": a["layer"], "head": a["head"]})
                sizes.append(_SIZES["head"])
            else:
                labels.append(f"n{a['neuron']} key {top1}" if kind == "neuron_key" else f"val {top1}")
                select.append({"layer": a["layer"], "neuron": a["neuron"]})
                sizes.append(_SIZES["neuron"])
            tips.append(self._tooltip(a, target))
        nodes = {
            "x": xy[:, 0], "y": xy[:, 1], "label": labels, "tooltip": tips, "select": select,
            "size": np.array(sizes), "shape": [_SHAPES[a["kind"]] for a in A],
            "color": rank_colors([a["target_rank"] for a in A], lm.vocab_size),
        }
        E = list(G.edges(data=True))
        raw = np.array([d["weight"] for _, _, d in E], np.float64)
        measures = [d["measure"] for _, _, d in E]
        rel = np.zeros_like(raw)
        for m in set(measures):
            sel = np.array([x == m for x in measures])
            top = raw[sel].max() if sel.any() else 0.0
            rel[sel] = raw[sel] / top if top > 0 else 0.0
        etips = []
        for (u, v, d), _r in zip(E, rel):
            what = {"norm": "norm", "attention": "attention", "activation": "|activation|"}[d["measure"]]
            line = f"{G.nodes[u]['label']} \u2192 {G.nodes[v]['label']}\n{what}: {d['weight']:.4g}"
            if d.get("skipped"):
                line += f"\n(layers {d['skipped'][0]}..{d['skipped'][-1]} not shown)"
            etips.append(line)
        edges = {
            "source": np.array([index[u] for u, _, _ in E], np.int64),
            "target": np.array([index[v] for _, v, _ in E], np.int64),
            "weight": rel, "width": 0.6 + 5.0 * rel, "tooltip": etips,
            "color": [_MEASURE_COLORS[m] for m in measures],
        }
        annotations = self._headers(G, pos)
        g = G.graph
        under = state.get("comparison", {}).get("interventions") or []
        title = ((f"[under {len(under)} intervention{'s' if len(under) != 1 else ''}] " if under else "")
                 + f"{g['prompt']!r} \u2014 position {g['position']} {_tok(g['tokens'][g['position']])} \u2192 "
                 f"prediction {_tok(g['prediction'])} ({g['prediction_prob']:.1%}) \u00b7 colour: rank of "
                 f"{_tok(target)} (green = 1, red = last) \u00b7 edges: grey norm, blue attention, orange activation")
        ys = [p[1] for p in pos.values()] + [a["y"] for a in annotations]
        height = self._height
        if height is None:  # the whole graph at the first view's zoom, within bounds
            span = (max(ys) - min(ys) + 2 * DY) * MIN_ZOOM + 48
            height = int(min(max(span, _AUTO_HEIGHT[0]), _AUTO_HEIGHT[1]))
        kw = dict(title=title, directed=True, weight_name="relative weight", annotations=annotations, height=height,
                  label_size=LABEL_SIZE, label_position="right", label_width=DX - 24.0, min_zoom=MIN_ZOOM)
        return nodes, edges, kw

    @staticmethod
    def _headers(G, pos) -> list:
        """Layer headers (click: select the layer) above each layer, sub-block headers above heads and neurons."""
        g = G.graph
        out = []
        prev = None
        for l in g["layers"]:
            nodes = [n for n, a in G.nodes(data=True) if a["layer"] == l]
            top = min(pos[n][1] for n in nodes)
            x0 = 0.12 * DX
            head = {"x": x0, "y": top - 2.5 * DY, "text": f"layer {l}", "select": {"layer": int(l)},
                    "size": _HEADER_SIZE, "align": "left"}
            out.append(head)
            if prev is not None and l > prev + 1:
                skipped = f"{prev + 1}" if l == prev + 2 else f"{prev + 1}\u2013{l - 1}"
                out.append({"x": x0 + 0.62 * _HEADER_SIZE * len(head["text"]) + 12, "y": head["y"],
                            "text": f"(layer{'s' if l > prev + 2 else ''} {skipped} not shown)",
                            "size": _SUBHEADER_SIZE, "align": "left", "bold": False, "color": "#777777"})
            prev = l
            heads = {a["head"] for n, a in G.nodes(data=True) if a["layer"] == l and "head" in a}
            if heads:
                y = min(pos[n][1] for n in nodes if "head" in G.nodes[n])
                out.append({"x": 2 * DX - 8, "y": y - 1.2 * DY, "size": _SUBHEADER_SIZE, "align": "left",
                            "bold": False, "color": "#666666",
                            "text": f"attention: {len(heads)} head{'s' if len(heads) != 1 else ''} with the largest "
                                    f"output (query \u25c6 \u2192 keys \u25b2 \u2192 values \u25b2 \u2192 output \u2b22)"})
            neurons = [n for n in nodes if G.nodes[n]["kind"] == "neuron_key"]
            if neurons:
                y = min(pos[n][1] for n in neurons)
                n_top = sum(1 for n in neurons if G.nodes[n]["group"] == "top")
                what = f"top {n_top}" + (f", bottom {len(neurons) - n_top}" if len(neurons) > n_top else "")
                out.append({"x": 2 * DX - 8, "y": y - 1.1 * DY, "size": _SUBHEADER_SIZE, "align": "left",
                            "bold": False, "color": "#666666",
                            "text": f"MLP: {what} neurons by activation \u00d7 |W_out| (key \u25cf \u2192 value \u25cf)"})
        return out

    def _encode(self, nodes, edges, groups, annotations, part_names, part_colors) -> dict:
        out = super()._encode(nodes, edges, groups, annotations, part_names, part_colors)
        out["controls"] = self._controls()
        return out

    def _controls(self) -> list:
        """Toolbar controls for the view: each sets the synced trait ``name`` (see the module docs)."""
        G = getattr(self, "graph", None)
        if G is None:
            return []
        toks = G.graph["tokens"]
        positions = [[i, f"{i} {_tok(s)}"] for i, s in enumerate(toks)]
        layers = G.graph["layers"]
        text = (f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1
                else ",".join(map(str, layers)))
        return [
            {"name": "layers", "label": "layers", "type": "text", "value": text,
             "placeholder": f"e.g. {max(0, self.lm.n_layers - 2)}-{self.lm.n_layers - 1}"},
            {"name": "position", "label": "position", "type": "select", "value": G.graph["position"],
             "options": positions},
            {"name": "target", "label": "target", "type": "text",
             "value": "" if getattr(self, "_requested_target", None) in (None, "") else G.graph["target"],
             "placeholder": f"prediction {_tok(G.graph['prediction'])}"},
        ]

    @staticmethod
    def _tooltip(a, target: str) -> str:
        lines = [a["label"] + (f" (written by {_tok(a['token'])} @{a['position']})" if a["kind"] in ("key", "value")
                               else "")]
        lines.append(f"target {_tok(target)}: rank {a['target_rank']}, p = {a['target_prob']:.3g}")
        for s, p in zip(a["top_tokens"], a["top_probs"]):
            lines.append(f"  {_tok(s)}  {p:.1%}")
        extra = [f"norm {a['norm']:.3g}"]
        if "attention" in a:
            extra.append(f"attention {a['attention']:.3f}")
        if "activation" in a:
            extra.append(f"activation {a['activation']:.3g}")
            extra.append(f"score {a['score']:.3g}")
        lines.append(", ".join(extra))
        if "up_top_tokens" in a:
            lines.append("up row: " + " ".join(_tok(s) for s in a["up_top_tokens"][:5]))
        return "\n".join(lines)


def _readout(logits: torch.Tensor, tid: int, decode) -> dict:
    """The target's probability and rank (1 = top) and the prediction, from one position's logits."""
    p = torch.softmax(logits.double(), -1)
    top = int(p.argmax())
    return {"prob": float(p[tid]), "rank": int((p > p[tid]).sum()) + 1, "prediction": decode([top]),
            "prediction_id": top, "prediction_prob": float(p[top])}
