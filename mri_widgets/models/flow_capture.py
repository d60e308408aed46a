"""Hooked capture for the information-flow graph (:func:`mri_widgets.flow_graph`).

Two things live here because they touch modules (the models room):

* :func:`capture_flow` runs one forward pass of a prompt and records, for every layer and every
  position, the residual stages of the block (block input, attention input after ``ln_attn``,
  the concatenated head outputs fed to the attention output projection, the attention output,
  the residual after attention, the MLP input after ``ln_mlp``, the neuron activations, the MLP
  output, the block output), the attention probabilities and the cached values.
* :func:`attention_maps` recovers each attention layer's query, key and value maps as per-head
  affine maps ``x -> W x + b`` in the residual basis, without knowing any module path inside the
  attention module (see its docstring for how).

Only adapter parts (``adapter.part(layer, name)``) and spec flags are used; no module path is
spelled here.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from .adapters import Adapter, AdapterError
from .capture import _eager_attention, _first

__all__ = ["FlowCapture", "AttentionMaps", "FlowCaptureError", "capture_flow", "attention_maps"]


class FlowCaptureError(AdapterError):
    """The model's attention cannot be decomposed for the flow graph."""


def _hidden_arg(args, kwargs):
    if args:
        return args[0]
    for k in ("hidden_states", "x", "input", "hidden_state"):
        if torch.is_tensor(kwargs.get(k)):
            return kwargs[k]
    raise FlowCaptureError("cannot find the hidden states among the module's inputs")


def _cache_kv(cache, layer: int):
    """(keys, values) of one layer from a transformers cache, each (b, n_kv_heads, seq, d_head)."""
    if cache is None:
        raise FlowCaptureError("the model returned no key/value cache (use_cache=True was ignored)")
    layers = getattr(cache, "layers", None)
    if layers is not None:
        lay = layers[layer]
        return lay.keys, lay.values
    if hasattr(cache, "key_cache"):  # older transformers
        return cache.key_cache[layer], cache.value_cache[layer]
    k, v = cache[layer][:2]
    return k, v


@dataclass
class AttentionMaps:
    """One attention layer's projections as affine maps of the attention input.

    ``W_Q`` (n_heads, d_head, d_model) and ``b_Q`` (n_heads, d_head): head ``h``'s query of an
    attention input ``x`` is ``W_Q[h] @ x + b_Q[h]`` *before* rotary position embeddings.
    ``W_K``, ``b_K``, ``W_V``, ``b_V`` likewise with ``n_kv_heads`` heads (grouped-query attention:
    head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``). float32, on the CPU.
    """

    W_Q: torch.Tensor
    b_Q: torch.Tensor
    W_K: torch.Tensor
    b_K: torch.Tensor
    W_V: torch.Tensor
    b_V: torch.Tensor

    @property
    def n_kv_heads(self) -> int:
        return int(self.W_K.shape[0])

    def kv_head(self, head: int) -> int:
        """The key/value head read by query head ``head``."""
        return int(head) // (self.W_Q.shape[0] // self.n_kv_heads)


@dataclass
class FlowCapture:
    """Everything :func:`mri_widgets.flow_graph` needs from one forward pass of one prompt.

    Per-layer dicts map a layer index to float32 CPU tensors over all positions of the prompt:
    ``block_in``, ``attn_in``, ``attn_out``, ``resid_mid``, ``mlp_in``, ``mlp_out``,
    ``block_out`` (seq, d_model); ``z`` (seq, n_heads * d_head), the input of the attention
    output projection; ``acts`` (seq, d_mlp), the input of the MLP output projection; for gated
    MLPs ``gate`` (the gate pre-activation) and ``up`` (seq, d_mlp); ``attn`` (n_heads, seq,
    seq) probabilities; ``values`` (n_kv_heads, seq, d_head) from the key/value cache.
    ``resid_mid`` is the input of ``ln_mlp`` for sequential blocks and ``block_in + attn_out``
    for parallel blocks (a state the model never forms there: its MLP reads the block input).
    """

    input_ids: list
    tokens: list
    logits: torch.Tensor  # (seq, vocab) float32
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


def capture_flow(lm, prompt: str, layers) -> FlowCapture:
    """One forward pass of ``prompt`` recording the block stages of ``layers`` (see :class:`FlowCapture`).

    Parameters
    ----------
    lm : LoadedModel
    prompt : str
    layers : list of int (already validated, non-negative)
    """
    adapter: Adapter = lm.adapter
    spec = adapter.spec
    enc = lm.encode(prompt)
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    got: dict = {name: {} for name in ("block_in", "attn_in", "z", "attn_out", "resid_mid", "mlp_in", "acts",
                                        "gate", "up", "mlp_out", "block_out")}

    def pre(name, layer):
        def hook(mod, args, kwargs):
            got[name][layer] = _hidden_arg(args, kwargs)
        return hook

    def post(name, layer):
        def hook(mod, inp, out):
            got[name][layer] = _first(out)
        return hook

    handles = []
    try:
        for l in layers:
            block = adapter.blocks[l]
            handles.append(block.register_forward_pre_hook(pre("block_in", l), with_kwargs=True))
            handles.append(block.register_forward_hook(post("block_out", l)))
            if spec.ln_attn is not None:
                handles.append(adapter.part(l, "ln_attn").register_forward_hook(post("attn_in", l)))
            else:
                handles.append(adapter.part(l, "attn").register_forward_pre_hook(pre("attn_in", l), with_kwargs=True))
            out_proj = adapter.part(l, "attn_out")
            handles.append(out_proj.register_forward_pre_hook(pre("z", l), with_kwargs=True))
            handles.append(out_proj.register_forward_hook(post("attn_out", l)))
            if not spec.parallel and spec.ln_mlp is not None:
                handles.append(adapter.part(l, "ln_mlp").register_forward_pre_hook(pre("resid_mid", l), with_kwargs=True))
            mlp = adapter.part(l, "mlp")
            handles.append(mlp.register_forward_pre_hook(pre("mlp_in", l), with_kwargs=True))
            handles.append(mlp.register_forward_hook(post("mlp_out", l)))
            handles.append(adapter.part(l, "mlp_out").register_forward_pre_hook(pre("acts", l), with_kwargs=True))
            if spec.gated:
                handles.append(adapter.part(l, "mlp_gate").register_forward_hook(post("gate", l)))
                handles.append(adapter.part(l, "mlp_in").register_forward_hook(post("up", l)))
        with _eager_attention(adapter.model), torch.inference_mode():
            out = adapter.model(**enc, output_attentions=True, use_cache=True)
    finally:
        for h in handles:
            h.remove()

    atts = getattr(out, "attentions", None)
    if not atts or atts[0] is None:
        raise FlowCaptureError("the model returned no attention probabilities even with eager attention")
    ids = enc["input_ids"][0].tolist()
    cap = FlowCapture(input_ids=ids, tokens=lm.token_str(ids), logits=out.logits[0].float().cpu())

    def f32(x):
        return x[0].detach().float().cpu()

    for name, per in got.items():
        dest = getattr(cap, name)
        for l, v in per.items():
            dest[l] = f32(v)
    for l in layers:
        if l not in cap.resid_mid:  # parallel blocks (or no ln_mlp): the sum, as documented
            cap.resid_mid[l] = cap.block_in[l] + cap.attn_out[l]
        cap.attn[l] = f32(atts[l])
        cap.values[l] = f32(_cache_kv(out.past_key_values, l)[1])
    return cap


# ---- attention maps ---------------------------------------------------------------------------

_MAPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def attention_maps(lm, layers) -> dict:
    """Per-head query, key and value maps of ``layers`` as :class:`AttentionMaps` (cached per model).

    How they are found without module paths inside the attention module:

    1. Every leaf sub-module of ``adapter.part(layer, "attn")`` that has a 2-D weight (other than
       the output projection ``attn_out``) is called on the basis ``0, e_1, ..., e_d``: its output
       features are affine maps ``x -> w . x + b`` of the attention input, recovered exactly.
    2. A small probe forward runs a few one-token sequences with the attention input of each
       probed layer replaced by random vectors. At position 0 rotary embeddings are the identity,
       so the key/value cache holds the true keys and values of those inputs; each cached key
       and value feature is matched to the projection feature that produces it.
    3. The remaining features, in order, must number ``n_heads * d_head``: they are the queries
       (head-major), as in every fused ``qkv`` and split ``q/k/v`` layout of the supported
       families.

    Attentions whose keys are not such a feature (normalised keys, as in Qwen3 / OLMo-2) raise
    :class:`FlowCaptureError`.
    """
    adapter: Adapter = lm.adapter
    model = adapter.model
    cache = _MAPS.setdefault(model, {})
    todo = [l for l in layers if l not in cache]
    if todo:
        cache.update(_probe_maps(lm, todo))
    return {l: cache[l] for l in layers}


def _projection_features(adapter: Adapter, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All affine output features of the attention's projections: (W (F, d), b (F,)), float32 CPU."""
    d = adapter.d_model
    attn = adapter.part(layer, "attn")
    out_proj = adapter.part(layer, "attn_out")
    Ws, bs = [], []
    with torch.inference_mode():
        for mod in attn.modules():
            if mod is attn or mod is out_proj or any(True for _ in mod.children()):
                continue
            w = getattr(mod, "weight", None)
            if not isinstance(w, torch.Tensor) or w.dim() != 2 or d not in w.shape:
                continue
            X = torch.cat([torch.zeros(1, d), torch.eye(d)], 0).to(dtype=w.dtype, device=w.device)
            try:
                Y = mod(X)
            except Exception:  # not a projection of the attention input
                continue
            if not torch.is_tensor(Y) or Y.dim() != 2 or Y.shape[0] != d + 1:
                continue
            Y = Y.float().cpu()
            bs.append(Y[0])
            Ws.append((Y[1:] - Y[0]).t())
    if not Ws:
        raise FlowCaptureError(f"layer {layer}: found no query/key/value projection inside the attention module")
    return torch.cat(Ws, 0), torch.cat(bs, 0)


def _probe_maps(lm, layers, n_probe: int = 6) -> dict:
    adapter: Adapter = lm.adapter
    model = adapter.model
    d, H, dh = adapter.d_model, adapter.n_heads, adapter.d_head
    p0 = next(iter(adapter.part(layers[0], "attn").parameters()))
    g = torch.Generator().manual_seed(0)
    R = torch.randn(n_probe, d, generator=g).to(dtype=p0.dtype)
    tok = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else 0

    def replace(mod, args, kwargs):
        h = _hidden_arg(args, kwargs)
        x = R[:, None, :].to(dtype=h.dtype, device=h.device)
        if args:
            return (x,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = x
        return args, kwargs

    handles = [adapter.part(l, "attn").register_forward_pre_hook(replace, with_kwargs=True) for l in layers]
    ids = torch.full((n_probe, 1), int(tok), dtype=torch.long, device=adapter.embed.weight.device)
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    finally:
        for h in handles:
            h.remove()
    Rf = R.float()
    result = {}
    for l in layers:
        k, v = _cache_kv(out.past_key_values, l)  # (n_probe, kvH, 1, dh)
        kv_heads = k.shape[1]
        Wf, bf = _projection_features(adapter, l)
        sig = Rf @ Wf.t() + bf  # (n_probe, F): each feature's output on the probe inputs
        taken = torch.zeros(Wf.shape[0], dtype=torch.bool)

        def match(cached, what):
            target = cached[:, :, 0, :].float().cpu().reshape(n_probe, -1)  # (n_probe, kvH*dh)
            idx = []
            scale = target.abs().amax(0).clamp_min(1e-6)
            for i in range(target.shape[1]):
                err = (sig - target[:, i:i + 1]).abs().amax(0) / scale[i]
                err[taken] = float("inf")
                j = int(err.argmin())
                if float(err[j]) > 1e-2:
                    raise FlowCaptureError(
                        f"layer {l}: the cached attention {what}s are not a plain projection of the attention "
                        "input (normalised keys?); the flow graph cannot decompose this model's heads")
                taken[j] = True
                idx.append(j)
            return torch.tensor(idx)

        ki, vi = match(k, "key"), match(v, "value")
        qi = torch.nonzero(~taken).flatten()
        if qi.numel() != H * dh:
            raise FlowCaptureError(
                f"layer {l}: could not separate the query projection from the key/value projections "
                f"(found {qi.numel()} query features, expected n_heads * d_head = {H * dh})")
        result[l] = AttentionMaps(
            W_Q=Wf[qi].reshape(H, dh, d), b_Q=bf[qi].reshape(H, dh),
            W_K=Wf[ki].reshape(kv_heads, dh, d), b_K=bf[ki].reshape(kv_heads, dh),
            W_V=Wf[vi].reshape(kv_heads, dh, d), b_V=bf[vi].reshape(kv_heads, dh))
    return result
