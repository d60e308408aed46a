"""Hooked capture of activations, materialised or streamed batch by batch to a reducer."""

from __future__ import annotations

import contextlib
import math
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .adapters import Adapter, AdapterError, exec_device_dtype

__all__ = ["SITES", "Capture", "CaptureBatch", "run_capture", "capture_inputs", "check_texts", "plan_batches",
           "BATCH_BYTES", "BATCH_TOKENS"]

#: Every site of the engine: name -> "shape: where in the block it is read". ``b`` texts, ``L``
#: the captured layers (``resid``: ``n_layers + 1`` states, 0 = embeddings), ``H`` query heads.
#: The README maps each one to its TransformerLens hook name.
SITES = {
    "resid": "(b, L, seq, d_model): the residual stream: the embeddings (the input of block 0), then each "
             "block's output; the last one is before the final norm, unlike transformers' hidden_states[-1], "
             "which has the final norm applied",
    "attn_in": "(b, L, seq, d_model): what attention reads: the output of the attention norm (ln_attn); "
               "the block input for post-norm models (BERT)",
    "q": "(b, L, H, seq, d_head): queries per head, after rotary embeddings where the model applies them "
         "(and after the query norm of Qwen3 / OLMo-2)",
    "k": "(b, L, H, seq, d_head): keys per head, after rotary embeddings; grouped-query attention: "
         "expanded to every query head",
    "v": "(b, L, H, seq, d_head): values per head; grouped-query attention: expanded to every query head",
    "attn": "(b, L, H, seq, seq): attention probabilities (query, key); eager attention is switched on "
            "for the call",
    "z": "(b, L, H, seq, d_head): per head, the attention-weighted values, the input of the attention "
         "output projection",
    "head_out": "(b, L, H, seq, d_model): each head's write into the residual stream, z[h] @ W_O[h] "
                "(without the output bias)",
    "attn_out": "(b, L, seq, d_model): what attention adds to the residual stream: the output of its output "
                "projection, bias included (BERT: before the add and LayerNorm)",
    "resid_mid": "(b, L, seq, d_model): the residual after attention, before the MLP (the input of ln_mlp); "
                 "parallel blocks (GPT-J, GPT-NeoX with use_parallel_residual): the block input, which is "
                 "what their MLP reads; post-norm models (BERT): the attention block's normed output",
    "mlp_in": "(b, L, seq, d_model): what the MLP reads: the output of the MLP norm (ln_mlp)",
    "mlp_gate": "(b, L, seq, d_mlp): gate pre-activation of a gated MLP",
    "mlp_up": "(b, L, seq, d_mlp): up projection of a gated MLP",
    "mlp_act": "(b, L, seq, d_mlp): act(gate) of a gated MLP",
    "mlp": "(b, L, seq, d_mlp): the neuron activations, the input of the MLP output projection",
    "mlp_out": "(b, L, seq, d_model): what the MLP adds to the residual stream: the output of its output "
               "projection, bias included (BERT: before the add and LayerNorm)",
}

#: sites with one tensor per head: (b, L, H, seq, last)
_PER_HEAD = frozenset(("q", "k", "v", "z", "head_out"))


class CaptureError(ValueError):
    """Bad input to a capture (texts, sites, layers)."""


def check_texts(texts, *, what: str = "texts") -> list[str]:
    """Validate a list of texts (a single string is accepted as one text).

    Bytes are rejected as bytes (decode them first), and so is text that is not valid Unicode
    (a lone surrogate such as ``"\\ud83d"``, left by splitting an emoji's UTF-16 pair): the
    error names the text and the character position.
    """
    if isinstance(texts, str):
        texts = [texts]
    if texts is None:
        raise CaptureError(f"{what} is None: pass a list of strings")
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise CaptureError(f"{what} is {type(texts).__name__}, not text: decode it first, "
                           f"e.g. {what}.decode('utf-8'), and pass the string")
    texts = list(texts)
    if not texts:
        raise CaptureError(f"{what} is empty: pass at least one string")
    for i, t in enumerate(texts):
        if isinstance(t, (bytes, bytearray, memoryview)):
            raise CaptureError(f"{what}[{i}] is {type(t).__name__}, not text: decode it first, "
                               "e.g. x.decode('utf-8')")
        if not isinstance(t, str):
            raise CaptureError(f"{what}[{i}] is a {type(t).__name__}, not a string: pass text, e.g. str(x)")
        if not t.strip():
            raise CaptureError(f"{what}[{i}] is empty or blank: remove it or give it some text")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CaptureError(
                f"{what}[{i}] is not valid Unicode: character {e.start} is a lone surrogate "
                f"{t[e.start]!r} (half of a UTF-16 pair, e.g. from splitting an emoji). Rejoin the "
                "pair with text.encode('utf-16', 'surrogatepass').decode('utf-16'), or drop it with "
                "text.encode('utf-8', 'replace').decode('utf-8')") from None
    return texts


def check_capture_args(batch_size, max_length, progress) -> tuple:
    """``(batch_size, max_length, progress)`` checked: positive integers (``batch_size`` None means
    batches by a token budget, ``max_length`` None keeps every token), ``progress`` None or a bool."""
    from .._checks import check_bool, check_int

    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", min=1, error=CaptureError,
                               hint=" (or None: batches by a token budget)")
    if max_length is not None:
        max_length = check_int(max_length, "max_length", min=1, error=CaptureError,
                               hint=" (max_length is the number of tokens kept per text; None keeps all)")
    progress = None if progress is None else check_bool(progress, "progress")
    return batch_size, max_length, progress


@dataclass
class CaptureBatch:
    """One batch handed to a ``reducer``.

    Attributes
    ----------
    acts : dict
        site -> tensor on the model's input device, in the model's dtype; shapes in :data:`SITES`
        (``resid`` (b, n_resid_layers, seq, d_model); ``mlp*`` (b, n_layers, seq, d_mlp);
        ``attn`` (b, n_layers, n_heads, seq, seq); ``q``/``k``/``v``/``z`` (b, n_layers, n_heads,
        seq, d_head); ``head_out`` (b, n_layers, n_heads, seq, d_model)).
        Positions are right-padded: real tokens first. Padding positions hold zeros.
    mask : (b, seq) bool tensor of real tokens.
    input_ids : (b, seq) tensor.
    indices : list of int, the index in the whole text list of each row. Batches formed by a
        token budget (the default) hold texts of similar lengths, so rows are in no particular
        order: store results at ``indices``, e.g. ``out[batch.indices] = pooled``.
    layers : site -> list of the layer indices along axis 1 of ``acts[site]``.
    tokens : token strings per text (real tokens only).
    """

    acts: dict
    mask: torch.Tensor
    input_ids: torch.Tensor
    indices: list
    layers: dict
    tokens: list = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def start(self) -> int:
        """Index of the first row's text, for batches of consecutive texts (``batch_size=`` given).

        Raises CaptureError when the rows are not consecutive texts: use :attr:`indices`."""
        idx = self.indices
        if list(idx) != list(range(idx[0], idx[0] + len(idx))):
            raise CaptureError(
                "this batch's rows are not consecutive texts (batches are formed by a token budget, texts "
                "sorted by length): use batch.indices, the text index of each row, or pass batch_size= "
                "to capture for batches of consecutive texts")
        return int(idx[0])


class Capture:
    """Materialised activations of a list of texts.

    Index by site name: ``cap["resid"]`` is a CPU float32 tensor of shape
    (n_texts, n_layers + 1, seq, d_model). ``mask`` (n_texts, seq) marks real tokens; positions
    are aligned so that token ``i`` of a text is at position ``i`` whatever the tokenizer's padding
    side. ``tokens`` are the token strings of each text and ``input_ids`` the padded ids.
    """

    def __init__(self, acts: dict, mask, input_ids, tokens, layers: dict, texts):
        self._acts = acts
        self.mask = mask
        self.input_ids = input_ids
        self.tokens = tokens
        self.layers = layers
        self.texts = texts

    def __getitem__(self, site: str) -> torch.Tensor:
        if site not in self._acts:
            raise KeyError(f"site {site!r} was not captured; captured: {sorted(self._acts)}")
        return self._acts[site]

    def __contains__(self, site) -> bool:
        return site in self._acts

    def keys(self):
        return self._acts.keys()

    @property
    def sites(self) -> list[str]:
        return list(self._acts)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._acts.items())
        return f"Capture({len(self.tokens)} texts; {shapes})"


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def _eager_attention(model):
    """Temporarily switch to eager attention so that attention probabilities exist."""
    cfgs = [m.config for m in model.modules() if hasattr(m, "config")]
    old = [getattr(c, "_attn_implementation", None) for c in cfgs]
    switched = False
    if any(o not in (None, "eager") for o in old) and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
            switched = True
        except Exception:  # pragma: no cover - depends on transformers version
            switched = False
    if not switched:
        for c in cfgs:
            if getattr(c, "_attn_implementation", None) not in (None, "eager"):
                try:
                    c._attn_implementation = "eager"
                except Exception:  # pragma: no cover
                    pass
    try:
        yield
    finally:
        if switched:
            model.set_attn_implementation(old[0])
        else:
            for c, o in zip(cfgs, old):
                if o is not None:
                    try:
                        c._attn_implementation = o
                    except Exception:  # pragma: no cover
                        pass


def normalise_sites(adapter: Adapter, sites) -> list[str]:
    """Check ``sites`` (a name or a list of names of :data:`SITES`); returns them without repeats."""
    if isinstance(sites, str):
        sites = (sites,)
    sites = list(dict.fromkeys(sites))
    if not sites:
        raise CaptureError("sites is empty: pass e.g. sites=('resid',)")
    for s in sites:
        if s not in SITES:
            raise CaptureError(f"unknown site {s!r}; known sites: " + ", ".join(SITES))
        if s in ("mlp_gate", "mlp_up", "mlp_act") and not adapter.gated:
            raise CaptureError(f"site {s!r} exists only for gated MLPs; the {adapter.family} MLP is not gated (use 'mlp')")
        if s in ("q", "k", "v"):
            adapter.qkv_module(0, s)  # names the module_paths keys to pass when the adapter has none
    return sites


def normalise_layers(adapter: Adapter, sites, layers) -> dict:
    """Per site, the layer indices to capture (see :func:`mri_widgets._checks.parse_layers`).

    ``layers`` is None (all), an int, a list of ints or a string such as ``"20-21"``; indices count
    the site's own layers (``resid`` has ``n_layers + 1``: 0 is the embeddings). A dict gives each
    site its own selection (``{"resid": [3, 4], "z": [3]}``; sites it does not name: all layers)."""
    from .._checks import parse_layers
    if isinstance(layers, dict):
        extra = set(layers) - set(sites)
        if extra:
            raise CaptureError(f"layers names sites that are not captured: {sorted(extra)}; sites: {list(sites)}")
    out = {}
    for s in sites:
        n = adapter.n_layers + 1 if s == "resid" else adapter.n_layers
        what = "resid layer (0 = embeddings)" if s == "resid" else "layer"
        sel = layers.get(s) if isinstance(layers, dict) else layers
        out[s] = parse_layers(sel, n, what=what, error=CaptureError, unique=False)
    return out


#: Default memory budget of one batch, in bytes of its captured activations (as float32), when
#: ``batch_size`` is None: texts are then grouped by length into batches that fit it.
BATCH_BYTES = 512 * 2 ** 20
#: Most tokens (padding included) in one batch formed by the budget: bounds the forward pass's own
#: memory, and beyond a few thousand tokens larger batches run no faster.
BATCH_TOKENS = 4096


def _token_bytes(adapter: Adapter, sites, layer_sel) -> tuple[int, int]:
    """float32 bytes that one text's captured activations take per token and per (query, key) pair."""
    per_tok = per_pair = 0
    width = max(adapter.d_model, adapter.n_heads * adapter.d_head)
    for s in sites:
        n = len(layer_sel[s])
        if s == "attn":
            per_pair += n * adapter.n_heads
        elif s in ("mlp", "mlp_gate", "mlp_up", "mlp_act"):
            per_tok += n * adapter.d_mlp
        elif s == "head_out":
            per_tok += n * adapter.n_heads * adapter.d_model
        else:  # resid and any other per-token site: one d_model (or n_heads * d_head) vector per layer
            per_tok += n * width
    return 4 * per_tok, 4 * per_pair


def plan_batches(lengths: Sequence[int], *, batch_size: Optional[int] = None, max_tokens: int = BATCH_TOKENS,
                 max_bytes: int = BATCH_BYTES, bytes_per_token: int = 0, bytes_per_pair: int = 0) -> list:
    """Split texts of the given token ``lengths`` into batches; returns lists of text indices.

    With ``batch_size``, consecutive texts in the given order, ``batch_size`` at a time. Without,
    the texts are sorted by length (longest first, ties in the given order) and cut greedily into
    batches whose padded size stays within ``max_tokens`` tokens and ``max_bytes`` bytes (a batch
    of ``b`` texts padded to ``n`` tokens costs ``b * (n * bytes_per_token + n**2 * bytes_per_pair)``);
    a text over the budget alone forms its own batch. Once a batch holds a quarter of either
    budget, a text shorter than 7/8 of its longest starts a new one. Sorting keeps the padding
    small, and the largest batch comes first.
    """
    n = len(lengths)
    if batch_size is not None:
        return [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    order = sorted(range(n), key=lambda i: -int(lengths[i]))  # stable: ties keep the given order
    batches: list = []
    cur: list = []
    for i in order:
        if cur:
            m, b = max(int(lengths[cur[0]]), 1), len(cur) + 1  # cur[0] is the longest of the batch
            per_text = m * bytes_per_token + m * m * bytes_per_pair
            over = b * m > max_tokens or b * per_text > max_bytes
            # a batch already big enough to run efficiently takes no text much shorter than its longest
            big = (b - 1) * m >= max_tokens // 4 or (b - 1) * per_text >= max_bytes // 4
            ragged = big and int(lengths[i]) * 8 < m * 7
            if over or ragged:
                batches.append(cur)
                cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _attention_estimate(adapter: Adapter, sites, layer_sel, lengths, batch_size, batch_tokens, materialise: bool):
    """``m -> {device: bytes}``: the memory of a capture with site ``"attn"`` of texts truncated to ``m``.

    The model returns every layer's probabilities (model dtype); they are stacked (the selected
    layers), and when materialised copied to float32, padded, and stored in the result of all texts
    (CPU). One layer's eager scores and softmax temporaries come on top."""
    from .attention import device_name, dtype_bytes

    dev = device_name(adapter)
    db = dtype_bytes(adapter)
    H, L = adapter.n_heads, adapter.n_layers
    per_tok, per_pair = _token_bytes(adapter, sites, layer_sel)
    n_texts = len(lengths)

    def est(m: int) -> dict:
        ls = [min(x, m) for x in lengths]
        batches = plan_batches(ls, batch_size=batch_size, bytes_per_token=per_tok, bytes_per_pair=per_pair,
                               max_tokens=BATCH_TOKENS if batch_tokens is None else batch_tokens,
                               max_bytes=BATCH_BYTES if batch_tokens is None else 1 << 62)
        worst = max(len(b) * max(ls[i] for i in b) ** 2 for b in batches)  # b * seq^2 of the largest batch
        stacked = worst * (per_pair // 4) * db
        # during the forward pass: every layer's probabilities, one layer's scores and softmax
        # temporaries; then the stacked copy of the selected layers
        model_side = worst * (L * H * db + 3 * H * 4) + stacked
        if not materialise:
            return {dev: model_side}
        seq = max(ls)
        host = n_texts * (seq * per_tok + seq * seq * per_pair) + worst * per_pair  # result + padded copy
        if dev == "cpu":  # the stacked batch is still alive while it is copied into the result
            return {"cpu": max(model_side, stacked + host)}
        return {dev: model_side, "cpu": host}
    return est


def _check_attention_memory(adapter, sites, layer_sel, lengths, batch_size, batch_tokens, materialise) -> None:
    """Raise :class:`~mri_widgets.models.attention.AttentionMemoryError` before a capture with site
    ``"attn"`` that would not fit in memory, naming a ``max_length`` that does."""
    from .attention import check_fits

    n_l = len(layer_sel["attn"])
    hint = ("; or capture fewer layers (layers=), or stream it (reducer=)" if materialise else
            "; or capture fewer layers (layers=)")
    hint += ("; head analyses (mri_widgets.head_stats, head_distances, HeadMap) compute attention in "
             "blocks of query rows and need far less")
    check_fits(_attention_estimate(adapter, sites, layer_sel, lengths, batch_size, batch_tokens, materialise),
               max(lengths), what=f"capturing site 'attn' ({len(lengths)} text(s), {n_l} layers x "
               f"{adapter.n_heads} heads of (seq x seq) probabilities)", hint=hint)


def _pad_rows(rows: list, width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, :len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def run_capture(
    adapter: Adapter,
    tokenizer,
    texts,
    sites=("resid",),
    *,
    batch_size: Optional[int] = None,
    max_length: Optional[int] = None,
    reducer: Optional[Callable[[CaptureBatch], None]] = None,
    layers=None,
    progress: Optional[bool] = None,
    token_str: Optional[Callable] = None,
    extra_inputs: Optional[dict] = None,
    batch_tokens: Optional[int] = None,
):
    """Run the model over ``texts`` with hooks; see :meth:`LoadedModel.capture`.

    Texts are tokenised once up front. ``batch_size=None`` (default) groups them by length into
    batches within a token budget (:func:`plan_batches`, :data:`BATCH_BYTES`, :data:`BATCH_TOKENS`,
    or ``batch_tokens`` tokens); results come back in the order of ``texts`` either way.
    """
    from tqdm.auto import tqdm

    texts = check_texts(texts)
    sites = normalise_sites(adapter, sites)
    layer_sel = normalise_layers(adapter, sites, layers)
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise CaptureError(f"batch_size must be a positive integer or None (batches by a token budget), "
                           f"got {batch_size!r}")
    if batch_tokens is not None and (not isinstance(batch_tokens, int) or isinstance(batch_tokens, bool)
                                     or batch_tokens < 1):
        raise CaptureError(f"batch_tokens must be a positive integer or None, got {batch_tokens!r}")
    model = adapter.model
    device = exec_device_dtype(adapter.embed)[0]

    # tokenise every text once, unpadded; batches are padded on the right (real tokens first)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    limit = max_positions(adapter)
    enc_kw = {}
    if max_length is not None:
        enc_kw.update(truncation=True, max_length=int(max_length))
    enc_all = tokenizer(texts, **enc_kw)
    ids_list = list(enc_all["input_ids"])
    if "attention_mask" in enc_all:  # tokenizers that pad anyway: keep the real tokens only
        ids_list = [[t for t, m in zip(ids, mk) if m] for ids, mk in zip(ids_list, enc_all["attention_mask"])]
    types = enc_all.get("token_type_ids")
    if types is not None and "attention_mask" in enc_all:
        types = [[t for t, m in zip(tt, mk) if m] for tt, mk in zip(types, enc_all["attention_mask"])]
    lengths = [len(ids) for ids in ids_list]
    if max_length is None and limit is not None and max(lengths) > limit:
        worst = max(range(len(lengths)), key=lengths.__getitem__)
        raise CaptureError(
            f"text {worst} has {lengths[worst]} tokens but the model accepts "
            f"{limit}; pass max_length={limit} (or smaller) to truncate")
    per_tok, per_pair = _token_bytes(adapter, sites, layer_sel)
    batches = plan_batches(lengths, batch_size=batch_size, bytes_per_token=per_tok, bytes_per_pair=per_pair,
                           max_tokens=BATCH_TOKENS if batch_tokens is None else batch_tokens,
                           max_bytes=BATCH_BYTES if batch_tokens is None else 1 << 62)

    n_texts, seq_all = len(texts), max(lengths)
    if "attn" in sites:
        _check_attention_memory(adapter, sites, layer_sel, lengths, batch_size, batch_tokens,
                                materialise=reducer is None)
    show = (len(batches) > 1) if progress is None else progress
    final: dict = {}
    mask_all = torch.zeros((n_texts, seq_all), dtype=torch.bool)
    ids_all = torch.full((n_texts, seq_all), pad_id, dtype=torch.long)
    tokens_all: list = [None] * n_texts

    forward_kw = {}
    if "attn" in sites:
        forward_kw["output_attentions"] = True
    ctx = _eager_attention(model) if "attn" in sites else contextlib.nullcontext()

    # with a reducer, each site's stacked activations go into one buffer reused by every batch (a
    # fresh allocation of that size per batch costs page faults on the order of the copy itself)
    pool: dict = {}
    with ctx, torch.inference_mode():
        for idx in tqdm(batches, desc="capture", disable=not show, leave=False):
            seq = max(lengths[i] for i in idx)
            input_ids = _pad_rows([ids_list[i] for i in idx], seq, pad_id)
            mask = torch.arange(seq)[None, :] < torch.tensor([lengths[i] for i in idx])[:, None]
            enc = {"input_ids": input_ids, "attention_mask": mask.long()}
            if types is not None:
                enc["token_type_ids"] = _pad_rows([types[i] for i in idx], seq, 0)
            inputs = {k: v.to(device) for k, v in enc.items()}
            if extra_inputs:
                inputs.update(extra_inputs)
            mask_d = mask.to(device)
            acts = _forward_batch(adapter, inputs, mask_d, sites, layer_sel, forward_kw,
                                  buffers=pool if reducer is not None else None)
            toks = None
            if token_str is not None:
                toks = [token_str(ids_list[i]) for i in idx]
            batch = CaptureBatch(acts=acts, mask=mask_d, input_ids=inputs["input_ids"],
                                 indices=list(idx), layers=layer_sel, tokens=toks or [])
            if reducer is not None:
                reducer(batch)
            else:
                rows = torch.as_tensor(idx, dtype=torch.long)
                for s in sites:
                    t = _pad_seq(acts[s].float().cpu(), seq_all, s)
                    if s not in final:  # a normal tensor, not an inference tensor: users compute with it
                        with torch.inference_mode(False):
                            final[s] = torch.zeros((n_texts,) + tuple(t.shape[1:]), dtype=torch.float32)
                    final[s][rows] = t
                mask_all[rows, :seq] = mask
                ids_all[rows, :seq] = input_ids
                if toks:
                    for i, tk in zip(idx, toks):
                        tokens_all[i] = tk
            del acts, batch
    if reducer is not None:
        return None
    tokens_all = tokens_all if token_str is not None else []
    return Capture(final, mask_all, ids_all, tokens_all, layer_sel, texts)


class _StopForward(Exception):
    """Raised by a hook once every requested activation is recorded: the rest of the model is skipped."""


def _last_block_needed(adapter: Adapter, sites, layer_sel) -> Optional[int]:
    """Index of the last block whose activations are needed, or None when the whole model must run."""
    if "attn" in sites:  # attention probabilities come from the model's outputs
        return None
    last = -1
    for s in sites:
        for l in layer_sel[s]:
            last = max(last, l - 1 if s == "resid" else l)
    return max(last, 0)


def _forward_batch(adapter: Adapter, inputs: dict, mask: torch.Tensor, sites, layer_sel, forward_kw,
                   buffers: Optional[dict] = None) -> dict:
    """One hooked forward pass: site -> stacked activations (b, layers, ...) with padding zeroed.

    With ``buffers`` (a dict kept across calls), each site is stacked into a flat buffer that is
    grown when needed and otherwise reused, so the result is valid until the next call only.

    The pass stops after the last block that holds a requested activation (so ``layers=[3]``
    costs four blocks, not the whole model), and a causal LM computes logits for one position
    only, since capture never needs them.
    """
    got: dict = {}
    handles = _install_hooks(adapter, sites, layer_sel, got)
    last = _last_block_needed(adapter, sites, layer_sel)
    if last is not None and last < adapter.n_layers - 1:
        def stop(mod, inp, out):
            raise _StopForward
        handles.append(adapter.blocks[last].register_forward_hook(stop))
    kw = dict(forward_kw)
    if _accepts(adapter.model.forward, "logits_to_keep"):
        kw["logits_to_keep"] = 1
    out = None
    try:
        out = adapter.model(**inputs, **kw)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if "attn" in sites:
        atts = getattr(out, "attentions", None)
        if not atts or atts[0] is None:
            raise AdapterError("the model returned no attention probabilities even with eager attention")
        got["attn"] = {l: atts[l] for l in layer_sel["attn"]}
    device = mask.device
    out = {}
    for s in sites:
        parts = [got[s][l].to(device) for l in layer_sel[s]]
        got[s] = None  # drop the model's tensors as soon as they are stacked
        if buffers is None:
            stacked = torch.stack(parts, dim=1)
        else:
            p0 = parts[0]
            shape = (p0.shape[0], len(parts)) + tuple(p0.shape[1:])
            n = math.prod(shape)
            buf = buffers.get(s)
            if buf is None or buf.numel() < n or buf.dtype != p0.dtype or buf.device != p0.device:
                buf = buffers[s] = torch.empty(n, dtype=p0.dtype, device=p0.device)
            stacked = torch.stack(parts, dim=1, out=buf[:n].view(shape))
        del parts
        out[s] = _zero_padding(stacked, mask, s)
    return out


def capture_inputs(adapter: Adapter, inputs: dict, sites=("resid",), *, layers=None,
                   token_str: Optional[Callable] = None) -> Capture:
    """Capture one already-encoded batch (e.g. a processor's output with ``pixel_values``).

    ``inputs`` must hold ``input_ids`` (and ``attention_mask`` when there is padding, which must
    then be on the right). Returns a :class:`Capture` like :func:`run_capture`.
    """
    sites = normalise_sites(adapter, sites)
    layer_sel = normalise_layers(adapter, sites, layers)
    if "input_ids" not in inputs:
        raise CaptureError("inputs must hold 'input_ids' (the output of a tokenizer or processor)")
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    if bool((~mask[:, 0]).any()):
        raise CaptureError("left-padded inputs: encode with padding_side='right'")
    device = exec_device_dtype(adapter.embed)[0]
    inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
    forward_kw = {"output_attentions": True} if "attn" in sites else {}
    ctx = _eager_attention(adapter.model) if "attn" in sites else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        acts = _forward_batch(adapter, inputs, mask.to(device), sites, layer_sel, forward_kw)
    tokens = [token_str(row[m].tolist()) for row, m in zip(ids.cpu(), mask.cpu())] if token_str else []
    return Capture({s: a.float().cpu() for s, a in acts.items()}, mask.cpu(), ids.cpu(), tokens, layer_sel, None)


def max_positions(adapter: Adapter) -> Optional[int]:
    cfg = adapter.config
    for n in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, n, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _zero_padding(t: torch.Tensor, mask: torch.Tensor, site: str) -> torch.Tensor:
    if bool(mask.all()):  # no padding in this batch (texts of one length): nothing to zero, no pass over t
        return t
    if site == "attn":  # (b, L, H, q, k): zero padded queries and keys
        m = mask[:, None, None, :, None] & mask[:, None, None, None, :]
    elif site in _PER_HEAD:  # (b, L, H, seq, x)
        m = mask[:, None, None, :, None]
    else:  # (b, L, seq, d)
        m = mask[:, None, :, None]
    return t.masked_fill_(~m, 0)  # in place: ``t`` is the freshly stacked copy


def _pad_seq(t: torch.Tensor, seq: int, site: str) -> torch.Tensor:
    if site == "attn":
        p = seq - t.shape[-1]
        return torch.nn.functional.pad(t, (0, p, 0, p))
    if site in _PER_HEAD:
        return torch.nn.functional.pad(t, (0, 0, 0, seq - t.shape[3]))
    return torch.nn.functional.pad(t, (0, 0, 0, seq - t.shape[2]))


def _hidden(args, kwargs):
    """The hidden states among a module's inputs (first positional argument or a known keyword)."""
    if args:
        return args[0]
    for k in ("hidden_states", "input", "x", "hidden_state"):
        if torch.is_tensor(kwargs.get(k)):
            return kwargs[k]
    raise AdapterError("cannot find the hidden states among the module's inputs")


def _position_embeddings(adapter: Adapter, attn, kwargs, x):
    """The rotary tables the model hands its attention module (see :meth:`Adapter.apply_rotary`)."""
    pe = kwargs.get("position_embeddings")
    if pe is not None:
        return pe
    table = getattr(attn, "embed_positions", None)  # GPT-J before transformers 5: sin|cos by position
    if adapter.spec.rotary == "every_two" and torch.is_tensor(table):
        pos = kwargs.get("position_ids")
        if pos is None:
            pos = torch.arange(x.shape[1], device=x.device)[None]
        sincos = table.to(x.device)[pos]
        half = sincos.shape[-1] // 2
        return sincos[..., :half], sincos[..., half:]
    raise CaptureError(f"the {adapter.family} attention received no rotary position embeddings, so queries and "
                       "keys after rotary cannot be captured; upgrade transformers (>= 5)")


def _install_hooks(adapter: Adapter, sites, layer_sel, got: dict):
    """Register the hooks of ``sites`` only (nothing for sites not asked for); they fill ``got[site][layer]``."""
    handles = []
    spec = adapter.spec
    for s in sites:
        got[s] = {}

    def add(mod, hook, pre=False):
        if pre:
            handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(mod.register_forward_hook(hook))

    def keep(site, layer):
        def hook(mod, inp, out):
            got[site][layer] = _first(out)
        return hook

    def keep_input(site, layer):
        def hook(mod, args, kwargs):
            got[site][layer] = _hidden(args, kwargs)
        return hook

    if "resid" in sites:
        want = set(layer_sel["resid"])
        if 0 in want:
            add(adapter.blocks[0], keep_input("resid", 0), pre=True)
        for l in range(adapter.n_layers):
            if l + 1 in want:
                add(adapter.blocks[l], keep("resid", l + 1))
    if "attn_in" in sites:
        for l in layer_sel["attn_in"]:
            if spec.ln_attn is not None:
                add(adapter.part(l, "ln_attn"), keep("attn_in", l))
            else:
                add(adapter.part(l, "attn"), keep_input("attn_in", l), pre=True)
    if "mlp_in" in sites:
        for l in layer_sel["mlp_in"]:
            add(adapter.part(l, "mlp"), keep_input("mlp_in", l), pre=True)
    for s, part in (("attn_out", "attn_out"), ("mlp_out", "mlp_out")):
        if s in sites:
            for l in layer_sel[s]:
                add(adapter.part(l, part), keep(s, l))
    if "resid_mid" in sites:
        for l in layer_sel["resid_mid"]:
            if spec.parallel:
                add(adapter.blocks[l], keep_input("resid_mid", l), pre=True)
            elif spec.ln_mlp is not None:
                add(adapter.part(l, "ln_mlp"), keep_input("resid_mid", l), pre=True)
            elif spec.post_norm:
                add(adapter.part(l, "mlp"), keep_input("resid_mid", l), pre=True)
            else:  # a sequential block whose MLP reads no norm of its own: block input + attention output
                def block_in(mod, args, kwargs, l=l):
                    got["resid_mid"][l] = _hidden(args, kwargs)

                def plus_attn(mod, inp, out, l=l):
                    got["resid_mid"][l] = got["resid_mid"][l] + _first(out)
                add(adapter.blocks[l], block_in, pre=True)
                add(adapter.part(l, "attn_out"), plus_attn)
    if "mlp" in sites:
        for l in layer_sel["mlp"]:
            add(adapter.part(l, "mlp_out"), keep_input("mlp", l), pre=True)
    for s, part in (("mlp_gate", "mlp_gate"), ("mlp_up", "mlp_in"), ("mlp_act", "mlp_act")):
        if s in sites:
            for l in layer_sel[s]:
                add(adapter.part(l, part), keep(s, l))
    H, dh = adapter.n_heads, adapter.d_head
    qkv = [s for s in ("q", "k", "v") if s in sites]
    if qkv:
        rotary: dict = {}  # layer -> the rotary tables of this forward pass
        needs_rotary = spec.rotary is not None and ("q" in sites or "k" in sites)

        def tables(layer):
            def hook(mod, args, kwargs):
                rotary[layer] = _position_embeddings(adapter, mod, kwargs, _hidden(args, kwargs))
            return hook

        def heads(site, layer, split):
            def hook(mod, inp, out):
                t = adapter.split_qkv(_first(out), site) if split else _first(out)
                b, seq = t.shape[:2]
                t = t.reshape(b, seq, -1, dh).transpose(1, 2)  # (b, n, seq, dh)
                if site != "v" and spec.rotary is not None:
                    t = adapter.apply_rotary(t, rotary[layer])
                if t.shape[1] != H:  # grouped-query attention: every query head gets its key/value head
                    t = t.repeat_interleave(H // t.shape[1], dim=1)
                got[site][layer] = t
            return hook

        for l in sorted({l for s in qkv for l in layer_sel[s]}):
            if needs_rotary:
                add(adapter.part(l, "attn"), tables(l), pre=True)
            for s in qkv:
                if l in layer_sel[s]:
                    norm = adapter.optional_part(l, f"attn_{s}_norm") if s != "v" else None
                    if norm is not None:  # Qwen3 / OLMo-2: the normed queries or keys
                        add(norm, heads(s, l, split=False))
                    else:
                        add(adapter.qkv_module(l, s), heads(s, l, split=True))
    if "z" in sites:
        def zhook(layer):
            def hook(mod, args, kwargs):
                x = _hidden(args, kwargs)
                got["z"][layer] = x.reshape(*x.shape[:2], H, dh).transpose(1, 2)
            return hook
        for l in layer_sel["z"]:
            add(adapter.part(l, "attn_out"), zhook(l), pre=True)
    if "head_out" in sites:
        def per_head(layer):
            # (H, dh, d_model); offloaded weights (accelerate, device_map "cpu"/"disk") are read
            # from the offloading hook's weights map for this capture only
            W = adapter.W_O(layer)

            def hook(mod, args, kwargs):
                z = _hidden(args, kwargs)
                b, seq, _ = z.shape
                zh = z.reshape(b, seq, H, dh)
                got["head_out"][layer] = torch.einsum("bshd,hdm->bhsm", zh, W.to(device=z.device, dtype=z.dtype))
            return hook

        for l in layer_sel["head_out"]:
            add(adapter.part(l, "attn_out"), per_head(l), pre=True)
    return handles
