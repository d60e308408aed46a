"""The write path of the hook engine: ablate, patch and steer activations while the model runs.

An intervention names *what* to change (a site at some layers, one attention head or one MLP
neuron) and *how* (:class:`Ablate`, :class:`Patch`, :class:`Steer`). ``LoadedModel.intervene``
resolves them (computes corpus means, source activations, steering vectors) and installs one
hook per touched module; every forward pass inside the ``with`` block, whoever makes it
(``lm.capture``, ``logit_lens``, ``flow_graph``, ``NeuronScan.run``, ``lm.model(...)``,
``lm.model.generate``), runs modified. The hooks are removed on exit, whatever ends the block.

Writable sites (the read sites of :data:`~mri_widgets.models.capture.SITES` with a single place
to write them):

========== ===================================================== ====================
site       written at                                            width
========== ===================================================== ====================
resid      block input (layer 0) / each block's output            d_model
attn_out   output of the attention output projection              d_model
mlp_out    output of the MLP output projection                    d_model
mlp        input of the MLP output projection (neurons)           d_mlp
z          input of the attention output projection (per head)    n_heads * d_head
========== ===================================================== ====================

Units: ``("head", layer, h)`` is head ``h``'s slice of ``z`` at ``layer``; ``("neuron", layer, i)``
is neuron ``i`` of ``mlp``. Positions count the tokens of each text (``-1`` is its last token,
padding is skipped); during generation with a KV cache they keep counting from the prompt's
first token.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from .adapters import Adapter

__all__ = ["Ablate", "Patch", "Steer", "Intervention", "InterventionError", "WRITABLE_SITES",
           "intervene", "Edit", "apply_edits"]

#: site -> how it is written (see the module docstring)
WRITABLE_SITES = {
    "resid": "the block input (layer 0 = embeddings) or block l-1's output (layer l), (..., d_model)",
    "attn_out": "the output of the attention output projection, (..., d_model)",
    "mlp_out": "the output of the MLP output projection, (..., d_model)",
    "mlp": "the input of the MLP output projection: the neuron activations, (..., d_mlp)",
    "z": "the input of the attention output projection: per-head values, (..., n_heads * d_head)",
}

_UNITS = {"head": "z", "neuron": "mlp"}


class InterventionError(ValueError):
    """Bad intervention (unknown site or unit, out-of-range layer, head or neuron, wrong vector shape)."""


# ---------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class _Target:
    """Resolved target: a writable site, its layers, and a slice of the site's last axis (a unit)."""

    site: str
    layers: tuple
    unit: Optional[slice] = None
    label: str = ""

    def width(self, adapter: Adapter) -> int:
        full = _site_width(adapter, self.site)
        if self.unit is None:
            return full
        return self.unit.stop - self.unit.start


def _site_width(adapter: Adapter, site: str) -> int:
    return {"resid": adapter.d_model, "attn_out": adapter.d_model, "mlp_out": adapter.d_model,
            "mlp": adapter.d_mlp, "z": adapter.n_heads * adapter.d_head}[site]


def _resolve_target(adapter: Adapter, target, layers) -> _Target:
    """``("head", l, h)``, ``("neuron", l, i)`` or a site name with ``layers`` -> :class:`_Target`."""
    from .._checks import parse_layers

    if isinstance(target, str):
        if target in _UNITS:
            raise InterventionError(f"a {target} is given as a tuple: ({target!r}, layer, index), e.g. "
                                    f"({target!r}, 3, 0)")
        if target not in WRITABLE_SITES:
            raise InterventionError(f"site {target!r} cannot be written; writable sites: "
                                    + ", ".join(WRITABLE_SITES) + ", or a unit ('head', layer, h) / "
                                    "('neuron', layer, i)")
        n = adapter.n_layers + 1 if target == "resid" else adapter.n_layers
        what = "resid layer (0 = embeddings)" if target == "resid" else "layer"
        sel = parse_layers(layers, n, what=what, error=InterventionError)
        return _Target(target, tuple(sel), None, f"{target}@{_fmt_layers(sel, n)}")
    if isinstance(target, (tuple, list)) and len(target) == 3 and target[0] in _UNITS:
        kind, layer, idx = target
        if layers is not None:
            raise InterventionError(f"layers= is for site targets; the {kind} tuple names its layer already")
        layer = _index(layer, adapter.n_layers, "layer")
        if kind == "head":
            h = _index(idx, adapter.n_heads, "head")
            d = adapter.d_head
            return _Target("z", (layer,), slice(h * d, (h + 1) * d), f"head L{layer}.H{h}")
        i = _index(idx, adapter.d_mlp, "neuron")
        return _Target("mlp", (layer,), slice(i, i + 1), f"neuron L{layer}.N{i}")
    raise InterventionError(
        f"unknown target {target!r}: pass ('head', layer, h), ('neuron', layer, i), or a site name "
        f"({', '.join(WRITABLE_SITES)}) with layers=")


def _index(value, n: int, what: str) -> int:
    from .._checks import check_index
    try:
        return check_index(value, n, what)
    except IndexError as e:
        raise InterventionError(str(e)) from None


def _fmt_layers(sel, n) -> str:
    if list(sel) == list(range(n)):
        return "all"
    return ",".join(str(s) for s in sel)


def _check_positions(positions) -> Optional[tuple]:
    from .._checks import check_int

    if positions is None:
        return None
    if isinstance(positions, (int,)) and not isinstance(positions, bool):
        positions = [positions]
    try:
        pos = tuple(check_int(p, "position", error=InterventionError) for p in positions)
    except TypeError:
        raise InterventionError(f"positions must be None (all), an int or a list of ints, got {positions!r}") from None
    if not pos:
        raise InterventionError("positions is empty: pass None for every position, or some token positions")
    return pos


# ---------------------------------------------------------------------------------- interventions


class Intervention:
    """Base class of :class:`Ablate`, :class:`Patch` and :class:`Steer`."""

    #: whether it is applied (the :class:`~mri_widgets.Interventions` widget toggles this)
    enabled: bool = True

    def edits(self, lm) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def label(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(eq=False)
class Ablate(Intervention):
    """Replace activations by zero or by their mean over a corpus.

    Parameters
    ----------
    target : ``("head", layer, h)``, ``("neuron", layer, i)``, or a writable site name
        (``"resid"``, ``"attn_out"``, ``"mlp_out"``, ``"mlp"``, ``"z"``) with ``layers``.
    mode : ``"zero"`` or ``"mean"``.
    corpus : texts (list of str or a :class:`~mri_widgets.Corpus`) whose mean activation replaces
        the target, for ``mode="mean"``; the mean over every token is computed once with a
        streaming reducer and cached on the model (:meth:`LoadedModel.mean_activations`).
    mean : a precomputed mean instead of ``corpus``: shape (width,) or (len(layers), width).
    layers : for a site target: None (all), an int, a list or a string like ``"3-5"``.
    positions : token positions to change (None: all; negative counts from the end).
    """

    target: Any
    mode: str = "zero"
    corpus: Any = None
    mean: Any = None
    layers: Any = None
    positions: Any = None
    enabled: bool = True

    def __post_init__(self):
        from .._checks import check_choice
        self.mode = check_choice(self.mode, ("zero", "mean"), "mode", error=InterventionError)
        self.positions = _check_positions(self.positions)
        if self.mode == "mean" and self.corpus is None and self.mean is None:
            raise InterventionError("mode='mean' needs corpus= (texts whose mean activation replaces the target) "
                                    "or mean= (a precomputed mean)")

    @property
    def label(self) -> str:
        return f"ablate {_describe(self.target, self.layers)} ({self.mode})"

    def edits(self, lm) -> list:
        tgt = _resolve_target(lm.adapter, self.target, self.layers)
        w = tgt.width(lm.adapter)
        if self.mode == "zero":
            values = [None] * len(tgt.layers)
        elif self.mean is not None:
            values = _per_layer(self.mean, len(tgt.layers), w, "mean")
        else:
            full = lm.mean_activations(self.corpus, tgt.site, layers=list(tgt.layers))  # (L, site width)
            values = [full[i][_unit(tgt)] for i in range(len(tgt.layers))]
        return [Edit(tgt.site, l, _set_fn(v, tgt.unit, self.positions)) for l, v in zip(tgt.layers, values)]


@dataclass(eq=False)
class Patch(Intervention):
    """Write activations of a source run into the running one (activation patching).

    Parameters
    ----------
    target : as for :class:`Ablate`.
    source : a prompt (str), whose activations are captured when the ``with`` block starts, or a
        :class:`~mri_widgets.Capture` of one text holding the target's site at its layers.
    layers : for a site target.
    positions : token positions to patch (None: every position; the running text must then have
        as many tokens as the source). Position ``p`` takes the source's position ``p`` (``-1``:
        the source's last token).
    """

    target: Any
    source: Any = None
    layers: Any = None
    positions: Any = None
    enabled: bool = True

    def __post_init__(self):
        self.positions = _check_positions(self.positions)
        if self.source is None:
            raise InterventionError("Patch needs source=: a prompt or a Capture of one text")

    @property
    def label(self) -> str:
        src = repr(self.source[:30] + ("…" if len(self.source) > 30 else "")) if isinstance(self.source, str) \
            else "a capture"
        return f"patch {_describe(self.target, self.layers)} from {src}"

    def edits(self, lm) -> list:
        from .capture import Capture

        tgt = _resolve_target(lm.adapter, self.target, self.layers)
        if isinstance(self.source, str):
            cap = lm.capture([self.source], sites=[tgt.site], layers=list(tgt.layers), progress=False)
        elif isinstance(self.source, Capture):
            cap = self.source
        else:
            raise InterventionError(f"source must be a prompt (str) or a Capture, got {type(self.source).__name__}")
        acts = _source_rows(cap, tgt, lm.adapter)  # (L, seq_src, width)
        return [Edit(tgt.site, l, _patch_fn(acts[i], tgt.unit, self.positions)) for i, l in enumerate(tgt.layers)]


@dataclass(eq=False)
class Steer(Intervention):
    """Add ``alpha * vector`` to a site (activation steering).

    Parameters
    ----------
    target : as for :class:`Ablate`; usually ``"resid"`` with one layer.
    vector : (width,) or (len(layers), width); or None with ``positive`` and ``negative``.
    alpha : scale of the vector.
    positive, negative : two lists of texts: the vector is the difference of their mean
        activations (over every token), computed when the ``with`` block starts and cached.
    layers, positions : as for :class:`Ablate`.
    """

    target: Any
    vector: Any = None
    alpha: float = 1.0
    positive: Any = None
    negative: Any = None
    layers: Any = None
    positions: Any = None
    enabled: bool = True

    def __post_init__(self):
        self.positions = _check_positions(self.positions)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise InterventionError(f"alpha must be a number, got {self.alpha!r}")
        if self.vector is None and (self.positive is None or self.negative is None):
            raise InterventionError("Steer needs vector=, or positive= and negative= (two lists of texts whose "
                                    "difference of mean activations is the vector)")

    @property
    def label(self) -> str:
        src = "a vector" if self.vector is not None else "mean(positive) - mean(negative)"
        return f"steer {_describe(self.target, self.layers)} by {self.alpha:g} x {src}"

    def edits(self, lm) -> list:
        tgt = _resolve_target(lm.adapter, self.target, self.layers)
        w = tgt.width(lm.adapter)
        if self.vector is not None:
            vecs = _per_layer(self.vector, len(tgt.layers), w, "vector")
        else:
            pos = lm.mean_activations(self.positive, tgt.site, layers=list(tgt.layers))
            neg = lm.mean_activations(self.negative, tgt.site, layers=list(tgt.layers))
            vecs = [(pos[i] - neg[i])[_unit(tgt)] for i in range(len(tgt.layers))]
        a = float(self.alpha)
        return [Edit(tgt.site, l, _add_fn(a * v, tgt.unit, self.positions)) for l, v in zip(tgt.layers, vecs)]


def _describe(target, layers) -> str:
    if isinstance(target, (tuple, list)) and len(target) == 3:
        return f"{target[0]} L{target[1]}.{'H' if target[0] == 'head' else 'N'}{target[2]}"
    return f"{target}" + ("" if layers is None else f" @ layers {layers}")


def _unit(tgt: _Target):
    return slice(None) if tgt.unit is None else tgt.unit


def _per_layer(v, n: int, width: int, what: str) -> list:
    t = torch.as_tensor(v).detach().float()
    if t.dim() == 1:
        t = t[None].expand(n, -1)
    if t.dim() != 2 or t.shape != (n, width):
        raise InterventionError(f"{what} has shape {tuple(torch.as_tensor(v).shape)}; expected ({width},) or "
                                f"({n}, {width}) for {n} layer(s) of width {width}")
    if not bool(torch.isfinite(t).all()):
        raise InterventionError(f"{what} holds NaN or infinite values")
    return list(t)


def _source_rows(cap, tgt: _Target, adapter: Adapter) -> torch.Tensor:
    """(L, seq, width) source activations of ``tgt`` from a one-text Capture."""
    if tgt.site not in cap:
        raise InterventionError(f"the source capture holds {cap.sites}, not {tgt.site!r}: capture it with "
                                f"sites=[{tgt.site!r}]")
    if cap.mask.shape[0] != 1:
        raise InterventionError(f"the source capture holds {cap.mask.shape[0]} texts; pass a Capture of one text")
    have = list(cap.layers[tgt.site])
    missing = [l for l in tgt.layers if l not in have]
    if missing:
        raise InterventionError(f"the source capture has no {tgt.site!r} at layers {missing}; it holds layers {have}")
    x = cap[tgt.site][0]
    n = int(cap.mask[0].sum())
    rows = []
    for l in tgt.layers:
        a = x[have.index(l)]
        if tgt.site == "z":  # (H, seq, dh) -> (seq, H * dh)
            a = a.transpose(0, 1).reshape(a.shape[1], -1)
        rows.append(a[:n])
    return torch.stack(rows)


# ---------------------------------------------------------------------------------- edit functions
# An edit function gets the activation (b, seq, width) of one site at one layer and a _Where that
# locates the positions; it returns the modified activation (a new tensor).


class _Where:
    """Positions of the current forward call: the KV-cache offset and each row's real tokens."""

    def __init__(self, mask: Optional[torch.Tensor], offset: int, b: int, seq: int, device):
        total = offset + seq
        if mask is None or mask.dim() != 2 or mask.shape[0] != b or mask.shape[1] != total:
            mask = torch.ones(b, total, dtype=torch.bool, device=device)
        self.mask = mask.to(device=device, dtype=torch.bool)
        self.offset = offset
        self.seq = seq
        self.start = self.mask.int().argmax(dim=1)  # first real token (left padding)
        self.length = self.mask.sum(dim=1)

    def select(self, positions: Optional[tuple], *, entries: bool = False):
        """(rows, cols, tok): the rows and in-call columns to change and their token positions;
        with ``entries``, also the index into ``positions`` of each (None for all positions)."""
        dev = self.mask.device
        if positions is None:
            m = self.mask[:, self.offset:self.offset + self.seq]
            rows, cols = m.nonzero(as_tuple=True)
            out = rows, cols, cols + self.offset - self.start[rows]
            return out + (None,) if entries else out
        p = torch.tensor(positions, device=dev)[None, :]
        tok = torch.where(p >= 0, p, self.length[:, None] + p)  # (b, n)
        idx = self.start[:, None] + tok - self.offset
        ok = (tok >= 0) & (tok < self.length[:, None]) & (idx >= 0) & (idx < self.seq)
        rows, j = ok.nonzero(as_tuple=True)
        out = rows, idx[rows, j], tok[rows, j]
        return out + (j,) if entries else out


def _set_fn(value: Optional[torch.Tensor], unit: Optional[slice], positions) -> Callable:
    def fn(x, where: _Where):
        rows, cols, _ = where.select(positions)
        sl = slice(None) if unit is None else unit
        if value is None:
            x[rows, cols, sl] = 0
        else:
            x[rows, cols, sl] = value.to(device=x.device, dtype=x.dtype)
        return x
    return fn


def _add_fn(vec: torch.Tensor, unit: Optional[slice], positions) -> Callable:
    def fn(x, where: _Where):
        rows, cols, _ = where.select(positions)
        sl = slice(None) if unit is None else unit
        x[rows, cols, sl] = x[rows, cols, sl] + vec.to(device=x.device, dtype=x.dtype)
        return x
    return fn


def _patch_fn(src: torch.Tensor, unit: Optional[slice], positions) -> Callable:
    n_src = src.shape[0]
    # entry j of ``positions`` reads the source's position src_pos[j] (negative: from the source's end)
    src_pos = None if positions is None else [p if p >= 0 else n_src + p for p in positions]

    def fn(x, where: _Where):
        if positions is None and where.offset == 0 and bool((where.length != n_src).any()):
            raise InterventionError(
                f"the patch source has {n_src} tokens but the running text has "
                f"{sorted(set(where.length.tolist()))}: patch prompts of the same token count, or pass positions=")
        rows, cols, tok, j = where.select(positions, entries=True)
        src_idx = tok if j is None else torch.tensor(src_pos, device=tok.device, dtype=torch.long)[j]
        ok = (src_idx >= 0) & (src_idx < n_src)
        rows, cols, src_idx = rows[ok], cols[ok], src_idx[ok]
        sl = slice(None) if unit is None else unit
        x[rows, cols, sl] = src.to(device=x.device, dtype=x.dtype)[src_idx][:, sl]
        return x
    return fn


# ---------------------------------------------------------------------------------- the engine


@dataclass
class Edit:
    """One low-level change: ``fn(x, where) -> x`` applied to ``site`` at ``layer``.

    ``x`` is the activation as (b, seq, width) (``z``: the per-head values flattened to
    n_heads * d_head), a fresh copy the function may change in place; ``where`` locates the
    positions (see ``_Where.select``). :func:`apply_edits` installs a list of edits.
    """

    site: str
    layer: int
    fn: Callable = field(repr=False)


class _State:
    """Per forward call: the attention mask and the KV-cache offset, read from the model's inputs."""

    def __init__(self):
        self.mask = None
        self.offset = 0


def _cache_offset(kwargs) -> int:
    cp = kwargs.get("cache_position")
    if torch.is_tensor(cp) and cp.numel():
        return int(cp.reshape(-1)[0])
    pkv = kwargs.get("past_key_values")
    if pkv is None:
        pkv = kwargs.get("cache")  # transformers 5 generate() passes the cache under this name
    if pkv is not None:
        try:
            return int(pkv.get_seq_length())
        except (AttributeError, TypeError):
            try:
                return int(pkv[0][0].shape[-2])
            except (IndexError, TypeError, AttributeError):
                return 0
    return 0


def _hidden_of(args, kwargs):
    if args:
        return args[0], "arg"
    for k in ("hidden_states", "input", "x", "hidden_state"):
        if torch.is_tensor(kwargs.get(k)):
            return kwargs[k], k
    raise InterventionError("cannot find the hidden states among the module's inputs")


@contextlib.contextmanager
def apply_edits(adapter: Adapter, edits: Sequence[Edit]):
    """Install ``edits`` as forward hooks for the duration of the block; always removed on exit."""
    state = _State()
    handles = []
    by_place: dict = {}
    for e in edits:
        by_place.setdefault((e.site, e.layer), []).append(e.fn)

    def model_pre(mod, args, kwargs):
        m = kwargs.get("attention_mask")
        state.mask = m if torch.is_tensor(m) and m.dim() == 2 else None
        state.offset = _cache_offset(kwargs)

    def run(fns, x):
        b, seq = x.shape[0], x.shape[1]
        where = _Where(state.mask, state.offset, b, seq, x.device)
        y = x.clone()
        for f in fns:
            y = f(y, where)
        return y

    def on_output(fns):
        def hook(mod, args, out):
            if isinstance(out, tuple):
                return (run(fns, out[0]),) + tuple(out[1:])
            if torch.is_tensor(out):
                return run(fns, out)
            if hasattr(out, "last_hidden_state"):  # pragma: no cover - unusual block outputs
                out.last_hidden_state = run(fns, out.last_hidden_state)
                return out
            raise InterventionError(f"cannot edit the output of {type(mod).__name__}: {type(out).__name__}")
        return hook

    def on_input(fns):
        def hook(mod, args, kwargs):
            x, where_ = _hidden_of(args, kwargs)
            y = run(fns, x)
            if where_ == "arg":
                return (y,) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs[where_] = y
            return args, kwargs
        return hook

    try:
        handles.append(adapter.model.register_forward_pre_hook(model_pre, with_kwargs=True))
        for (site, layer), fns in by_place.items():
            if site == "resid":
                if layer == 0:
                    handles.append(adapter.blocks[0].register_forward_pre_hook(on_input(fns), with_kwargs=True))
                else:
                    handles.append(adapter.blocks[layer - 1].register_forward_hook(on_output(fns)))
            elif site in ("attn_out", "mlp_out"):
                handles.append(adapter.part(layer, site).register_forward_hook(on_output(fns)))
            elif site == "mlp":
                handles.append(adapter.part(layer, "mlp_out").register_forward_pre_hook(on_input(fns), with_kwargs=True))
            elif site == "z":
                handles.append(adapter.part(layer, "attn_out").register_forward_pre_hook(on_input(fns), with_kwargs=True))
            else:  # pragma: no cover - guarded by _resolve_target
                raise InterventionError(f"site {site!r} cannot be written")
        yield
    finally:
        for h in handles:
            h.remove()


def flatten(items) -> list:
    """Intervention objects from arguments: objects, lists of them, or an object with ``.active``
    (the :class:`~mri_widgets.Interventions` widget); disabled ones are dropped."""
    out = []
    for it in items:
        if it is None:
            continue
        if isinstance(it, Intervention):
            if it.enabled:
                out.append(it)
        elif hasattr(it, "active") and not isinstance(it, (list, tuple)):
            out.extend(flatten(it.active))
        elif isinstance(it, (list, tuple)):
            out.extend(flatten(it))
        else:
            raise InterventionError(f"not an intervention: {it!r}; pass mw.Ablate(...), mw.Patch(...), "
                                    "mw.Steer(...) or a list of them")
    return out


@contextlib.contextmanager
def intervene(lm, *interventions, ablate=None, mode: str = "zero", corpus=None):
    """See :meth:`mri_widgets.LoadedModel.intervene`."""
    items = flatten(interventions)
    if ablate is not None:
        targets = [ablate] if _is_single_target(ablate) else list(ablate)
        if not targets:
            raise InterventionError("ablate= is empty: pass a target such as ('head', 3, 0) or a list of them")
        items += [Ablate(t, mode=mode, corpus=corpus) for t in targets]
    edits = []
    for it in items:  # resolved before any hook is installed: sources and means come from unmodified runs
        edits.extend(it.edits(lm))
    with apply_edits(lm.adapter, edits):
        yield items


def _is_single_target(x) -> bool:
    return isinstance(x, str) or (isinstance(x, tuple) and len(x) == 3 and isinstance(x[0], str))


# ---------------------------------------------------------------------------------- means


def texts_fingerprint(texts) -> str:
    """A short hash of a list of texts (for caching corpus statistics)."""
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def corpus_mean(lm, texts, site: str, layers: list, *, progress: Optional[bool] = None) -> torch.Tensor:
    """Mean activation of ``site`` at ``layers`` over every real token of ``texts``: (L, width),
    float32 on the CPU, accumulated batch by batch in float64 (bounded memory)."""
    total: dict = {"sum": None, "n": 0}

    def reducer(batch):
        a = batch.acts[site].double()
        m = batch.mask
        if site == "z":  # (b, L, H, seq, dh) -> (b, L, seq, H * dh)
            a = a.permute(0, 1, 3, 2, 4).reshape(a.shape[0], a.shape[1], a.shape[3], -1)
        s = (a * m[:, None, :, None]).sum(dim=(0, 2)).cpu()
        total["sum"] = s if total["sum"] is None else total["sum"] + s
        total["n"] += int(m.sum())

    lm.capture(texts, sites=[site], layers=list(layers), reducer=reducer, progress=progress)
    return (total["sum"] / max(total["n"], 1)).float()

