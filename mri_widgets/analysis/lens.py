"""The logit lens: what each layer's residual stream would predict if the model stopped there.

Every residual state (the embeddings, then the output of each block) goes through the model's
final norm and its unembedding, then a softmax over the vocabulary. The last layer's distribution
is the model's own output: the captured last state is taken *before* the final norm, so the norm
is applied exactly once (the LLaVA study this comes from normalised its last layer twice, because
Hugging Face's last ``hidden_states`` entry is already normalised).

Layer index convention (also used by :class:`~mri_widgets.LensTable` for ``selection.layer``):
``0`` is the embeddings and ``l`` (1..n_layers) is the residual stream after block ``l``.

Memory stays bounded: layer x position rows go through the unembedding in chunks and only
top-k, entropy and the target's probability and rank are kept, so the (layers, positions,
vocabulary) tensor never exists at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch

from .._checks import check_bool, check_index, check_int

__all__ = ["logit_lens", "LensResult", "LensError", "DEFAULT_CHUNK_BYTES", "commitment_layers"]

#: default memory budget of one unembedding chunk (the readout's two float32 (rows, vocab) buffers)
DEFAULT_CHUNK_BYTES = 128 * 2**20


class LensError(ValueError):
    """Bad input to the logit lens (prompt, k, target, image)."""


@dataclass
class LensResult:
    """What :func:`logit_lens` computes for one prompt.

    Layer axis: index 0 is the embeddings, index ``l`` the residual stream after block ``l``
    (``n_layers + 1`` layers in all; names in ``layer_names``). Position axis: the prompt's tokens,
    then the generated ones (``logit_lens(..., generate=n)``).

    Attributes
    ----------
    prompt : str
    tokens : list of str
        Token strings of the input (image tokens included in image mode).
    input_ids : (positions,) int64 array
    layer_names : list of str
        ``"emb"``, then ``"1"`` .. ``"n_layers"``.
    top_ids : (layers, positions, k) int64 array
        The k most probable next tokens at each layer and position, most probable first.
    top_tokens : (layers, positions, k) object array of str
    top_probs : (layers, positions, k) float32 array, descending along the last axis.
    entropy : (layers, positions) float32 array, in nats.
    target : str or None
        The token the caller named as target (``None``: the model's own prediction, or the ids
        given per position with ``logit_lens(..., target_ids=...)``).
    target_ids : (positions,) int64 array
        The token whose probability and rank are tracked at each position: by default the
        model's own final prediction (the last layer's top-1), or the token the caller named, or
        the ids the caller gave per position.
    target_tokens : list of str
    target_probs : (layers, positions) float32 array
    target_ranks : (layers, positions) int64 array; 0 means the target is the top-1 token
        (number of tokens strictly more probable than the target).
    best_layer : (positions,) int64 array
        The most confident layer (highest top-1 probability) among the block outputs 1..n_layers.
    norm : bool
        Whether the final norm was applied before the unembedding.
    model_name : str
    vocab_size : int
    image_positions : (n_image_tokens,) int64 array (empty without an image)
    patch_grid : (grid_h, grid_w) or None
        Image tokens in row-major patch order: image token ``i`` is patch
        ``(i // grid_w, i % grid_w)``.
    image : (H, W, 3) uint8 array or None
        The image as the model sees it (resized and centre-cropped like CLIP's processor).
    n_prompt : int
        Number of prompt tokens: positions ``n_prompt..`` are generated (default: all positions
        are prompt).
    generated : (positions,) bool array
        True at the generated tokens.
    commitment_layer : (positions,) int64 array
        For a generated token at position ``p``: the first lens layer (0 = embeddings) from which
        the top-1 prediction at position ``p - 1`` is that token at every later layer, i.e. the
        layer where the model commits to what it finally chose. ``-1`` where the chosen token is
        not the last layer's top-1 (possible when sampling) and at every prompt token.
    continuation : str
        The generated tokens decoded as text (``""`` without generation).
    seed : int or None
        The seed the sampled tokens were drawn with (``None`` for greedy or no generation).
    """

    prompt: str
    tokens: list
    input_ids: np.ndarray
    layer_names: list
    top_ids: np.ndarray
    top_tokens: np.ndarray
    top_probs: np.ndarray
    entropy: np.ndarray
    target_ids: np.ndarray
    target_tokens: list
    target_probs: np.ndarray
    target_ranks: np.ndarray
    target: Optional[str] = None
    norm: bool = True
    model_name: str = ""
    vocab_size: int = 0
    image_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    patch_grid: Optional[tuple] = None
    image: Optional[np.ndarray] = None
    n_prompt: Optional[int] = None
    generated: Optional[np.ndarray] = None
    commitment_layer: Optional[np.ndarray] = None
    continuation: str = ""
    seed: Optional[int] = None

    def __post_init__(self):
        S = int(np.shape(self.top_ids)[1])
        if self.n_prompt is None:
            self.n_prompt = S
        self.n_prompt = int(self.n_prompt)
        if not 0 <= self.n_prompt <= S:
            raise LensError(f"n_prompt must be in 0..{S} (the number of positions), got {self.n_prompt}")
        if self.generated is None:
            self.generated = np.arange(S) >= self.n_prompt
        self.generated = np.asarray(self.generated, dtype=bool)
        if self.commitment_layer is None:
            self.commitment_layer = commitment_layers(self.top_ids[:, :, 0], self.input_ids, self.n_prompt)
        self.commitment_layer = np.asarray(self.commitment_layer, dtype=np.int64)

    @property
    def n_generated(self) -> int:
        """Number of generated tokens (positions after the prompt)."""
        return self.n_positions - self.n_prompt

    # ---- shapes ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of lens layers (blocks + 1 for the embeddings)."""
        return int(self.top_ids.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[2])

    @property
    def best_layer(self) -> np.ndarray:
        """(positions,) the most confident layer: the highest top-1 probability at each position.

        Only block outputs (layers 1..n_layers) compete: the embeddings (layer 0) are left out,
        because with tied embeddings they predict the input token itself with probability ~1.
        """
        p1 = self.top_probs[:, :, 0]
        if p1.shape[0] == 1:
            return np.zeros(p1.shape[1], np.int64)
        return (1 + np.argmax(p1[1:], axis=0)).astype(np.int64)

    # ---- look-ups -------------------------------------------------------------------------
    def top(self, layer: int, position: int) -> list[tuple[str, float]]:
        """The top-k ``(token, probability)`` pairs of one cell."""
        layer = _check_index(layer, self.n_layers, "layer (0 = embeddings)")
        position = _check_index(position, self.n_positions, "position")
        return [(str(t), float(p)) for t, p in zip(self.top_tokens[layer, position], self.top_probs[layer, position])]

    def patch_mask(self) -> np.ndarray:
        """(grid_h, grid_w) bool: patches whose best layer's top-1 token is blank (``strip() == ""``).

        The best layer of a patch is the block output with the highest top-1 probability at its
        image token (see :attr:`best_layer`). Raises :class:`LensError` for a result without an image.
        """
        if self.patch_grid is None or len(self.image_positions) == 0:
            raise LensError("this lens result has no image; run logit_lens(model, prompt, image=...) on a LLaVA-style model")
        pos = np.asarray(self.image_positions)
        best = self.best_layer[pos]
        blank = np.array([str(self.top_tokens[l, p, 0]).strip() == "" for l, p in zip(best, pos)], dtype=bool)
        return blank.reshape(self.patch_grid)

    # ---- bring your own arrays / tidy output ------------------------------------------------
    @classmethod
    def from_arrays(cls, tokens, top_tokens, top_probs, *, entropy=None, target_tokens=None,
                    layer_names=None, prompt: Optional[str] = None, model_name: str = "") -> "LensResult":
        """A result built from arrays another library computed (no model needed).

        Parameters
        ----------
        tokens : sequence of str, length ``positions``: the input tokens.
        top_tokens : (layers, positions, k) array-like of str: the top-k predicted tokens of each
            layer and position, most probable first.
        top_probs : (layers, positions, k) array-like of float in [0, 1], descending along the last axis.
        entropy : (layers, positions) array-like, optional. Default: the entropy of the top-k
            probabilities alone, ``-sum(p log p)`` over the k tokens (a lower bound of the full one).
        target_tokens : sequence of str (length ``positions``), optional: the token tracked at each
            position (default: the last layer's top-1, as :func:`logit_lens` does). Its probability
            and rank at each layer are read from the top-k: probability 0 and rank ``k`` (meaning
            "k or worse") where it is not among them.
        layer_names : sequence of str (length ``layers``), optional (default ``"emb", "1", ...``).
        prompt : str, optional (default: the tokens joined).

        Token ids are numbered by first appearance (they are only used to tell tokens apart).
        Raises :class:`LensError` for mismatched shapes or out-of-range probabilities.
        """
        tokens = [str(t) for t in _as_list(tokens, "tokens")]
        tt = np.asarray(top_tokens, dtype=object)
        tp = np.asarray(top_probs, dtype=np.float64)
        if tt.ndim != 3:
            raise LensError(f"top_tokens must be (layers, positions, k), got shape {tt.shape}")
        if tp.shape != tt.shape:
            raise LensError(f"top_probs has shape {tp.shape} but top_tokens has {tt.shape}: they must match")
        L, S, k = tt.shape
        if L < 1 or S < 1 or k < 1:
            raise LensError(f"top_tokens must have at least one layer, position and token, got shape {tt.shape}")
        if len(tokens) != S:
            raise LensError(f"tokens has {len(tokens)} entries but top_tokens has {S} positions")
        if not np.isfinite(tp).all() or (tp < 0).any() or (tp > 1 + 1e-6).any():
            raise LensError("top_probs must be probabilities in [0, 1] (apply a softmax to logits first)")
        if (np.diff(tp, axis=-1) > 1e-6).any():
            raise LensError("top_probs must be sorted in descending order along the last axis (most probable first)")
        vocab: dict[str, int] = {}

        def ids_of(strs):
            return np.array([vocab.setdefault(str(x), len(vocab)) for x in strs], dtype=np.int64)

        top_ids = ids_of(tt.reshape(-1)).reshape(L, S, k)
        input_ids = ids_of(tokens)
        tt = np.vectorize(str, otypes=[object])(tt)
        if entropy is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = -np.where(tp > 0, tp * np.log(tp), 0.0).sum(-1)
        else:
            ent = np.asarray(entropy, dtype=np.float64)
            if ent.shape != (L, S):
                raise LensError(f"entropy must have shape (layers, positions) = {(L, S)}, got {ent.shape}")
        if target_tokens is None:
            target_ids = top_ids[-1, :, 0].copy()
        else:
            tgt = [str(t) for t in _as_list(target_tokens, "target_tokens")]
            if len(tgt) != S:
                raise LensError(f"target_tokens has {len(tgt)} entries but there are {S} positions")
            target_ids = ids_of(tgt)
        hit = top_ids == target_ids[None, :, None]  # (L, S, k)
        found = hit.any(-1)
        rank = np.where(found, hit.argmax(-1), k).astype(np.int64)
        tprob = np.where(hit, tp, 0.0).sum(-1)
        names_by_id = {i: t for t, i in vocab.items()}
        if layer_names is None:
            layer_names = ["emb"] + [str(i) for i in range(1, L)]
        layer_names = [str(n) for n in _as_list(layer_names, "layer_names")]
        if len(layer_names) != L:
            raise LensError(f"layer_names has {len(layer_names)} entries but there are {L} layers")
        return cls(prompt="".join(tokens) if prompt is None else str(prompt), tokens=tokens, input_ids=input_ids,
                   layer_names=layer_names, top_ids=top_ids, top_tokens=tt, top_probs=tp.astype(np.float32),
                   entropy=ent.astype(np.float32), target_ids=target_ids,
                   target_tokens=[names_by_id[int(i)] for i in target_ids], target_probs=tprob.astype(np.float32),
                   target_ranks=rank, model_name=str(model_name), vocab_size=len(vocab))

    def to_pandas(self):
        """The result in long format: a ``pandas.DataFrame`` with one row per (layer, position, rank).

        Columns: ``layer`` (0 = embeddings), ``layer_name``, ``position``, ``token`` (the input
        token), ``generated`` (bool), ``rank`` (0 = top-1), ``top_token``, ``top_id``, ``top_prob``,
        ``entropy`` (of the cell), ``target_token``, ``target_prob``, ``target_rank`` (of the cell).
        """
        import pandas as pd

        L, S, k = self.top_ids.shape
        li, pi, ri = np.meshgrid(np.arange(L), np.arange(S), np.arange(k), indexing="ij")
        li, pi, ri = li.reshape(-1), pi.reshape(-1), ri.reshape(-1)
        return pd.DataFrame({
            "layer": li, "layer_name": np.asarray(self.layer_names, dtype=object)[li], "position": pi,
            "token": np.asarray(self.tokens, dtype=object)[pi], "generated": np.asarray(self.generated)[pi],
            "rank": ri, "top_token": np.asarray(self.top_tokens, dtype=object).reshape(-1),
            "top_id": np.asarray(self.top_ids).reshape(-1), "top_prob": np.asarray(self.top_probs).reshape(-1),
            "entropy": np.asarray(self.entropy)[li, pi],
            "target_token": np.asarray(self.target_tokens, dtype=object)[pi],
            "target_prob": np.asarray(self.target_probs)[li, pi], "target_rank": np.asarray(self.target_ranks)[li, pi],
        })

    def __repr__(self) -> str:
        img = f", image tokens={len(self.image_positions)} grid={self.patch_grid}" if self.patch_grid else ""
        gen = f", generated={self.n_generated}" if self.n_generated else ""
        return (f"LensResult({self.model_name!r}, positions={self.n_positions}{gen}, layers={self.n_layers}, "
                f"k={self.k}, norm={self.norm}{img})")


def _as_list(x, what: str) -> list:
    if isinstance(x, (str, bytes)):
        raise LensError(f"{what} must be a sequence of strings, not a single {type(x).__name__}")
    try:
        return list(x)
    except TypeError:
        raise LensError(f"{what} must be a sequence, got {type(x).__name__}") from None


def commitment_layers(top1: np.ndarray, input_ids: np.ndarray, n_prompt: int) -> np.ndarray:
    """(positions,) commitment layer of each generated token (see :attr:`LensResult.commitment_layer`).

    ``top1`` is the (layers, positions) top-1 token of every cell, ``input_ids`` the (positions,)
    tokens; positions ``n_prompt..`` are generated. A generated token at ``p`` is predicted at
    ``p - 1``: its commitment layer is the start of the run of layers, ending at the last one,
    whose top-1 at ``p - 1`` is that token; ``-1`` if the last layer's top-1 is another token.
    """
    top1 = np.asarray(top1)
    ids = np.asarray(input_ids).reshape(-1)
    out = np.full(top1.shape[1], -1, np.int64)
    for p in range(max(1, int(n_prompt)), top1.shape[1]):
        hit = top1[:, p - 1] == ids[p]
        if not hit[-1]:
            continue
        miss = np.flatnonzero(~hit)
        out[p] = 0 if len(miss) == 0 else int(miss[-1]) + 1
    return out


def _check_index(i, n: int, what: str) -> int:
    return check_index(i, n, what)


# ---------------------------------------------------------------------------------- states


def _model_view(image, size: tuple[int, int]) -> np.ndarray:
    """The image as CLIP-style processors show it to the model: shortest edge resized, centre crop."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    H, W = size
    w, h = image.size
    scale = max(H / h, W / w)
    nw, nh = max(W, round(w * scale)), max(H, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - W) // 2, (nh - H) // 2
    return np.asarray(image.crop((left, top, left + W, top + H)), dtype=np.uint8)


def _check_image(image):
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise LensError(f"image must be an (H, W, 3) uint8 array or a PIL image, got an array of "
                            f"shape {image.shape} and dtype {image.dtype}")
        return image[:, :, :3]
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        raise LensError("image mode needs pillow: pip install pillow") from None
    if not isinstance(image, Image.Image):
        raise LensError(f"image must be a PIL image or an (H, W, 3) uint8 array, got {type(image).__name__}")
    return image


# ---------------------------------------------------------------------------------- lens


def _lens_rows(lm, flat: torch.Tensor, start: int, stop: int, targets, k: int, norm: bool, chunk: int,
               out: dict, progress) -> None:
    """Lens statistics of rows ``start:stop`` of ``flat`` (row = layer * seq + position) through
    :meth:`~mri_widgets.models.loading.LoadedModel.readout`, written into ``out``.

    ``targets`` holds one tracked token per row (``None``: each row's own top-1).
    """
    r = lm.readout(flat[start:stop], k=k, target=targets, norm=norm, chunk_rows=chunk,
                   max_bytes=DEFAULT_CHUNK_BYTES, progress=progress)
    sl = slice(start, stop)
    out["top_ids"][sl] = r.top_ids
    out["top_probs"][sl] = r.top_probs
    out["entropy"][sl] = r.entropy
    out["target_probs"][sl] = r.target_probs
    out["target_ranks"][sl] = r.target_ranks - 1  # the lens counts from 0
    out["target_ids"][sl] = r.target_ids


def logit_lens(model, prompt: str, k: int = 5, *, norm: bool = True, target: Union[None, str, int] = None,
               image=None, generate: int = 0, sample: bool = False, seed: Optional[int] = None,
               temperature: float = 1.0, target_ids=None, chunk_rows: Optional[int] = None,
               progress: Optional[bool] = None) -> LensResult:
    """Run the logit lens on one prompt (and an image, for a LLaVA-style model), optionally
    over a continuation the model generates.

    One forward pass records the residual stream (embeddings, then each block's output); every
    layer x position state then goes through the final norm and the unembedding in chunks, keeping
    only the statistics below, so memory stays bounded for long prompts.

    Parameters
    ----------
    model : LoadedModel
        A causal LM (or LLaVA-style model) from :func:`mri_widgets.load`.
    prompt : str
    k : int
        How many top tokens to keep per cell.
    norm : bool
        Apply the model's final norm before the unembedding (the usual logit lens; with it the
        last layer is exactly the model's output distribution). ``False`` unembeds raw states.
        The states are taken before the final norm at every layer, the last one included; when
        comparing with transformers' ``output_hidden_states``, note that its last entry already
        has the final norm applied (do not normalise it again).
    target : None, str or int
        The token whose probability and rank are tracked at every position: ``None`` (default)
        tracks the model's own final prediction at each position; a single-token string such as
        ``" Paris"`` or a token id tracks that token everywhere.
    image : PIL image or (H, W, 3) uint8 array, optional
        For a LLaVA-style model: the processor expands the ``<image>`` placeholder (prepended when
        the prompt has none) into one token per patch.
    generate : int
        Number of new tokens to generate after the prompt (default 0: the prompt only). The
        model continues the prompt one token at a time (greedy by default), stopping early after
        an end-of-sequence token (which is kept); the lens then runs over the prompt plus the
        generated tokens, which are marked in :attr:`LensResult.generated` and get a
        :attr:`LensResult.commitment_layer`. Generation and the lens pass both go through the
        model's ordinary forward calls, so forward hooks on its modules (interventions such as
        ``with lm.intervene(...)``) apply to both. Not available with ``image=``.
    sample : bool
        Sample each new token from ``softmax(logits / temperature)`` instead of taking the most
        probable one.
    seed : int, optional
        Seed of the sampling (a local ``torch.Generator``; the global RNG is untouched): the
        same seed gives the same continuation. Default with ``sample=True``: a fresh random
        seed, recorded in :attr:`LensResult.seed`.
    temperature : float
        Sampling temperature (> 0; only with ``sample=True``).
    target_ids : sequence of int, optional
        One tracked token id per position instead of ``target`` (``-1``: that position's own final
        prediction), e.g. another run's :attr:`LensResult.target_ids`, so that two runs (clean
        and under interventions) track the same tokens. With ``generate=`` the number of
        positions is known only after generating: positions past the end of ``target_ids`` track
        their own prediction, and ids past the last position are not used.
    chunk_rows : int, optional
        Layer x position rows unembedded at once (default: as many as fit in
        :data:`DEFAULT_CHUNK_BYTES`).
    progress : bool, optional
        Show a progress bar (default: when there are many chunks).

    Returns
    -------
    LensResult

    Examples
    --------
    >>> lm = mri_widgets.load("demo")
    >>> res = mri_widgets.logit_lens(lm, "The capital of France is", target=" Paris")
    >>> res.target_ranks[:, -1]          # rank of " Paris" after each layer at the last token
    >>> res = mri_widgets.logit_lens(lm, "The capital of France is", generate=5)
    >>> res.continuation, res.commitment_layer[res.generated]
    """
    from ..models.loading import LoadedModel

    if not isinstance(model, LoadedModel):
        raise TypeError(f"model must be a mri_widgets LoadedModel (mri_widgets.load(...)), got {type(model).__name__}")
    lm = model
    if lm.is_encoder or lm.adapter.unembed_module is None:
        raise LensError(f"{lm.name} is an encoder without an unembedding; the logit lens needs a causal LM "
                        "such as mri_widgets.load('demo')")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    k = check_int(k, "k", min=1, max=lm.vocab_size, error=LensError,
                  hint=f" (k is how many top tokens to keep, 1..{lm.vocab_size})")
    norm = check_bool(norm, "norm")
    progress = None if progress is None else check_bool(progress, "progress")
    if chunk_rows is not None:
        chunk_rows = check_int(chunk_rows, "chunk_rows", min=1, error=LensError)
    from .._checks import check_target
    target_id = check_target(lm, target, error=LensError)
    per_position = _check_target_ids(lm, target_ids, target)
    generate, sample, seed, temperature = _check_generation(generate, sample, seed, temperature, image)

    # ---- one forward pass: residual states (n_layers + 1, seq, d_model) ---------------------
    image_positions = np.zeros(0, np.int64)
    grid = None
    view = None
    n_prompt = None
    continuation = ""
    if generate:
        enc = lm.encode(prompt)
        prompt_ids = enc["input_ids"][0]
        n_prompt = int(prompt_ids.shape[0])
        limit = lm.max_positions
        if limit is not None and n_prompt + generate > limit:
            raise LensError(f"the prompt has {n_prompt} tokens and generate={generate} would make "
                            f"{n_prompt + generate}, but {lm.name} accepts {limit} positions; lower generate "
                            f"to at most {max(0, limit - n_prompt)} or shorten the prompt")
        new = lm.generate_tokens(prompt_ids, generate, sample=sample, seed=seed, temperature=temperature)
        full = torch.cat([prompt_ids.cpu(), new]).reshape(1, -1)
        states = lm.capture_inputs({"input_ids": full}, sites=["resid"])["resid"][0]
        input_ids = full[0].numpy().astype(np.int64)
        tokens = lm.token_str(input_ids)
        continuation = lm.tokenizer.decode(new.tolist())
    elif image is None:
        cap = lm.capture([prompt], sites=["resid"], progress=False)
        states = cap["resid"][0]
        input_ids = cap.input_ids[0][cap.mask[0]].cpu().numpy().astype(np.int64)
        tokens = list(cap.tokens[0])
        states = states[:, :len(tokens)]
    else:
        if lm.multimodal is None:
            raise LensError(f"{lm.name} is not a vision-language model; drop image= or load a LLaVA-style model")
        image = _check_image(image)
        enc = lm.encode(prompt, image=image)
        states = lm.capture_inputs(enc, sites=["resid"])["resid"][0]
        input_ids = enc["input_ids"][0].cpu().numpy().astype(np.int64)
        tokens = lm.token_str(input_ids)
        image_positions = lm.image_positions(input_ids).astype(np.int64)
        n_img = len(image_positions)
        side = int(round(math.sqrt(n_img)))
        if n_img == 0 or side * side != n_img:
            raise LensError(f"found {n_img} image tokens, not a square patch grid; image mode supports "
                            "LLaVA-1.5-style models (one token per patch of a square grid)")
        grid = (side, side)
        pv = enc.get("pixel_values")
        size = tuple(pv.shape[-2:]) if pv is not None and pv.dim() == 4 else (side * 14, side * 14)
        view = _model_view(image, size)

    n_lay, seq = states.shape[0], states.shape[1]
    flat = states.reshape(n_lay * seq, -1)
    V = lm.vocab_size

    n_rows = n_lay * seq
    out = {
        "top_ids": np.zeros((n_rows, k), np.int64),
        "top_probs": np.zeros((n_rows, k), np.float32),
        "entropy": np.zeros(n_rows, np.float32),
        "target_probs": np.zeros(n_rows, np.float32),
        "target_ranks": np.zeros(n_rows, np.int64),
        "target_ids": np.zeros(n_rows, np.int64),
    }
    last = (n_lay - 1) * seq
    if per_position is not None:
        tp = np.full(seq, -1, np.int64)
        n = min(seq, len(per_position))
        tp[:n] = per_position[:n]
        if (tp < 0).any():  # the positions that track their own prediction read it first
            _lens_rows(lm, flat, last, n_rows, None, k, norm, chunk_rows, out, progress)
            tp = np.where(tp < 0, out["target_ids"][last:], tp)
        _lens_rows(lm, flat, 0, n_rows, np.tile(tp, n_lay), k, norm, chunk_rows, out, progress)
    elif target_id is None:
        # the model's own prediction first: the last layer tracks its own top-1 ...
        _lens_rows(lm, flat, last, n_rows, None, k, norm, chunk_rows, out, progress)
        # ... and every earlier layer tracks that token
        targets = np.tile(out["target_ids"][last:], n_lay - 1)
        _lens_rows(lm, flat, 0, last, targets, k, norm, chunk_rows, out, progress)
    else:
        _lens_rows(lm, flat, 0, n_rows, target_id, k, norm, chunk_rows, out, progress)

    shape = (n_lay, seq)
    top_ids = out["top_ids"].reshape(n_lay, seq, k)
    uniq, inv = np.unique(top_ids, return_inverse=True)
    strs = np.empty(len(uniq), dtype=object)
    strs[:] = lm.token_str(uniq)
    top_tokens = strs[inv.reshape(top_ids.shape)]
    target_ids = out["target_ids"].reshape(shape)[-1].copy()
    return LensResult(
        prompt=prompt, tokens=tokens, input_ids=input_ids,
        layer_names=["emb"] + [str(i) for i in range(1, n_lay)],
        top_ids=top_ids, top_tokens=top_tokens, top_probs=out["top_probs"].reshape(n_lay, seq, k),
        entropy=out["entropy"].reshape(shape), target_ids=target_ids, target_tokens=lm.token_str(target_ids),
        target_probs=out["target_probs"].reshape(shape), target_ranks=out["target_ranks"].reshape(shape),
        target=None if target_id is None else lm.token_str([target_id])[0],
        norm=bool(norm), model_name=str(lm.name), vocab_size=int(V), image_positions=image_positions,
        patch_grid=grid, image=view, n_prompt=n_prompt, continuation=continuation,
        seed=seed if generate and sample else None,
    )


def _check_target_ids(lm, target_ids, target) -> Optional[np.ndarray]:
    """``target_ids`` of :func:`logit_lens` as a 1-D int64 array (-1 allowed), or None."""
    if target_ids is None:
        return None
    if target is not None:
        raise LensError("pass target= (one token everywhere) or target_ids= (one per position), not both")
    if hasattr(target_ids, "detach"):
        target_ids = target_ids.detach().cpu().numpy()
    if isinstance(target_ids, (str, bytes)) or not hasattr(target_ids, "__len__"):
        raise TypeError(f"target_ids must be a sequence of token ids (one per position), got {target_ids!r}")
    arr = np.asarray(target_ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"target_ids must be a 1-D sequence of integer token ids, got shape {arr.shape} of {arr.dtype}")
    arr = arr.astype(np.int64)
    V = int(lm.vocab_size)
    bad = arr[(arr < -1) | (arr >= V)]
    if bad.size:
        raise LensError(f"target id {int(bad[0])} is outside the vocabulary 0..{V - 1} (-1: the position's own "
                        "prediction)")
    return arr


def _check_generation(generate, sample, seed, temperature, image):
    """Checked ``(generate, sample, seed, temperature)``; a random seed when sampling without one."""
    generate = check_int(generate, "generate", min=0, error=LensError,
                         hint=" (generate is the number of new tokens; 0 reads the prompt only)")
    sample = check_bool(sample, "sample")
    if seed is not None:
        seed = check_int(seed, "seed", min=0, error=LensError)
        if not sample:
            raise LensError("seed only applies to sampling: pass sample=True (greedy generation needs no seed)")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"temperature must be a number, got {temperature!r} ({type(temperature).__name__})")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise LensError(f"temperature must be a positive number, got {temperature}")
    if temperature != 1.0 and not sample:
        raise LensError("temperature only applies to sampling: pass sample=True, or drop temperature= for greedy")
    if generate and image is not None:
        raise LensError("generate= is not supported with image=: run the lens over the image and prompt "
                        "without generation, or generate over a text prompt")
    if sample and not generate:
        raise LensError("sample=True needs generate=n (the number of new tokens to sample)")
    if sample and seed is None:
        seed = int(torch.Generator().seed() % 2**31)
    return generate, sample, seed, temperature
