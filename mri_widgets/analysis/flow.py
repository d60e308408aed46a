"""Semantic information flow of one prompt position through chosen layers (VISIT, Katz & Belinkov 2023).

:func:`flow_graph` returns a :class:`networkx.DiGraph` whose nodes are vectors in the residual
basis (residual stages, per-head queries, keys, values and outputs, MLP neuron keys and values),
each read through the final norm and the unembedding, and whose edges say how much flows from one
to the next. :func:`flow_layout` places it compactly: the residual stream as a vertical spine, each
layer's heads and then its neurons branching off to the right.

Unlike the original (a hand-written JSON of module paths per architecture, GPT-2/GPT-J/GPT-Neo/
Llama-2, the Llama gate ignored), everything comes from the architecture adapters: GPT-2,
GPT-Neo, Llama-family (gated MLPs, grouped-query attention), GPT-NeoX and GPT-J (parallel
blocks) work without configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import networkx as nx
import numpy as np
import torch

from .._checks import check_int
from ..models.adapters import AdapterError

__all__ = ["flow_graph", "flow_layout", "capture_flow", "head_weights", "FlowCapture", "HeadWeights", "FLOW_SITES",
           "RESIDUAL_KINDS", "NODE_KINDS", "LAYOUT_COLUMNS", "DEFAULT_LAYERS"]

#: how many of the last layers ``layers=None`` shows (a readable graph has ~140 nodes per layer)
DEFAULT_LAYERS = 2

#: residual stages of one block, in flow order
RESIDUAL_KINDS = ("block_in", "attn_in", "attn_out", "resid_mid", "mlp_in", "mlp_out", "block_out")

#: every node kind, in flow order within one layer
NODE_KINDS = ("block_in", "attn_in", "query", "key", "value", "head_out", "attn_out", "resid_mid",
              "mlp_in", "neuron_key", "neuron_value", "mlp_out", "block_out")

_NAMES = {
    "block_in": "block in", "attn_in": "attn in", "attn_out": "attn out", "resid_mid": "resid mid",
    "mlp_in": "mlp in", "mlp_out": "mlp out", "block_out": "block out",
}


# ---- validation ---------------------------------------------------------------------------------

def _count(value, name: str) -> int:
    return check_int(value, name, min=0)


def _layers(lm, layers) -> list[int]:
    from .._checks import parse_layers
    n = lm.n_layers
    return parse_layers(layers, n, default=range(max(0, n - DEFAULT_LAYERS), n), sort=True)


def _target_id(lm, target) -> Optional[int]:
    from .._checks import check_target
    return check_target(lm, target)


def _position(position, seq: int) -> int:
    position = check_int(position, "position")
    if not -seq <= position < seq:
        raise IndexError(f"position {position} is out of range: the prompt has {seq} tokens (0..{seq - 1}, or -1 for the last)")
    return position % seq


# ---- what the graph reads: one engine capture and the adapters' attention weights -------------------

#: the engine sites (:data:`mri_widgets.models.capture.SITES`) one flow graph reads
FLOW_SITES = ("resid", "attn_in", "v", "attn", "z", "attn_out", "resid_mid", "mlp_in", "mlp", "mlp_out")


@dataclass
class FlowCapture:
    """Everything :func:`flow_graph` needs from one forward pass of one prompt, read through the
    capture engine (:meth:`LoadedModel.capture <mri_widgets.models.loading.LoadedModel.capture>`).

    Per-layer dicts map a layer index to float32 CPU tensors over all positions of the prompt:
    ``block_in``, ``attn_in``, ``attn_out``, ``resid_mid``, ``mlp_in``, ``mlp_out``,
    ``block_out`` (seq, d_model) (sites ``resid``, ``attn_in``, ``attn_out``, ``resid_mid``,
    ``mlp_in``, ``mlp_out``); ``z`` and ``values`` (n_heads, seq, d_head) (sites ``z``, ``v``);
    ``acts`` (seq, d_mlp) (site ``mlp``); for gated MLPs ``gate`` and ``up`` (seq, d_mlp)
    (``mlp_gate``, ``mlp_up``); ``attn`` (n_heads, seq, seq). ``logits`` (seq, vocab) are the
    model's own (the last residual through the final norm and the unembedding).
    ``resid_mid`` is the input of ``ln_mlp`` for sequential blocks and ``block_in + attn_out``
    for parallel blocks (a state the model never forms there: its MLP reads the block input).
    """

    input_ids: list
    tokens: list
    logits: torch.Tensor
    block_in: dict = field(default_factory=dict)
    attn_in: dict = field(default_factory=dict)
    z: dict = field(default_factory=dict)
    attn_out: dict = field(default_factory=dict)
    resid_mid: dict = field(default_factory=dict)
    mlp_in: dict = field(default_factory=dict)
    acts: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    up: dict = field(default_factory=dict)
    mlp_out: dict = field(default_factory=dict)
    block_out: dict = field(default_factory=dict)
    attn: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return len(self.input_ids)


@dataclass
class HeadWeights:
    """One layer's attention weights per head, float32 on the CPU (see :meth:`LoadedModel.W_Q`):
    ``W_Q``, ``W_K`` (n_heads, d_model, d_head), ``b_Q``, ``b_K`` (n_heads, d_head), ``W_O``
    (n_heads, d_head, d_model); keys expanded to every query head (grouped-query attention)."""

    W_Q: torch.Tensor
    b_Q: torch.Tensor
    W_K: torch.Tensor
    b_K: torch.Tensor
    W_O: torch.Tensor


def _check_plain_qk(lm, layers) -> None:
    for l in layers:
        if lm.adapter.qk_normed(l):
            raise AdapterError(
                f"layer {l}: the queries and keys of {lm.name} are normalised after their projection (Qwen3 / "
                "OLMo-2 style), so they are not a plain projection of the attention input; the flow graph cannot "
                "decompose this model's heads")


def capture_flow(lm, prompt: str, layers) -> FlowCapture:
    """One forward pass of ``prompt`` through the capture engine, recording what :func:`flow_graph`
    reads at ``layers`` (validated, non-negative; see :class:`FlowCapture`)."""
    _check_plain_qk(lm, layers)
    spec = lm.adapter.spec
    n = lm.n_layers
    sites = FLOW_SITES + (("mlp_gate", "mlp_up") if spec.gated else ())
    resid = sorted({l for l in layers} | {l + 1 for l in layers} | {n})
    sel = {s: (resid if s == "resid" else list(layers)) for s in sites}
    cap = lm.capture([prompt], sites=sites, layers=sel, progress=False)
    seq = int(cap.mask[0].sum())
    ids = cap.input_ids[0, :seq].tolist()

    def per_layer(site):
        return {l: cap[site][0, i, ..., :seq, :] for i, l in enumerate(cap.layers[site])}

    states = per_layer("resid")
    out = FlowCapture(input_ids=ids, tokens=list(cap.tokens[0]), logits=lm.unembed(states[n]).float().cpu())
    for l in layers:
        out.block_in[l], out.block_out[l] = states[l], states[l + 1]
    names = (("attn_in", "attn_in"), ("attn_out", "attn_out"), ("resid_mid", "resid_mid"), ("mlp_in", "mlp_in"),
             ("mlp_out", "mlp_out"), ("acts", "mlp"), ("z", "z"), ("values", "v"))
    for name, site in names + ((("gate", "mlp_gate"), ("up", "mlp_up")) if spec.gated else ()):
        getattr(out, name).update(per_layer(site))
    out.attn.update({l: cap["attn"][0, i, :, :seq, :seq] for i, l in enumerate(cap.layers["attn"])})
    if spec.parallel:  # the engine's resid_mid is the block input there: the graph shows the sum, as documented
        for l in layers:
            out.resid_mid[l] = out.block_in[l] + out.attn_out[l]
    return out


def head_weights(lm, layers) -> dict:
    """``{layer: HeadWeights}`` from the adapters' named attention weights."""
    _check_plain_qk(lm, layers)

    def f32(t):
        return t.detach().float().cpu()

    return {l: HeadWeights(W_Q=f32(lm.W_Q(l)), b_Q=f32(lm.b_Q(l)), W_K=f32(lm.W_K(l)), b_K=f32(lm.b_K(l)),
                           W_O=f32(lm.W_O(l))) for l in layers}


# ---- projection ---------------------------------------------------------------------------------

def _project(lm, vectors: np.ndarray, target: Optional[int], top_k: int, chunk: Optional[int] = None):
    """Final norm + unembedding of each row through :meth:`LoadedModel.readout
    <mri_widgets.models.loading.LoadedModel.readout>`: top-k ids and probs, the target's prob and rank.

    Returns (top_ids (n, k), top_probs (n, k), target_prob (n,), target_rank (n,), 1 = top).
    """
    r = lm.readout(vectors, k=top_k, target=target, chunk_rows=chunk, progress=False)
    return (r.top_ids, r.top_probs.astype(np.float64), r.target_probs.astype(np.float64), r.target_ranks)


# ---- the graph ----------------------------------------------------------------------------------

def flow_graph(model, prompt: str, *, layers=None, position: int = -1, target: Union[None, str, int] = None,
               top_heads: int = 10, top_neurons: int = 18, bottom_neurons: int = 7, top_keys: int = 3,
               top_k: int = 5) -> nx.DiGraph:
    """The semantic information-flow graph of one prompt position through ``layers`` (VISIT).

    Every node is a vector in the residual basis, read through the final norm and the
    unembedding ("what would the model say if this vector were the last residual"); nodes are
    coloured in views by the rank of ``target`` among those readings.

    Parameters
    ----------
    model : LoadedModel (or anything :func:`mri_widgets.load` accepts)
        A causal LM (GPT-2, GPT-Neo, Llama-family, GPT-NeoX, GPT-J ...).
    prompt : str
    layers : int, list of int or None
        Layers to show, in order. ``None``: the last :data:`DEFAULT_LAYERS` (= 2) layers, which
        keeps the graph readable (about 140 nodes per layer with the default counts).
    position : int
        Token position whose computation is followed (default -1: the last token).
    target : str, int or None
        The token whose rank colours the nodes: a single-token string such as ``" Paris"``, a
        token id, or ``None`` for the model's own prediction at ``position``.
    top_heads : int
        Attention heads per layer, the ones with the largest output norm ``|z_h W_O^h|``.
    top_neurons, bottom_neurons : int
        MLP neurons per layer with the largest (most negative) score ``activation x |W_out[:, n]|``,
        the signed norm of the neuron's write into the residual stream.
    top_keys : int
        Keys and values per head: the positions with the largest attention weights.
    top_k : int
        Top tokens stored per node.

    Returns
    -------
    networkx.DiGraph
        ``G.graph``: ``prompt``, ``tokens``, ``position`` (non-negative), ``layers``,
        ``prediction`` / ``prediction_id`` / ``prediction_prob`` (the model's own top-1 token at
        ``position``; for the last layer it is also the top-1 of its ``block_out`` node, the last
        residual through the final norm), ``target`` / ``target_id``, ``model``, ``arch``,
        ``parallel``, ``gated``.

        Nodes (ids such as ``"L5/attn_in"``, ``"L5/h3/q"``, ``"L5/h3/k2"``, ``"L5/n812/key"``) carry
        ``kind`` (see :data:`NODE_KINDS`), ``layer``, ``head`` / ``neuron`` where relevant,
        ``position`` and ``token`` (the token that wrote the vector), ``top_tokens``,
        ``top_probs``, ``target_prob``, ``target_rank`` (1 = the target is the top token),
        ``norm``, ``label``, ``vector`` (float32, d_model) and kind-specific values
        (``attention``, ``activation``, ``score``, ``rank`` ...).

        Edges carry ``weight`` (>= 0) and ``measure``: ``"norm"`` (the norm of the vector that
        flows), ``"attention"`` (an attention probability) or ``"activation"`` (the absolute
        value of a neuron's pre-activation or activation).

    Notes
    -----
    Residual stages per layer: ``block_in`` (the block's input), ``attn_in`` (after the
    attention norm), ``attn_out`` (the attention output, projection bias included),
    ``resid_mid`` (sequential blocks: the residual after attention, ``block_in + attn_out``, the
    input of the MLP norm), ``mlp_in`` (after the MLP norm), ``mlp_out`` and ``block_out``.
    In *parallel* blocks (GPT-J, GPT-NeoX) attention and MLP both read ``block_in`` (GPT-J: the
    MLP input is the attention input) and the model never forms a residual after attention;
    ``resid_mid`` then stands for ``block_in + attn_out``, so that ``block_out = resid_mid +
    mlp_out`` still holds, and ``mlp_in`` is fed by ``block_in``.

    Heads (per shown head ``h``): ``query`` is ``W_K^T q_h``, the direction in the residual a
    key-side input must have for this head to attend to it (the original's QK projection);
    ``key`` (position ``j``) is ``W_Q^T k_j``, the query-side direction that would attend to the
    key that token ``j`` wrote; ``value`` is ``W_O^h v_j``, what attending to ``j`` writes; and
    ``head_out`` is ``W_O^h z_h`` = the attention-weighted sum of all values. Queries and keys
    are taken before rotary position embeddings (rotary models: the direction at relative
    distance 0). Grouped-query attention: head ``h`` uses its shared key/value head.

    Neurons: ``neuron_key`` is the neuron's input row ``W_in[n]``, ``neuron_value`` its output
    column ``W_out[:, n]``. For gated MLPs (Llama) the key node shows the *gate* row (which
    decides whether the neuron fires) and also carries the up row's reading as
    ``up_top_tokens`` / ``up_top_probs`` / ``up_norm`` (the neuron's activation is
    ``act(gate . x) * (up . x)``); its ``pre_activation`` is ``gate . x`` and ``up`` is ``up . x``.

    Edges: ``block_in -> attn_in`` (norm of attn_in), ``attn_in -> query`` (norm of the
    query vector), ``query -> key`` and ``key -> value`` (attention), ``value -> head_out``
    (norm of ``attention x value``), ``head_out -> attn_out`` (norm of the head output),
    ``block_in, attn_out -> resid_mid`` and ``resid_mid, mlp_out -> block_out`` (norms of the
    summands), ``resid_mid`` (parallel: ``block_in``) ``-> mlp_in`` (norm of mlp_in),
    ``mlp_in -> neuron_key`` (activation: ``|pre-activation|``), ``neuron_key -> neuron_value``
    (activation: ``|activation|``), ``neuron_value -> mlp_out`` (norm of the neuron's write),
    and between shown layers ``block_out -> block_in`` (norm; ``skipped`` lists hidden layers).
    """
    from ..models.loading import load

    lm = load(model)
    if lm.is_encoder or lm.adapter.unembed_module is None:
        raise ValueError(f"{lm.name} is an encoder without an unembedding: the flow graph needs a causal LM")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    sel = _layers(lm, layers)
    counts = dict(top_heads=_count(top_heads, "top_heads"), top_neurons=_count(top_neurons, "top_neurons"),
                  bottom_neurons=_count(bottom_neurons, "bottom_neurons"), top_keys=_count(top_keys, "top_keys"))
    top_k = check_int(top_k, "top_k", min=1, max=lm.vocab_size,
                      hint=f" (top_k is how many top tokens each node lists, 1..{lm.vocab_size}, e.g. 5)")
    tid = _target_id(lm, target)
    cap = capture_flow(lm, prompt, sel)
    pos = _position(position, cap.seq_len)
    maps = head_weights(lm, sel)
    return build_flow_graph(lm, cap, maps, position=pos, target_id=tid, top_k=top_k, prompt=prompt, **counts)


def build_flow_graph(lm, cap, maps, *, position: int, target_id: Optional[int], top_heads: int, top_neurons: int,
                     bottom_neurons: int, top_keys: int, top_k: int = 5, prompt: str = "") -> nx.DiGraph:
    """Build the graph from a :class:`FlowCapture` and :func:`head_weights` (see :func:`flow_graph`).

    Lets a view change ``position``, ``target`` and the counts without running the model again.
    """
    adapter = lm.adapter
    spec = adapter.spec
    H = adapter.n_heads
    p = int(position)
    layers = sorted(maps)
    toks = cap.tokens
    pred_logits = cap.logits[p]
    pred_id = int(pred_logits.argmax())
    tid = pred_id if target_id is None else int(target_id)

    nodes: list[tuple[str, dict, np.ndarray]] = []  # (id, attrs, vector)
    edges: list[tuple[str, str, float, str, dict]] = []

    def node(nid, vec, **attrs):
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        nodes.append((nid, attrs, v))
        return nid

    def edge(a, b, w, measure, **attrs):
        edges.append((a, b, abs(float(w)), measure, attrs))

    def f32(t):
        return t.detach().float().cpu()

    prev_out = None
    for li, l in enumerate(layers):
        m = maps[l]
        L = f"L{l}"
        res = {k: getattr(cap, k)[l][p] for k in RESIDUAL_KINDS}
        for k in RESIDUAL_KINDS:
            node(f"{L}/{k}", res[k].numpy(), kind=k, layer=l, position=p, token=toks[p],
                 name=f"L{l} {_NAMES[k]}")
        if prev_out is not None:
            skipped = list(range(layers[li - 1] + 1, l))
            edge(prev_out, f"{L}/block_in", float(res["block_in"].norm()), "norm", skipped=skipped)
        prev_out = f"{L}/block_out"
        edge(f"{L}/block_in", f"{L}/attn_in", float(res["attn_in"].norm()), "norm")
        edge(f"{L}/block_in", f"{L}/resid_mid", float(res["block_in"].norm()), "norm")
        edge(f"{L}/attn_out", f"{L}/resid_mid", float(res["attn_out"].norm()), "norm")
        mlp_src = f"{L}/block_in" if spec.parallel else f"{L}/resid_mid"
        edge(mlp_src, f"{L}/mlp_in", float(res["mlp_in"].norm()), "norm")
        edge(f"{L}/resid_mid", f"{L}/block_out", float(res["resid_mid"].norm()), "norm")
        edge(f"{L}/mlp_out", f"{L}/block_out", float(res["mlp_out"].norm()), "norm")

        # ---- attention heads
        W_O = m.W_O  # (H, dh, d)
        z = cap.z[l][:, p]  # (H, dh)
        head_out = torch.einsum("hd,hdm->hm", z, W_O)  # (H, d)
        hnorm = head_out.norm(dim=-1)
        n_heads = min(top_heads, H)
        order = torch.argsort(hnorm, descending=True)[:n_heads].tolist()
        x_all = cap.attn_in[l][: p + 1]  # (p+1, d)
        for rank, h in enumerate(order):
            hid = f"{L}/h{h}"
            q = cap.attn_in[l][p] @ m.W_Q[h] + m.b_Q[h]  # (dh,)
            qvec = m.W_K[h] @ q
            node(f"{hid}/q", qvec.numpy(), kind="query", layer=l, head=h, rank=rank, position=p, token=toks[p],
                 name=f"L{l} head {h} query")
            node(f"{hid}/out", head_out[h].numpy(), kind="head_out", layer=l, head=h, rank=rank, position=p,
                 token=toks[p], name=f"L{l} head {h} out")
            edge(f"{L}/attn_in", f"{hid}/q", float(qvec.norm()), "norm")
            edge(f"{hid}/out", f"{L}/attn_out", float(hnorm[h]), "norm")
            att = cap.attn[l][h, p, : p + 1]
            nk = min(top_keys, p + 1)
            kpos = torch.argsort(att, descending=True)[:nk].tolist()
            keys = x_all[kpos] @ m.W_K[h] + m.b_K[h]  # (nk, dh)
            kvecs = keys @ m.W_Q[h].t()  # (nk, d)
            vvecs = cap.values[l][h, kpos] @ W_O[h]  # (nk, d)
            for i, j in enumerate(kpos):
                a = float(att[j])
                common = dict(layer=l, head=h, rank=rank, key_rank=i, position=j, token=toks[j], attention=a)
                node(f"{hid}/k{j}", kvecs[i].numpy(), kind="key", name=f"L{l} head {h} key @{j}", **common)
                node(f"{hid}/v{j}", vvecs[i].numpy(), kind="value", name=f"L{l} head {h} value @{j}", **common)
                edge(f"{hid}/q", f"{hid}/k{j}", a, "attention")
                edge(f"{hid}/k{j}", f"{hid}/v{j}", a, "attention")
                edge(f"{hid}/v{j}", f"{hid}/out", a * float(vvecs[i].norm()), "norm")

        # ---- MLP neurons
        W_out = adapter.W_out(l)  # (d, d_mlp), on the model's device
        with torch.inference_mode():
            col_norm = f32(W_out.float().norm(dim=0))
        act = cap.acts[l][p]
        score = act * col_norm
        n_mlp = score.shape[0]
        nt = min(top_neurons, n_mlp)
        top = torch.argsort(score, descending=True)[:nt].tolist()
        rest = torch.argsort(score)[: max(0, n_mlp - nt)].tolist()
        taken = set(top)
        bottom = [i for i in rest if i not in taken][: min(bottom_neurons, n_mlp - nt)]
        picked = [(n, "top", r) for r, n in enumerate(top)] + [(n, "bottom", r) for r, n in enumerate(bottom)]
        if picked:
            idx = torch.tensor([n for n, _, _ in picked])
            vals = f32(W_out[:, idx.to(W_out.device)]).t()  # (k, d)
            key_w = f32((adapter.W_gate(l) if spec.gated else adapter.W_in(l))[idx.to(W_out.device)])
            up_w = f32(adapter.W_in(l)[idx.to(W_out.device)]) if spec.gated else None
            pre = cap.gate[l][p][idx] if spec.gated else None
            if not spec.gated:
                bias = getattr(adapter.part(l, "mlp_in"), "bias", None)
                pre = key_w @ cap.mlp_in[l][p]
                if bias is not None:
                    b = f32(bias.reshape(-1))
                    pre = pre + (b[idx] if b.shape[0] == n_mlp else 0)
            for i, (n, group, r) in enumerate(picked):
                nid = f"{L}/n{n}"
                common = dict(layer=l, neuron=n, group=group, rank=r, position=p, token=toks[p],
                              activation=float(act[n]), score=float(score[n]))
                extra = {}
                if spec.gated:
                    extra = dict(pre_activation=float(pre[i]), up=float(cap.up[l][p][n]), _up_vec=up_w[i].numpy())
                else:
                    extra = dict(pre_activation=float(pre[i]))
                node(f"{nid}/key", key_w[i].numpy(), kind="neuron_key", name=f"L{l} neuron {n} key", **common, **extra)
                node(f"{nid}/value", vals[i].numpy(), kind="neuron_value", name=f"L{l} neuron {n} value", **common)
                edge(f"{L}/mlp_in", f"{nid}/key", extra["pre_activation"], "activation")
                edge(f"{nid}/key", f"{nid}/value", float(act[n]), "activation")
                edge(f"{nid}/value", f"{L}/mlp_out", float(score[n]), "norm")

    # ---- read every vector through the final norm and the unembedding (one batched pass)
    ups = [(i, a.pop("_up_vec")) for i, (_, a, _) in enumerate(nodes) if "_up_vec" in a]
    V = np.stack([v for _, _, v in nodes] + [u for _, u in ups]).astype(np.float32)
    top_ids, top_probs, t_prob, t_rank = _project(lm, V, tid, top_k)
    n_main = len(nodes)

    G = nx.DiGraph()
    for i, (nid, attrs, vec) in enumerate(nodes):
        words = lm.token_str(top_ids[i])
        attrs.update(top_tokens=words, top_probs=[float(x) for x in top_probs[i]], top_ids=top_ids[i].tolist(),
                     target_prob=float(t_prob[i]), target_rank=int(t_rank[i]), norm=float(np.linalg.norm(vec)),
                     vector=vec)
        attrs["label"] = attrs.pop("name")
        G.add_node(nid, **attrs)
    for j, (i, u) in enumerate(ups):
        a = G.nodes[nodes[i][0]]
        a.update(up_top_tokens=lm.token_str(top_ids[n_main + j]), up_top_probs=[float(x) for x in top_probs[n_main + j]],
                 up_target_rank=int(t_rank[n_main + j]), up_norm=float(np.linalg.norm(u)))
    for a, b, w, measure, attrs in edges:
        G.add_edge(a, b, weight=w, measure=measure, **attrs)

    G.graph.update(
        prompt=prompt, tokens=list(toks), position=p, layers=list(layers), model=lm.name, arch=lm.arch,
        parallel=bool(spec.parallel), gated=bool(spec.gated),
        prediction=lm.token_str([pred_id])[0], prediction_id=pred_id,
        prediction_prob=float(torch.softmax(pred_logits, -1)[pred_id]),
        target=lm.token_str([tid])[0], target_id=tid, target_is_prediction=target_id is None or tid == pred_id,
        counts=dict(top_heads=top_heads, top_neurons=top_neurons, bottom_neurons=bottom_neurons, top_keys=top_keys),
    )
    return G


# ---- layout -------------------------------------------------------------------------------------

#: column (in units of ``dx``) of each node kind in :func:`flow_layout`
LAYOUT_COLUMNS = {"block_in": 0, "resid_mid": 0, "block_out": 0, "attn_in": 1, "mlp_in": 1, "query": 2, "key": 3,
                  "value": 4, "head_out": 5, "attn_out": 6, "neuron_key": 2, "neuron_value": 3, "mlp_out": 4}

# vertical gaps of flow_layout, in rows (units of dy)
_HEAD_GAP = 0.6     # between two heads
_RETURN_GAP = 1.4   # last head / neuron row -> the line that writes back to the residual stream
_MLP_GAP = 2.2      # attn_out / resid_mid line -> first neuron row (room for a sub-header)
_GROUP_GAP = 0.8    # top neurons -> most negative neurons
_LAYER_GAP = 4.0    # block_out of one layer -> block_in of the next (room for the layer header)


def flow_layout(G: nx.DiGraph, *, dx: float = 1.0, dy: float = 1.0) -> dict:
    """Compact top-to-bottom positions ``{node: (x, y)}`` for a :func:`flow_graph` graph (y grows downwards).

    The residual stream is a vertical spine at ``x = 0`` running through all layers, one layer
    below the other: ``block_in``, then ``resid_mid``, then ``block_out``. Each sub-block
    branches off to the right and writes back on a horizontal line: the attention heads under
    ``block_in`` (``attn_in`` -> query -> keys -> values -> head output, one head after the
    other, largest output first, one row per key; ``attn_out`` on the line of ``resid_mid``),
    then the MLP neurons under ``resid_mid`` (``mlp_in`` -> neuron key -> neuron value, top
    neurons first, then, after a gap, the most negative ones; ``mlp_out`` on the line of
    ``block_out``). Columns are :data:`LAYOUT_COLUMNS` (7 at most), so the drawing stays narrow
    and its height grows with the number of heads, keys and neurons.

    Parameters
    ----------
    G : networkx.DiGraph
        A graph of :func:`flow_graph`.
    dx, dy : float
        Column and row spacing.

    Returns
    -------
    dict
        ``{node: (x, y)}``; ``(0, 0)`` is the first layer's ``block_in``.
    """
    if not isinstance(G, nx.DiGraph):
        raise TypeError(f"G must be a networkx.DiGraph from flow_graph, got {type(G).__name__}")
    by_layer: dict = {}
    for n, a in G.nodes(data=True):
        if "layer" not in a or a.get("kind") not in LAYOUT_COLUMNS:
            raise ValueError(f"node {n!r} is not a flow_graph node (needs 'layer' and a 'kind' of {NODE_KINDS})")
        by_layer.setdefault(a["layer"], []).append(n)
    pos: dict = {}

    def put(n, row):
        pos[n] = (LAYOUT_COLUMNS[G.nodes[n]["kind"]] * dx, round(row, 6) * dy)  # rows: no float drift

    y = 0.0
    for l in sorted(by_layer):
        members = by_layer[l]
        kinds = {G.nodes[n]["kind"]: n for n in members if G.nodes[n]["kind"] in RESIDUAL_KINDS}
        # attention: block_in and attn_in on the first row, the heads below it
        top = y
        for k in ("block_in", "attn_in"):
            if k in kinds:
                put(kinds[k], top)
        heads: dict = {}
        for n in members:
            if "head" in G.nodes[n]:
                heads.setdefault(G.nodes[n]["head"], []).append(n)
        last = top
        for i, h in enumerate(sorted(heads, key=lambda h: (G.nodes[heads[h][0]]["rank"], h))):
            row0 = top if i == 0 else last + 1 + _HEAD_GAP
            rows = 1 + max([G.nodes[n]["key_rank"] for n in heads[h] if "key_rank" in G.nodes[n]], default=0)
            for n in heads[h]:
                a = G.nodes[n]
                put(n, row0 + a["key_rank"] if "key_rank" in a else row0 + (rows - 1) / 2)
            last = row0 + rows - 1
        mid = last + _RETURN_GAP
        for k in ("resid_mid", "attn_out"):
            if k in kinds:
                put(kinds[k], mid)
        # MLP: mlp_in on the first neuron row, top neurons, then the most negative ones
        first = mid + _MLP_GAP
        if "mlp_in" in kinds:
            put(kinds["mlp_in"], first)
        neurons = [n for n in members if "neuron" in G.nodes[n]]
        n_top = 1 + max([G.nodes[n]["rank"] for n in neurons if G.nodes[n]["group"] == "top"], default=-1)
        last = first
        for n in neurons:
            a = G.nodes[n]
            row = first + a["rank"] + (n_top + _GROUP_GAP if a["group"] == "bottom" and n_top else 0)
            put(n, row)
            last = max(last, row)
        bottom = last + _RETURN_GAP
        for k in ("mlp_out", "block_out"):
            if k in kinds:
                put(kinds[k], bottom)
        y = bottom + _LAYER_GAP
    return pos
