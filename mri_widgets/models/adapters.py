"""Architecture adapters: the one place that knows module paths and conventions.

Every other part of mri_widgets asks an :class:`Adapter` for "the blocks", "the MLP output
projection of layer 3" or "the unembedding" and never spells a module path itself.

A family is described by an :class:`ArchSpec` whose paths are relative to the model's *decoder
base* (``model.base_model`` for plain transformers models, the language model inside a
LLaVA-style model). Users with an unsupported model pass ``module_paths`` to
:func:`mri_widgets.load` with absolute dotted paths from the top model instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

__all__ = ["ArchSpec", "Adapter", "AdapterError", "SPECS", "FAMILY_OF", "resolve_adapter", "module_tensor"]


class AdapterError(ValueError):
    """A model's structure does not match what mri_widgets needs."""


@dataclass(frozen=True)
class ArchSpec:
    """Module paths and conventions of one architecture family.

    ``blocks``, ``embed`` and ``final_norm`` are relative to the decoder base; the other paths are
    relative to one block. ``None`` means the family has no such part.

    The attention weights are named by ``attn_q`` / ``attn_k`` / ``attn_v`` (separate
    projections) or ``attn_qkv`` with its ``qkv_layout`` (fused), ``attn_out`` (output
    projection), ``rotary`` (the rotary style; how many features it rotates comes from the config,
    see :attr:`Adapter.rotary_dim`) and the optional query/key norms; the number of key/value
    heads comes from the config (:attr:`Adapter.n_kv_heads`).
    """

    family: str
    blocks: str
    embed: str
    final_norm: Optional[str]
    attn: str
    attn_out: str  # attention output projection: its input is the concatenation of head outputs
    mlp: str
    mlp_out: str  # MLP output projection: its input is the neuron activations
    mlp_in: Optional[str]  # up projection (input weights of the neurons)
    mlp_gate: Optional[str] = None  # gate projection of a gated MLP
    mlp_act: Optional[str] = None  # activation module (applied to the gate for gated MLPs)
    ln_attn: Optional[str] = None  # norm read by attention
    ln_mlp: Optional[str] = None  # norm read by the MLP (None: the MLP reads ln_attn's output)
    parallel: bool = False  # attention and MLP both read the block input (GPT-J, NeoX parallel)
    post_norm: bool = False  # BERT-style: norms after the residual additions
    encoder: bool = False
    conv1d: bool = False  # GPT-2 Conv1D stores weights as (in, out)
    # attention weights (paths relative to one block)
    attn_q: Optional[str] = None  # query projection, (n_heads * d_head) outputs, head-major
    attn_k: Optional[str] = None  # key projection, (n_kv_heads * d_head) outputs
    attn_v: Optional[str] = None  # value projection, (n_kv_heads * d_head) outputs
    attn_qkv: Optional[str] = None  # fused query/key/value projection (instead of attn_q/k/v)
    qkv_layout: str = "concat"  # fused outputs: "concat" [q | k | v] (GPT-2) or "per_head" [q_h k_h v_h]... (NeoX)
    rotary: Optional[str] = None  # rotary embeddings: "half" (rotate_half: Llama, NeoX), "every_two" (GPT-J)
    attn_q_norm: Optional[str] = None  # optional norm of the queries (Qwen3, OLMo-2); absent parts are skipped
    attn_k_norm: Optional[str] = None  # optional norm of the keys

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None


SPECS: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        "gpt2", blocks="h", embed="wte", final_norm="ln_f", attn="attn", attn_out="attn.c_proj",
        mlp="mlp", mlp_out="mlp.c_proj", mlp_in="mlp.c_fc", mlp_act="mlp.act", ln_attn="ln_1",
        ln_mlp="ln_2", conv1d=True, attn_qkv="attn.c_attn", qkv_layout="concat",
    ),
    "gpt_neox": ArchSpec(
        "gpt_neox", blocks="layers", embed="embed_in", final_norm="final_layer_norm",
        attn="attention", attn_out="attention.dense", mlp="mlp", mlp_out="mlp.dense_4h_to_h",
        mlp_in="mlp.dense_h_to_4h", mlp_act="mlp.act", ln_attn="input_layernorm",
        ln_mlp="post_attention_layernorm", parallel=True, attn_qkv="attention.query_key_value",
        qkv_layout="per_head", rotary="half",
    ),
    "llama": ArchSpec(
        "llama", blocks="layers", embed="embed_tokens", final_norm="norm", attn="self_attn",
        attn_out="self_attn.o_proj", mlp="mlp", mlp_out="mlp.down_proj", mlp_in="mlp.up_proj",
        mlp_gate="mlp.gate_proj", mlp_act="mlp.act_fn", ln_attn="input_layernorm",
        ln_mlp="post_attention_layernorm", attn_q="self_attn.q_proj", attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj", rotary="half", attn_q_norm="self_attn.q_norm", attn_k_norm="self_attn.k_norm",
    ),
    "gptj": ArchSpec(
        "gptj", blocks="h", embed="wte", final_norm="ln_f", attn="attn", attn_out="attn.out_proj",
        mlp="mlp", mlp_out="mlp.fc_out", mlp_in="mlp.fc_in", mlp_act="mlp.act", ln_attn="ln_1",
        ln_mlp=None, parallel=True, attn_q="attn.q_proj", attn_k="attn.k_proj", attn_v="attn.v_proj",
        rotary="every_two",
    ),
    "gpt_neo": ArchSpec(
        "gpt_neo", blocks="h", embed="wte", final_norm="ln_f", attn="attn",
        attn_out="attn.attention.out_proj", mlp="mlp", mlp_out="mlp.c_proj", mlp_in="mlp.c_fc",
        mlp_act="mlp.act", ln_attn="ln_1", ln_mlp="ln_2", attn_q="attn.attention.q_proj",
        attn_k="attn.attention.k_proj", attn_v="attn.attention.v_proj",
    ),
    "bert": ArchSpec(
        "bert", blocks="encoder.layer", embed="embeddings.word_embeddings", final_norm=None,
        attn="attention", attn_out="attention.output.dense", mlp="intermediate",
        mlp_out="output.dense", mlp_in="intermediate.dense",
        mlp_act="intermediate.intermediate_act_fn", post_norm=True, encoder=True,
        attn_q="attention.self.query", attn_k="attention.self.key", attn_v="attention.self.value",
    ),
    "distilbert": ArchSpec(
        "distilbert", blocks="transformer.layer", embed="embeddings.word_embeddings",
        final_norm=None, attn="attention", attn_out="attention.out_lin", mlp="ffn",
        mlp_out="ffn.lin2", mlp_in="ffn.lin1", mlp_act="ffn.activation", post_norm=True,
        encoder=True, attn_q="attention.q_lin", attn_k="attention.k_lin", attn_v="attention.v_lin",
    ),
}

#: transformers ``config.model_type`` -> adapter family.
FAMILY_OF: dict[str, str] = {
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "olmo": "llama",
    "olmo2": "llama",
    "smollm3": "llama",
    "gemma": "llama",
    "gemma2": "llama",
    "gptj": "gptj",
    "gpt_neo": "gpt_neo",
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "distilbert": "distilbert",
}

#: Multimodal wrappers: model_type -> how to find the language model inside.
MULTIMODAL = {"llava": "llava", "llava_next": "llava", "llava_onevision": "llava"}


def get_module(root: nn.Module, path: str) -> nn.Module:
    """``root.a.b.0.c`` for ``path="a.b.0.c"`` with an error that names the missing part."""
    mod = root
    for part in path.split("."):
        if part == "":
            continue
        nxt = getattr(mod, part, None)
        if nxt is None and part.isdigit() and isinstance(mod, (nn.ModuleList, nn.Sequential)):
            nxt = mod[int(part)]
        if nxt is None:
            raise AdapterError(f"module path {path!r}: {type(mod).__name__} has no part {part!r}")
        mod = nxt
    return mod


def _offload_maps(module: nn.Module):
    """The weights maps of accelerate's offloading hooks on ``module`` (an ``AlignDevicesHook``
    with ``offload=True``, alone or inside a ``SequentialHook``)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    hooks = getattr(hook, "hooks", None)
    hooks = list(hooks) if hooks is not None else [hook]
    return [h.weights_map for h in hooks
            if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None]


def module_tensor(module: nn.Module, name: str) -> Optional[torch.Tensor]:
    """``module.<name>`` (a parameter or buffer, e.g. ``"weight"``) as a real tensor.

    With accelerate's CPU or disk offload (``device_map`` entries ``"cpu"`` / ``"disk"``,
    ``cpu_offload``, ``disk_offload``) the module holds a tensor on the ``meta`` device between
    forward passes and the real one sits in its ``AlignDevicesHook``'s ``weights_map``: it is read
    from there (loaded from disk where it was offloaded there), for this use only; the module is
    left as it is. ``None`` when the module has no such attribute or it is ``None``.
    """
    t = getattr(module, name, None)
    if not isinstance(t, torch.Tensor) or t.device.type != "meta":
        return t
    for wm in _offload_maps(module):
        try:
            real = wm[name]
        except KeyError:
            continue
        return real.to(dtype=t.dtype) if isinstance(real, torch.Tensor) else torch.as_tensor(real, dtype=t.dtype)
    raise AdapterError(
        f"{type(module).__name__}.{name} is on the meta device and no accelerate offloading hook holds its "
        "values: load the model with its weights (from_pretrained with a device_map, or dispatch_model / "
        "cpu_offload with the state dict) before analysing it")


def exec_device_dtype(module: nn.Module):
    """Where a module computes, and its dtype: accelerate's execution device for a module it
    dispatched or offloaded (whose weights may be on the ``meta`` device), else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    hooks = getattr(hook, "hooks", None)
    dev = None
    for h in (list(hooks) if hooks is not None else [hook]):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            break
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}"), dtype
    if p is not None and p.device.type == "meta":
        return torch.device("cpu"), dtype
    return (p.device if p is not None else torch.device("cpu")), dtype


def _config_get(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


@dataclass
class Adapter:
    """A model with its parts resolved. Built by :func:`resolve_adapter`."""

    model: nn.Module
    spec: ArchSpec
    base: nn.Module  # decoder base: holds blocks, embed, final norm
    config: object  # the language model's config
    multimodal: Optional[str] = None
    image_token_id: Optional[int] = None
    blocks: list = field(default_factory=list)

    # ---- sizes -----------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.embed.weight.shape[1])

    @property
    def n_heads(self) -> int:
        n = _config_get(self.config, "num_attention_heads", "n_head", "num_heads", "n_heads")
        if n is None:
            raise AdapterError("cannot find the number of attention heads in the model config")
        return int(n)

    @property
    def n_kv_heads(self) -> int:
        """Number of key/value heads (fewer than ``n_heads`` with grouped-query attention)."""
        n = _config_get(self.config, "num_key_value_heads")
        return int(n) if n else self.n_heads

    @property
    def d_head(self) -> int:
        hd = getattr(self.config, "head_dim", None)
        if hd:
            return int(hd)
        return self.d_model // self.n_heads

    @property
    def d_mlp(self) -> int:
        return int(self.W_out(0).shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.embed.weight.shape[0])

    @property
    def gated(self) -> bool:
        return self.spec.gated

    @property
    def encoder(self) -> bool:
        return self.spec.encoder

    # ---- parts -------------------------------------------------------------------------------
    @property
    def embed(self) -> nn.Module:
        return get_module(self.base, self.spec.embed)

    @property
    def final_norm(self) -> Optional[nn.Module]:
        return None if self.spec.final_norm is None else get_module(self.base, self.spec.final_norm)

    @property
    def unembed_module(self) -> Optional[nn.Module]:
        if self.spec.encoder:
            return None
        out = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        return out

    def part(self, layer: int, name: str) -> nn.Module:
        """The sub-module ``name`` (an ArchSpec field such as ``"mlp_out"``) of block ``layer``."""
        self.check_layer(layer)
        path = getattr(self.spec, name)
        if path is None:
            raise AdapterError(f"the {self.family} family has no {name!r} part")
        return get_module(self.blocks[layer], path)

    def check_layer(self, layer: int, *, n: Optional[int] = None, what: str = "layer") -> int:
        n = self.n_layers if n is None else n
        from .._checks import check_int
        layer = check_int(layer, what)
        if not -n <= layer < n:
            raise IndexError(f"{what} {layer} is out of range: this model has {n} ({what}s 0..{n - 1})")
        return layer % n

    # ---- weights in one convention: (out_features, in_features) ------------------------------
    def _weight(self, mod: nn.Module) -> torch.Tensor:
        w = module_tensor(mod, "weight")
        return w.t() if self.spec.conv1d else w

    def W_out(self, layer: int) -> torch.Tensor:
        """MLP output weights, (d_model, d_mlp): column j is neuron j's write direction."""
        return self._weight(self.part(layer, "mlp_out"))

    def W_in(self, layer: int) -> torch.Tensor:
        """MLP input (up projection) weights, (d_mlp, d_model): row j is neuron j's key."""
        return self._weight(self.part(layer, "mlp_in"))

    def W_gate(self, layer: int) -> torch.Tensor:
        """Gate projection weights of a gated MLP, (d_mlp, d_model)."""
        return self._weight(self.part(layer, "mlp_gate"))

    # ---- attention weights, per head -----------------------------------------------------------
    def optional_part(self, layer: int, name: str) -> Optional[nn.Module]:
        """Like :meth:`part`, but ``None`` when the spec names no such part or the block lacks it
        (``attn_q_norm`` / ``attn_k_norm`` exist in Qwen3 and OLMo-2 only)."""
        self.check_layer(layer)
        path = getattr(self.spec, name)
        if path is None:
            return None
        try:
            return get_module(self.blocks[layer], path)
        except AdapterError:
            return None

    def qk_normed(self, layer: int = 0) -> bool:
        """Whether queries or keys pass a norm after their projection (Qwen3, OLMo-2): then they are
        not an affine map of the attention input, and ``W_Q`` / ``W_K`` give them before that norm."""
        return (self.optional_part(layer, "attn_q_norm") is not None
                or self.optional_part(layer, "attn_k_norm") is not None)

    @property
    def rotary_dim(self) -> Optional[int]:
        """How many leading features of each query/key head rotary embeddings rotate (None: no rotary).

        GPT-J: ``config.rotary_dim``; GPT-NeoX: ``d_head * rotary_pct`` (``partial_rotary_factor``);
        Llama family: ``d_head`` (times ``partial_rotary_factor`` where the config sets one)."""
        if self.spec.rotary is None:
            return None
        dh = self.d_head
        rd = getattr(self.config, "rotary_dim", None)
        if rd:
            return int(rd)
        rp = getattr(self.config, "rope_parameters", None)
        factor = rp.get("partial_rotary_factor") if isinstance(rp, dict) else None
        if factor is None:
            factor = _config_get(self.config, "partial_rotary_factor", "rotary_pct", default=1.0)
        return int(dh * float(factor))

    def apply_rotary(self, x: torch.Tensor, position_embeddings) -> torch.Tensor:
        """Rotate queries or keys ``x`` (b, n, seq, d_head) as the model does.

        ``position_embeddings`` is the pair the model hands its attention module: ``(cos, sin)``
        of shape (b, seq, rotary_dim) for ``rotary="half"`` (Llama, GPT-NeoX: rotate_half on the
        first ``rotary_dim`` features), ``(sin, cos)`` of shape (b, seq, rotary_dim / 2) for
        ``rotary="every_two"`` (GPT-J: adjacent pairs rotated, ``rotate_every_two``)."""
        style = self.spec.rotary
        if style is None:
            return x
        a, b = position_embeddings
        if style == "half":
            cos, sin = a[:, None].to(x.dtype), b[:, None].to(x.dtype)
            r = cos.shape[-1]
            xr = x[..., :r]
            half = r // 2
            rot = torch.cat((-xr[..., half:], xr[..., :half]), dim=-1)
            return torch.cat((xr * cos + rot * sin, x[..., r:]), dim=-1)
        if style == "every_two":
            sin = torch.repeat_interleave(a[:, None].to(x.dtype), 2, dim=-1)
            cos = torch.repeat_interleave(b[:, None].to(x.dtype), 2, dim=-1)
            r = cos.shape[-1]
            xr = x[..., :r]
            rot = torch.stack((-xr[..., 1::2], xr[..., ::2]), dim=-1).flatten(-2)
            return torch.cat((xr * cos + rot * sin, x[..., r:]), dim=-1)
        raise AdapterError(f"unknown rotary style {style!r}; use 'half' or 'every_two'")

    def qkv_module(self, layer: int, which: str) -> nn.Module:
        """The module whose output holds the ``which`` (``"q"``, ``"k"``, ``"v"``) features of
        ``layer`` before rotary: its own projection, or the fused one (see :meth:`split_qkv`)."""
        if getattr(self.spec, f"attn_{which}") is not None:
            return self.part(layer, f"attn_{which}")
        if self.spec.attn_qkv is not None:
            return self.part(layer, "attn_qkv")
        raise AdapterError(
            f"the {self.family} adapter names no query/key/value projections; pass module_paths with "
            "attn_q, attn_k and attn_v (or a fused attn_qkv with qkv_layout='concat' or 'per_head')")

    def split_qkv(self, out: torch.Tensor, which: str) -> torch.Tensor:
        """Pick the ``which`` features (..., n * d_head) out of the output (..., F) of
        :meth:`qkv_module`: unchanged for a separate projection; a slice of ``[q | k | v]`` for
        ``qkv_layout="concat"`` (GPT-2 ``c_attn``); for ``"per_head"`` (GPT-NeoX
        ``query_key_value``) the outputs run head by head, ``[q_0 k_0 v_0 q_1 k_1 v_1 ...]``."""
        if getattr(self.spec, f"attn_{which}") is not None:
            return out
        i = "qkv".index(which)
        H, kv, dh = self.n_heads, self.n_kv_heads, self.d_head
        if self.spec.qkv_layout == "concat":
            sizes = (H * dh, kv * dh, kv * dh)
            start = sum(sizes[:i])
            return out[..., start:start + sizes[i]]
        if self.spec.qkv_layout == "per_head":
            return out.reshape(*out.shape[:-1], H, 3, dh)[..., i, :].reshape(*out.shape[:-1], H * dh)
        raise AdapterError(f"unknown qkv_layout {self.spec.qkv_layout!r}; use 'concat' or 'per_head'")

    def _qkv(self, layer: int, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (n, d_model, d_head), b (n, d_head)) of one of q/k/v, n = its own number of heads."""
        mod = self.qkv_module(layer, which)
        W = self._weight(mod).detach()  # (F, d_model)
        bias = module_tensor(mod, "bias")
        b = bias.detach() if isinstance(bias, torch.Tensor) else torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
        W = self.split_qkv(W.t(), which).t()  # (n * dh, d)
        b = self.split_qkv(b, which)
        dh = self.d_head
        n = W.shape[0] // dh
        W = W.reshape(n, dh, W.shape[1]).transpose(1, 2)
        b = b.reshape(n, dh)
        rep = self.n_heads // n
        if rep > 1:  # grouped-query attention: every query head gets its key/value head
            W, b = W.repeat_interleave(rep, 0), b.repeat_interleave(rep, 0)
        return W, b

    def W_Q(self, layer: int) -> torch.Tensor:
        """Query weights (n_heads, d_model, d_head): head h's query of an attention input x (the
        output of ``ln_attn``) is ``x @ W_Q[h] + b_Q[h]``, before rotary embeddings."""
        return self._qkv(layer, "q")[0]

    def W_K(self, layer: int) -> torch.Tensor:
        """Key weights (n_heads, d_model, d_head), expanded to every query head (grouped-query
        attention: head h reads key head ``h // (n_heads // n_kv_heads)``); before rotary."""
        return self._qkv(layer, "k")[0]

    def W_V(self, layer: int) -> torch.Tensor:
        """Value weights (n_heads, d_model, d_head), expanded to every query head."""
        return self._qkv(layer, "v")[0]

    def b_Q(self, layer: int) -> torch.Tensor:
        """Query bias (n_heads, d_head); zeros when the projection has none."""
        return self._qkv(layer, "q")[1]

    def b_K(self, layer: int) -> torch.Tensor:
        """Key bias (n_heads, d_head), expanded like :meth:`W_K`; zeros when none."""
        return self._qkv(layer, "k")[1]

    def b_V(self, layer: int) -> torch.Tensor:
        """Value bias (n_heads, d_head), expanded like :meth:`W_V`; zeros when none."""
        return self._qkv(layer, "v")[1]

    def W_O(self, layer: int) -> torch.Tensor:
        """Attention output weights per head, (n_heads, d_head, d_model): the attention output is
        ``sum_h z[h] @ W_O[h] + b_O`` (``z`` the attention-weighted values)."""
        W = self._weight(self.part(layer, "attn_out")).detach()  # (d_model, n_heads * d_head)
        return W.reshape(W.shape[0], self.n_heads, self.d_head).permute(1, 2, 0)

    def b_O(self, layer: int) -> torch.Tensor:
        """Attention output bias (d_model,); zeros when the projection has none."""
        mod = self.part(layer, "attn_out")
        bias = module_tensor(mod, "bias")
        if isinstance(bias, torch.Tensor):
            return bias.detach()
        w = module_tensor(mod, "weight")
        return torch.zeros(self.d_model, dtype=w.dtype, device=w.device)


def _check_spec(adapter: Adapter) -> None:
    """Touch every part of block 0 so that a wrong path fails at load time, not mid-analysis."""
    spec = adapter.spec
    for name in ("embed",) + (("final_norm",) if spec.final_norm else ()):
        get_module(adapter.base, getattr(spec, name))
    for name in ("attn", "attn_out", "mlp", "mlp_out", "mlp_in", "mlp_gate", "mlp_act", "ln_attn", "ln_mlp",
                 "attn_q", "attn_k", "attn_v", "attn_qkv"):
        if getattr(spec, name) is not None:
            adapter.part(0, name)


def _help(model_type: str) -> str:
    return (
        f"mri_widgets has no adapter for model_type {model_type!r}. Pass its module paths "
        "explicitly, e.g. mri_widgets.load(model, tokenizer, module_paths=dict(blocks='model.layers', "
        "embed='model.embed_tokens', final_norm='model.norm', attn='self_attn', attn_out='self_attn.o_proj', "
        "mlp='mlp', mlp_out='mlp.down_proj', mlp_in='mlp.up_proj', attn_q='self_attn.q_proj', "
        "attn_k='self_attn.k_proj', attn_v='self_attn.v_proj', rotary='half')) -- 'blocks', 'embed' and "
        "'final_norm' are dotted paths from the top model, the others are relative to one block (attn_q/k/v "
        "and rotary are needed only for the q/k/v sites and W_Q/W_K/W_V). Supported families: "
        + ", ".join(sorted(FAMILY_OF))
    )


def resolve_adapter(model: nn.Module, module_paths: Optional[dict] = None) -> Adapter:
    """Find the blocks, norms, MLP and attention parts of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        A transformers model (causal LM, encoder, or LLaVA-style vision-language model).
    module_paths : dict, optional
        Explicit paths for an unsupported model; keys are :class:`ArchSpec` fields (``family``
        optional, plus booleans such as ``parallel``); ``blocks``, ``embed`` and ``final_norm``
        are dotted paths from the top model.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    multimodal = None
    lm_config = config
    image_token_id = None
    base = getattr(model, "base_model", model)

    if module_paths is not None:
        fields = {f.name for f in dataclasses.fields(ArchSpec)}
        unknown = set(module_paths) - fields
        if unknown:
            raise AdapterError(f"unknown module_paths keys {sorted(unknown)}; known: {sorted(fields)}")
        kw = dict(module_paths)
        kw.setdefault("family", str(model_type))
        kw.setdefault("final_norm", None)
        kw.setdefault("mlp_in", None)
        missing = {"blocks", "embed", "attn", "attn_out", "mlp", "mlp_out"} - set(kw)
        if missing:
            raise AdapterError(f"module_paths lacks {sorted(missing)}")
        spec = ArchSpec(**kw)
        base = model
    else:
        if model_type in MULTIMODAL:
            multimodal = MULTIMODAL[model_type]
            lm_config = getattr(config, "text_config", None)
            inner = getattr(model, "model", model)
            base = getattr(inner, "language_model", None)
            if base is None:
                raise AdapterError(f"cannot find the language model inside this {model_type} model")
            base = getattr(base, "base_model", base) if not hasattr(base, "layers") else base
            image_token_id = _config_get(config, "image_token_id", "image_token_index")
            model_type = getattr(lm_config, "model_type", "llama")
        family = FAMILY_OF.get(model_type)
        if family is None:
            raise AdapterError(_help(model_type))
        spec = SPECS[family]
        if family == "gpt_neox" and not getattr(lm_config, "use_parallel_residual", True):
            spec = dataclasses.replace(spec, parallel=False)

    try:
        blocks = get_module(base, spec.blocks)
    except AdapterError as e:
        raise AdapterError(f"{e}. {_help(model_type)}") from None
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise AdapterError(f"{spec.blocks!r} is not a non-empty list of blocks. {_help(model_type)}")
    adapter = Adapter(model=model, spec=spec, base=base, config=lm_config, multimodal=multimodal,
                      image_token_id=image_token_id, blocks=list(blocks))
    try:
        _check_spec(adapter)
    except AdapterError as e:
        raise AdapterError(f"{e}. {_help(model_type)}") from None
    return adapter
