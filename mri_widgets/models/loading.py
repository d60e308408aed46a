"""Loading models: :func:`load` and the :class:`LoadedModel` every analysis takes."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .adapters import Adapter, AdapterError, exec_device_dtype, module_tensor, resolve_adapter
from .capture import (Capture, CaptureError, capture_inputs, check_capture_args, check_texts, max_positions,
                      run_capture)

__all__ = ["LoadedModel", "load", "as_loaded_model", "ModelNotAvailable", "Readout", "READOUT_BYTES"]

#: default memory budget of one :meth:`LoadedModel.readout` chunk (its (rows, vocab) buffers)
READOUT_BYTES = 128 * 2**20


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict:
    """GPT-2's byte-level alphabet: the printable character standing for each byte, inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _token_bytes(tokenizer, token_id: int) -> Optional[bytes]:
    """The raw bytes a token stands for, when the tokenizer works on bytes: byte-level BPE
    (GPT-2, Llama 3, SmolLM: each byte written as one printable character) or SentencePiece's
    byte fallback (``<0xF0>``). ``None`` when the token is not made of bytes."""
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:  # any tokenizer failure: fall back to decode()
        return None
    if not isinstance(piece, str) or not piece:
        return None
    m = _BYTE_TOKEN.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    table = _byte_decoder()
    if all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return None


class ModelNotAvailable(OSError):
    """The model cannot be found locally and cannot be downloaded here."""


def _as_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        d = getattr(torch, dtype.replace("torch.", ""), None)
        if isinstance(d, torch.dtype):
            return d
    raise TypeError(f"dtype must be a torch dtype or a name such as 'float16', got {dtype!r}")


@dataclass
class Readout:
    """What :meth:`LoadedModel.readout` reads from vectors through the unembedding.

    ``S`` below is the leading shape of the vectors (``vectors.shape[:-1]``). Probabilities are
    the softmax over the whole vocabulary of the logits ``unembed(norm(x))``; they are computed in
    float32 from the logits the LM head returns (in the model's dtype).

    Attributes
    ----------
    top_ids : (*S, k) int64 array
        The k highest-logit tokens, highest first (the order among exactly equal logits is
        unspecified).
    top_probs : (*S, k) float32 array, descending.
    top_logits : (*S, k) float32 array.
    entropy : (*S,) float32 array
        Entropy of the distribution, in nats.
    logsumexp : (*S,) float32 array
        ``log(sum(exp(logits)))``: ``log p = logit - logsumexp``.
    target_ids : (*S,) int64 array
        The tracked token of each row: the one named by ``target``, or the row's own top-1.
    target_probs, target_logits : (*S,) float32 arrays.
    target_ranks : (*S,) int64 array
        ``1 + the number of tokens whose logit is strictly greater`` than the target's: 1 means
        the target is (one of) the most probable tokens, and tied tokens share the best rank.
        (:class:`~mri_widgets.analysis.lens.LensResult` stores ``target_ranks`` counted from 0,
        i.e. this minus 1.)
    """

    top_ids: np.ndarray
    top_probs: np.ndarray
    top_logits: np.ndarray
    entropy: np.ndarray
    logsumexp: np.ndarray
    target_ids: np.ndarray
    target_probs: np.ndarray
    target_logits: np.ndarray
    target_ranks: np.ndarray
    token_str: Optional[Callable] = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[-1])

    @property
    def top_tokens(self) -> np.ndarray:
        """(*S, k) object array of the top tokens as strings (each distinct id decoded once)."""
        return self._decode(self.top_ids, "top_ids")

    @property
    def target_tokens(self) -> np.ndarray:
        """(*S,) object array of the target tokens as strings."""
        return self._decode(self.target_ids, "target_ids")

    def _decode(self, ids: np.ndarray, name: str) -> np.ndarray:
        """``ids`` as an object array of token strings of the same shape, each distinct id decoded once."""
        if self.token_str is None:
            raise ValueError(f"this Readout was built without a tokenizer; decode {name} yourself")
        uniq, inv = np.unique(ids, return_inverse=True)
        strs = np.empty(len(uniq), dtype=object)
        strs[:] = self.token_str(uniq)
        return strs[inv.reshape(-1)].reshape(ids.shape)

    def __repr__(self) -> str:
        return f"Readout(rows={tuple(self.entropy.shape)}, k={self.k})"


class LoadedModel:
    """A transformers model, its tokenizer and its :class:`~mri_widgets.models.adapters.Adapter`.

    Attributes
    ----------
    model, tokenizer : the transformers objects.
    arch : adapter family name (``"gpt2"``, ``"gpt_neox"``, ``"llama"``, ``"gptj"``,
        ``"gpt_neo"``, ``"bert"``, ``"distilbert"``); LLaVA-style models report their language
        model's family and set ``multimodal = "llava"``.
    n_layers, n_heads, n_kv_heads, d_head, d_model, d_mlp, vocab_size : sizes.
    """

    def __init__(self, model, tokenizer, *, module_paths: Optional[dict] = None, name: Optional[str] = None,
                 processor=None):
        if tokenizer is None:
            raise TypeError("a tokenizer is required: pass load(model, tokenizer) or a model id/path")
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.adapter: Adapter = resolve_adapter(model, module_paths)
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        self._token_cache: dict[int, str] = {}
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token

    # ---- sizes --------------------------------------------------------------------------------
    arch = property(lambda self: self.adapter.family)
    n_layers = property(lambda self: self.adapter.n_layers)
    n_heads = property(lambda self: self.adapter.n_heads)
    d_model = property(lambda self: self.adapter.d_model)
    d_mlp = property(lambda self: self.adapter.d_mlp)
    d_head = property(lambda self: self.adapter.d_head)
    n_kv_heads = property(lambda self: self.adapter.n_kv_heads)
    vocab_size = property(lambda self: self.adapter.vocab_size)
    gated = property(lambda self: self.adapter.gated)
    is_encoder = property(lambda self: self.adapter.encoder)
    multimodal = property(lambda self: self.adapter.multimodal)
    max_positions = property(lambda self: max_positions(self.adapter))

    @property
    def device(self) -> torch.device:
        """Where the model reads its inputs: the embedding's device (accelerate's execution device
        when the embedding is offloaded)."""
        return exec_device_dtype(self.adapter.embed)[0]

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, arch={self.arch!r}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
                f"d_model={self.d_model}, d_mlp={self.d_mlp}, vocab_size={self.vocab_size}, device={self.device})")

    # ---- tokens -------------------------------------------------------------------------------
    def token_str(self, ids) -> list[str]:
        """Readable strings of token ids (each id decoded alone, cached).

        A token that holds only part of a multi-byte character (byte-level BPE splits an emoji
        into several tokens) decodes alone to ``'\\ufffd'``; such a token is shown by the bytes it
        stands for instead: its complete UTF-8 characters as text and the incomplete rest as
        escapes, e.g. ``'\\xf0\\x9f'`` and ``'\\xa4\\x96'`` for the two halves of 🤖.
        """
        out = []
        cache = self._token_cache
        for i in np.asarray(ids).reshape(-1).tolist():
            s = cache.get(i)
            if s is None:
                s = self.tokenizer.decode([i])
                if "\ufffd" in s:
                    raw = _token_bytes(self.tokenizer, i)
                    if raw is not None:
                        s = raw.decode("utf-8", errors="backslashreplace")
                cache[i] = s
            out.append(s)
        return out

    def token_id(self, token: str) -> int:
        """The id of a single token given as text (``" Paris"``); error if it is several tokens."""
        if not isinstance(token, str) or not token:
            raise TypeError(f"target token must be a non-empty string, got {token!r}")
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = self.token_str(ids)
            raise ValueError(f"{token!r} is {len(ids)} tokens {pieces}, not one; pass a single token such as {pieces[0]!r}")
        return int(ids[0])

    def encode(self, prompt: str, *, image=None, max_length: Optional[int] = None) -> dict:
        """Model inputs for one prompt (and an image, for a LLaVA-style model).

        Raises a clear error for prompts longer than the model accepts. With ``image`` (a PIL
        image or an (H, W, 3) uint8 array), the processor expands the image placeholder into the
        image tokens (a placeholder is prepended when the prompt has none); ``pixel_values`` is
        then part of the returned dict and :meth:`image_positions` finds the image tokens.
        """
        check_texts([prompt], what="prompt")
        if image is not None:
            if self.processor is None or self.multimodal is None:
                raise ValueError(f"{self.name} is not a vision-language model with a processor; drop image=")
            if isinstance(image, np.ndarray):
                from PIL import Image
                image = Image.fromarray(image)
            placeholder = getattr(self.processor, "image_token", "<image>")
            text = prompt if placeholder in prompt else f"{placeholder}\n{prompt}"
            enc = self.processor(images=image, text=text, return_tensors="pt")
        else:
            enc = self.tokenizer(prompt, return_tensors="pt")
        n = enc["input_ids"].shape[1]
        limit = max_length or self.max_positions
        if limit is not None and n > limit:
            raise CaptureError(f"the prompt has {n} tokens but the model accepts {limit}; shorten it")
        keep = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "image_sizes")
        return {k: v.to(self.device) for k, v in enc.items() if k in keep}

    def image_positions(self, input_ids) -> np.ndarray:
        """Indices of the image tokens in a 1-D sequence of input ids (empty for text models)."""
        tid = self.adapter.image_token_id
        ids = np.asarray(torch.as_tensor(input_ids).cpu()).reshape(-1)
        return np.flatnonzero(ids == tid) if tid is not None else np.zeros(0, dtype=np.int64)

    # ---- generation ---------------------------------------------------------------------------
    def eos_token_ids(self) -> list[int]:
        """Token ids that end a generation: the tokenizer's EOS and the generation config's."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
            if e is not None:
                ids.add(int(e))
        return sorted(ids)

    def generate_tokens(self, input_ids, max_new_tokens: int, *, sample: bool = False, seed: Optional[int] = None,
                        temperature: float = 1.0, stop_at_eos: bool = True) -> torch.Tensor:
        """New token ids continuing ``input_ids`` (one sequence), one forward call per token.

        A hand-written decoding loop with the key/value cache: every step calls ``self.model``'s
        ordinary forward, so forward hooks installed on its modules (interventions) apply to
        every generated token. Nothing is printed (transformers' ``generate`` would warn about
        generation-config flags).

        Parameters
        ----------
        input_ids : (seq,) or (1, seq) int tensor, array or list
        max_new_tokens : int
            Tokens to generate at most.
        sample : bool
            ``False``: greedy (the most probable token, ties to the lowest id, like
            ``model.generate(do_sample=False)``). ``True``: sample from
            ``softmax(logits / temperature)`` with a local ``torch.Generator`` seeded with
            ``seed`` (the global RNG is neither used nor changed); the draw is made on the CPU, so
            a seed gives the same tokens on any device.
        seed : int, optional
            Seed of the sampling generator (required with ``sample=True``).
        temperature : float
            Divides the logits before sampling (> 0).
        stop_at_eos : bool
            Stop after the first end-of-sequence token (:meth:`eos_token_ids`), which is kept.

        Returns
        -------
        (n_new,) int64 CPU tensor, ``n_new <= max_new_tokens``.
        """
        from .._checks import check_bool, check_int

        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", min=0)
        sample, stop_at_eos = check_bool(sample, "sample"), check_bool(stop_at_eos, "stop_at_eos")
        if sample:
            if seed is None:
                raise ValueError("sample=True needs seed= (an int), so that the draw can be repeated")
            seed = check_int(seed, "seed", min=0)
            temperature = float(temperature)
            if not (np.isfinite(temperature) and temperature > 0):
                raise ValueError(f"temperature must be a positive number, got {temperature}")
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1).to(self.device)
        if ids.shape[1] == 0:
            raise ValueError("input_ids is empty: generation needs at least one token to continue")
        eos = set(self.eos_token_ids()) if stop_at_eos else set()
        gen = torch.Generator(device="cpu").manual_seed(seed) if sample else None
        model = self.model
        params = _forward_params(model)
        kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers >= 5.2x names the key/value cache ``cache`` (``past_key_values`` is deprecated)
        cache_kw = "cache" if "cache" in params else "past_key_values"
        out_ids: list[int] = []
        past = None
        step_ids = ids
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(int(max_new_tokens)):
                out = model(input_ids=step_ids, attention_mask=mask, use_cache=True, **{cache_kw: past}, **kw)
                logits = out.logits[0, -1].float()
                past = getattr(out, "cache", None)
                if past is None:
                    past = getattr(out, "past_key_values", None)
                if sample:
                    probs = torch.softmax(logits / float(temperature), -1).cpu()
                    nxt = int(torch.multinomial(probs, 1, generator=gen)[0])
                else:
                    nxt = int(torch.argmax(logits))
                out_ids.append(nxt)
                if nxt in eos:
                    break
                step_ids = torch.tensor([[nxt]], dtype=torch.long, device=ids.device)
                mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        return torch.tensor(out_ids, dtype=torch.long)

    # ---- capture ------------------------------------------------------------------------------
    def capture(self, texts, sites=("resid",), *, batch_size: Optional[int] = None, max_length: Optional[int] = None,
                reducer=None, layers=None, progress: Optional[bool] = None, extra_inputs: Optional[dict] = None,
                batch_tokens: Optional[int] = None) -> Optional[Capture]:
        """Run the model over ``texts`` and record activations at ``sites``.

        Parameters
        ----------
        texts : str or list of str
        sites : names of :data:`~mri_widgets.models.capture.SITES` (shape and place in the block
            of each, and its TransformerLens name, in the README): ``"resid"`` (n_layers + 1
            states: embeddings, then each block's output, the last one before the final norm:
            transformers' ``output_hidden_states`` applies the final norm to its last entry for GPT-2,
            Llama, NeoX ... models, so ``hidden_states[-1]`` equals
            ``self.apply_final_norm(cap["resid"][:, -1])``, not ``cap["resid"][:, -1]``; the other
            layers agree),
            ``"attn_in"``, ``"q"``, ``"k"``, ``"v"``, ``"z"`` (per head), ``"attn"`` (attention
            probabilities; eager attention is switched on for the call only), ``"head_out"``
            (each head's write into the residual stream, without the output bias),
            ``"attn_out"``, ``"resid_mid"``, ``"mlp_in"``, ``"mlp"`` (input of each MLP output
            projection), ``"mlp_gate"``, ``"mlp_up"``, ``"mlp_act"`` (gated MLPs), ``"mlp_out"``.
        batch_size : texts per forward pass, consecutive texts in the given order. Default None:
            batches by a token budget. The texts are tokenised once, sorted by length and grouped
            so that little padding is computed and each batch's captured activations stay within
            :data:`~mri_widgets.models.capture.BATCH_BYTES` (512 MiB as float32) and
            :data:`~mri_widgets.models.capture.BATCH_TOKENS` (4096) tokens; memory stays bounded
            for a corpus of any size. Results are in the order of ``texts`` either way.
        max_length : truncate texts to this many tokens (default: error for texts longer than the
            model accepts).
        reducer : callable receiving a :class:`~mri_widgets.models.capture.CaptureBatch` per batch;
            then nothing is kept and ``None`` is returned, so a corpus larger than memory never
            materialises. ``batch.indices`` gives each row's index in ``texts`` (rows of a batch
            formed by the budget are not consecutive texts). ``batch.acts`` are valid during the
            call only: their memory is reused by the next batch, so copy what you keep.
        layers : restrict to these layer indices (``resid`` counts the embeddings as layer 0); a
            dict gives each site its own (``{"resid": [3, 4], "z": [3]}``).
        progress : show a tqdm progress bar (default: when there is more than one batch).
        extra_inputs : more keyword arguments for the model's forward pass.
        batch_tokens : with ``batch_size=None``, the most tokens (padding included) per batch, in
            place of the default memory budget (e.g. larger on a big GPU).

        Returns
        -------
        Capture or None
        """
        batch_size, max_length, progress = check_capture_args(batch_size, max_length, progress)
        return run_capture(self.adapter, self.tokenizer, texts, sites, batch_size=batch_size,
                           max_length=max_length, reducer=reducer, layers=layers, progress=progress,
                           token_str=self.token_str, extra_inputs=extra_inputs, batch_tokens=batch_tokens)

    def capture_inputs(self, inputs: dict, sites=("resid",), *, layers=None) -> Capture:
        """Capture one already-encoded batch, e.g. ``self.encode(prompt, image=img)`` for a
        vision-language model (the processor expands the image placeholder into image tokens).
        Same sites and conventions as :meth:`capture`."""
        return capture_inputs(self.adapter, inputs, sites, layers=layers, token_str=self.token_str)

    # ---- interventions ------------------------------------------------------------------------
    def intervene(self, *interventions, ablate=None, mode: str = "zero", corpus=None):
        """Context manager: every forward pass inside the ``with`` block runs modified.

        ``capture``, :func:`~mri_widgets.logit_lens`, :func:`~mri_widgets.flow_graph`,
        ``NeuronScan.run``, :func:`~mri_widgets.head_distances`, ``self.model(...)`` and
        ``self.model.generate(...)`` all see the interventions. The hooks are removed on exit,
        also after an exception or a keyboard interrupt.

        Parameters
        ----------
        *interventions : :class:`~mri_widgets.Ablate`, :class:`~mri_widgets.Patch`,
            :class:`~mri_widgets.Steer` objects, lists of them, or an
            :class:`~mri_widgets.Interventions` widget (its enabled interventions).
        ablate : shorthand for :class:`~mri_widgets.Ablate`: a target such as ``("head", 21, 7)``
            or ``("neuron", 5, 100)``, or a list of them, ablated with ``mode`` (``"zero"`` or
            ``"mean"``; the mean over ``corpus``).

        Sources of patches, corpus means and steering vectors are computed when the block starts,
        before any hook is installed. Yields the list of intervention objects in effect.

        Examples
        --------
        >>> with lm.intervene(ablate=("head", 21, 7)):
        ...     res = mw.logit_lens(lm, "The Eiffel Tower is in the city of")
        >>> with lm.intervene(mw.Steer("resid", vec, alpha=4, layers=[10])):
        ...     out = lm.model.generate(**lm.encode("I think that"), max_new_tokens=10)
        """
        from .interventions import intervene
        return intervene(self, *interventions, ablate=ablate, mode=mode, corpus=corpus)

    def mean_activations(self, texts, site: str, *, layers=None, progress: Optional[bool] = None) -> torch.Tensor:
        """Mean activation of a writable ``site`` over every token of ``texts``: (len(layers), width).

        Computed with a streaming reducer (bounded memory for any corpus) and cached on this
        model by the texts' hash, site and layers, so mean ablation over the same corpus costs
        one pass. ``z`` is flattened to ``n_heads * d_head`` (head ``h`` is the slice
        ``h*d_head:(h+1)*d_head``). ``texts``: a list of strings or a :class:`~mri_widgets.Corpus`.
        """
        from .._checks import parse_layers
        from .interventions import WRITABLE_SITES, InterventionError, corpus_mean, texts_fingerprint
        if site not in WRITABLE_SITES:
            raise InterventionError(f"site {site!r} has no mean here; use one of {', '.join(WRITABLE_SITES)}")
        texts = list(getattr(texts, "texts", texts)) if not isinstance(texts, str) else [texts]
        texts = check_texts(texts, what="corpus")
        n = self.n_layers + 1 if site == "resid" else self.n_layers
        sel = parse_layers(layers, n, what="layer", error=InterventionError)
        key = (texts_fingerprint(texts), site, tuple(sel))
        cache = self.__dict__.setdefault("_mean_cache", {})
        if key not in cache:
            cache[key] = corpus_mean(self, texts, site, sel, progress=progress)
        return cache[key].clone()

    # ---- lens helpers -------------------------------------------------------------------------
    def apply_final_norm(self, vectors):
        """Apply the final norm (identity for models without one)."""
        x = torch.as_tensor(vectors)
        norm = self.adapter.final_norm
        if norm is None:
            return x
        dev, dtype = exec_device_dtype(norm)
        return norm(x.to(device=dev, dtype=dtype))

    def unembed(self, vectors, *, norm: bool = True) -> torch.Tensor:
        """Logits of residual vectors: final norm (``norm=True``) then the unembedding.

        ``vectors`` has shape (..., d_model). Applied to the last ``"resid"`` layer this equals the
        model's own logits.
        """
        from .._checks import check_bool
        norm = check_bool(norm, "norm")
        head = self.adapter.unembed_module
        if head is None:
            raise AdapterError(f"{self.name} is an encoder without an unembedding (LM head); the logit lens needs a causal LM")
        x = torch.as_tensor(vectors)
        if x.shape[-1] != self.d_model:
            raise ValueError(f"vectors must end in d_model={self.d_model}, got shape {tuple(x.shape)}")
        with torch.inference_mode():
            if norm:
                x = self.apply_final_norm(x)
            dev, dtype = exec_device_dtype(head)
            return head(x.to(device=dev, dtype=dtype))

    # ---- attention weights, per head (see :class:`~mri_widgets.models.adapters.Adapter`) -----
    def W_Q(self, layer: int) -> torch.Tensor:
        """Query weights of ``layer``, (n_heads, d_model, d_head): head h's query of the attention
        input ``x`` (site ``attn_in``) is ``x @ W_Q[h] + b_Q[h]``, before rotary embeddings."""
        return self.adapter.W_Q(self.adapter.check_layer(layer))

    def W_K(self, layer: int) -> torch.Tensor:
        """Key weights, (n_heads, d_model, d_head), expanded to every query head for grouped-query
        attention; before rotary embeddings."""
        return self.adapter.W_K(self.adapter.check_layer(layer))

    def W_V(self, layer: int) -> torch.Tensor:
        """Value weights, (n_heads, d_model, d_head), expanded to every query head."""
        return self.adapter.W_V(self.adapter.check_layer(layer))

    def W_O(self, layer: int) -> torch.Tensor:
        """Output weights, (n_heads, d_head, d_model): ``sum_h z[h] @ W_O[h] + b_O`` is the
        attention output (sites ``z`` and ``attn_out``)."""
        return self.adapter.W_O(self.adapter.check_layer(layer))

    def b_Q(self, layer: int) -> torch.Tensor:
        """Query bias, (n_heads, d_head); zeros where the model has none."""
        return self.adapter.b_Q(self.adapter.check_layer(layer))

    def b_K(self, layer: int) -> torch.Tensor:
        """Key bias, (n_heads, d_head), expanded like :meth:`W_K`; zeros where none."""
        return self.adapter.b_K(self.adapter.check_layer(layer))

    def b_V(self, layer: int) -> torch.Tensor:
        """Value bias, (n_heads, d_head), expanded like :meth:`W_V`; zeros where none."""
        return self.adapter.b_V(self.adapter.check_layer(layer))

    def b_O(self, layer: int) -> torch.Tensor:
        """Output bias, (d_model,); zeros where none."""
        return self.adapter.b_O(self.adapter.check_layer(layer))

    def readout(self, vectors, *, k: int = 5, target=None, norm: bool = True, bias: bool = True,
                chunk_rows: Optional[int] = None, max_bytes: Optional[int] = None,
                progress: Optional[bool] = None) -> Readout:
        """Read vectors through the (final norm and the) unembedding: top-k, entropy, a target's rank.

        The one projection of the package: :func:`~mri_widgets.logit_lens`,
        :func:`~mri_widgets.flow_graph` and the neuron logit effects all read through it. Rows
        go through in chunks whose (rows, vocab) buffers fit in ``max_bytes``, and only the
        statistics are kept, so memory stays bounded for any number of rows.

        Parameters
        ----------
        vectors : array or tensor of shape (..., d_model)
            Residual-stream vectors (or any vectors in the residual basis).
        k : int
            Top tokens per row, 1..vocab_size.
        target : None, str, int or integer array of shape ``vectors.shape[:-1]``
            The token whose probability and rank are reported: ``None`` is each row's own top-1
            token; a single-token string such as ``" Paris"`` or a token id is the same token
            for every row; an array gives one token id per row.
        norm : bool
            Apply the final norm first (``False`` unembeds the vectors as they are).
        bias : bool
            Add the LM head's bias (if it has one). ``False`` reads a direction's direct effect.
        chunk_rows : int, optional
            Rows per chunk (default: as many as fit in ``max_bytes``).
        max_bytes : int, optional
            Memory budget of one chunk's buffers (default :data:`READOUT_BYTES`, 128 MiB).
        progress : bool, optional
            Show a progress bar (default: when there are more than 16 chunks).

        Returns
        -------
        Readout
            Arrays shaped like the vectors' leading dimensions (see :class:`Readout` for the
            rank convention: 1 = the top token).

        Examples
        --------
        >>> r = lm.readout(lm.capture("The capital of France is")["resid"][0, :, -1], target=" Paris")
        >>> r.target_ranks        # rank of " Paris" after each layer, 1 = top
        """
        from .._checks import check_bool, check_int, check_target

        head = self.adapter.unembed_module
        if head is None:
            raise AdapterError(f"{self.name} is an encoder without an unembedding (LM head); the readout needs a causal LM")
        x = torch.as_tensor(vectors)
        if x.dim() == 0 or x.shape[-1] != self.d_model:
            raise ValueError(f"vectors must have shape (..., d_model={self.d_model}), got {tuple(x.shape)}")
        if not (x.is_floating_point()):
            raise TypeError(f"vectors must be floating point, got {x.dtype}")
        lead = tuple(x.shape[:-1])
        x = x.reshape(-1, self.d_model)
        n = x.shape[0]
        V = _head_rows(head, self.vocab_size)
        k = check_int(k, "k", min=1, max=V, hint=f" (between 1 and the vocabulary size {V})")
        norm = check_bool(norm, "norm")
        bias = check_bool(bias, "bias")
        tgt = check_target(self, target, shape=lead)
        dev, dtype = exec_device_dtype(head)
        per_row = V * (8 + (0 if dtype == torch.float32 else torch.empty(0, dtype=dtype).element_size()))
        if chunk_rows is None:
            budget = READOUT_BYTES if max_bytes is None else check_int(max_bytes, "max_bytes", min=1)
            chunk_rows = max(1, budget // per_row)
        chunk_rows = check_int(chunk_rows, "chunk_rows", min=1)
        if isinstance(tgt, np.ndarray):
            tgt = torch.from_numpy(tgt.reshape(-1))
        elif tgt is not None:
            tgt = torch.full((n,), tgt, dtype=torch.long)

        out = Readout(
            top_ids=np.zeros((n, k), np.int64), top_probs=np.zeros((n, k), np.float32),
            top_logits=np.zeros((n, k), np.float32), entropy=np.zeros(n, np.float32),
            logsumexp=np.zeros(n, np.float32), target_ids=np.zeros(n, np.int64),
            target_probs=np.zeros(n, np.float32), target_logits=np.zeros(n, np.float32),
            target_ranks=np.zeros(n, np.int64), token_str=self.token_str)
        if n:
            self._readout_chunks(x, k, tgt, norm, bias, min(chunk_rows, n), out, progress)
        for name in ("top_ids", "top_probs", "top_logits"):
            setattr(out, name, getattr(out, name).reshape(lead + (k,)))
        for name in ("entropy", "logsumexp", "target_ids", "target_probs", "target_logits", "target_ranks"):
            setattr(out, name, getattr(out, name).reshape(lead))
        return out

    def _readout_chunks(self, x, k, tgt, norm, bias, c, out: Readout, progress) -> None:
        """The readout loop: logits of ``c`` rows at a time in reused buffers, statistics only.

        Per chunk: one matmul into a float32 buffer, top-k (:func:`_topk_rows`), the rank count (a
        comparison written into the second buffer, summed; only where the top-k cannot tell), then
        ``exp(logit - max)`` in that buffer: its sum, and the sum of its product with the logits,
        give logsumexp and entropy (``H = lse - sum(p * logit)``). No other (rows, vocab) pass.
        """
        from tqdm.auto import tqdm

        head = self.adapter.unembed_module
        dev, dtype = exec_device_dtype(head)
        plain = isinstance(head, torch.nn.Linear) and getattr(head, "_hf_hook", None) is None
        b = head.bias if bias else None
        n, V = x.shape[0], _head_rows(head, self.vocab_size)
        n_chunks = -(-n // c)
        show = (n_chunks > 16) if progress is None else bool(progress)
        bar = tqdm(total=n, desc="readout", unit="row", disable=not show, leave=False)
        with torch.inference_mode():
            logits = torch.empty((c, V), dtype=torch.float32, device=dev)
            work = torch.empty((c, V), dtype=torch.float32, device=dev)
            raw = None if dtype == torch.float32 else torch.empty((c, V), dtype=dtype, device=dev)
            W = head.weight
            try:
                for s in range(0, n, c):
                    xs = x[s:s + c]
                    m = xs.shape[0]
                    if norm:
                        xs = self.apply_final_norm(xs)
                    xs = xs.to(device=dev, dtype=dtype)
                    L = logits[:m]
                    if plain:
                        R = L if raw is None else raw[:m]
                        torch.mm(xs, W.T, out=R)
                        if b is not None:
                            R.add_(b)
                        if raw is not None:
                            L.copy_(R)
                    else:
                        y = head(xs)
                        if not bias and getattr(head, "bias", None) is not None:
                            y = y - head.bias
                        L.copy_(y)
                    top_v, top_i = _topk_rows(L, k)
                    t = top_i[:, 0] if tgt is None else tgt[s:s + m].to(dev)
                    t_logit = L.gather(1, t[:, None])
                    E = work[:m]
                    rank = self._count_above(L, t_logit, top_v, E, own=tgt is None)
                    mx = top_v[:, :1]
                    torch.sub(L, mx, out=E).exp_()
                    S = E.sum(-1)
                    D = E.mul_(L).sum(-1)  # sum(exp(logit - max) * logit); E is spent
                    if not bool(torch.isfinite(D).all()):  # -inf logits: 0 * -inf
                        bad = (~torch.isfinite(D)).nonzero()[:, 0]
                        Lb = L[bad]
                        Eb = torch.exp(Lb - mx[bad])
                        D[bad] = torch.where(Eb > 0, Eb * Lb, 0).sum(-1)
                    logS = S.log()
                    lse = mx[:, 0] + logS
                    ent = lse - D / S
                    sl = slice(s, s + m)
                    out.top_ids[sl] = top_i.cpu().numpy()
                    out.top_logits[sl] = top_v.cpu().numpy()
                    out.top_probs[sl] = (top_v - lse[:, None]).exp_().cpu().numpy()
                    out.entropy[sl] = ent.cpu().numpy()
                    out.logsumexp[sl] = lse.cpu().numpy()
                    out.target_ids[sl] = t.cpu().numpy()
                    out.target_logits[sl] = t_logit[:, 0].cpu().numpy()
                    out.target_probs[sl] = (t_logit[:, 0] - lse).exp_().cpu().numpy()
                    out.target_ranks[sl] = (rank + 1).cpu().numpy()
                    bar.update(m)
            finally:
                bar.close()

    @staticmethod
    def _count_above(L, t_logit, top_v, buf, *, own: bool) -> torch.Tensor:
        """(rows,) number of logits strictly above each row's target logit.

        A row's own top-1 has none above it. A target at least as high as the k-th largest logit
        is counted within the top-k (every logit above it is one of them); only the other rows
        are compared against the whole vocabulary, as a float count (exact below 2**24 tokens),
        in the buffer ``buf`` (no new (rows, vocab) memory).
        """
        m = L.shape[0]
        if own:
            return torch.zeros(m, dtype=torch.float32, device=L.device)
        rank = (top_v > t_logit).sum(-1).float()
        need = t_logit[:, 0] < top_v[:, -1]
        n_need = int(need.sum())
        if 2 * n_need > m:  # most rows: one comparison of the whole chunk
            return torch.gt(L, t_logit, out=buf).sum(-1)
        if n_need:  # a few rows: copy them into the buffer and compare there
            rows = need.nonzero()[:, 0]
            sub = torch.index_select(L, 0, rows, out=buf[:n_need])
            rank[rows] = torch.gt(sub, t_logit[rows], out=sub).sum(-1)
        return rank

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding matrix (vocab, d_model)."""
        head = self.adapter.unembed_module
        if head is None:
            raise AdapterError(f"{self.name} is an encoder without an unembedding")
        return module_tensor(head, "weight")


#: largest vocabulary block of :func:`_topk_rows`
_TOPK_BLOCK = 512


def _topk_rows(L: torch.Tensor, k: int):
    """``torch.topk(L, k, dim=-1)`` (values, indices) of a 2-D tensor, faster on CPU for small k.

    The k largest values of a row lie in the k blocks (of up to :data:`_TOPK_BLOCK` columns) with the
    largest block maxima: a block holding one of them has a maximum at least as large, and at
    most k blocks can have a maximum that high. So one fast ``amax`` over blocks, then ``topk``
    over those k blocks (and the columns past the last whole block) gives the same values; among
    exactly equal values the chosen indices may differ, as ``torch.topk`` leaves that order open.
    """
    n, V = L.shape
    bs = max(64, min(_TOPK_BLOCK, V // (16 * k)))
    nb = V // bs
    if L.device.type != "cpu" or nb < 4 * k or n == 0 or L.stride(1) != 1:
        return torch.topk(L, k, dim=-1)
    V0 = nb * bs
    blocks = L.as_strided((n, nb, bs), (L.stride(0), bs, 1))
    best = torch.topk(blocks.amax(-1), k, dim=-1).indices  # (n, k) block numbers
    cand = blocks.gather(1, best[:, :, None].expand(n, k, bs)).reshape(n, k * bs)
    cols = (best[:, :, None] * bs + torch.arange(bs, device=L.device)).reshape(n, k * bs)
    if V0 < V:  # the columns past the last whole block are always candidates
        cand = torch.cat([cand, L[:, V0:]], 1)
        cols = torch.cat([cols, torch.arange(V0, V, device=L.device).expand(n, V - V0)], 1)
    v, i = torch.topk(cand, k, dim=-1)
    return v, cols.gather(1, i)


def _head_rows(head, default: int) -> int:
    """Number of logits the LM head returns (its weight's rows; ``default`` if it has none)."""
    w = getattr(head, "weight", None)
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() == 2 else int(default)


def as_loaded_model(model) -> LoadedModel:
    """``model`` itself when it is a :class:`LoadedModel`, ``load(model)`` for a name or folder."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model)
    raise TypeError(f"model must be a LoadedModel (mri_widgets.load(...)) or a model name, got {type(model).__name__}")


def _load_pretrained(name: str, tokenizer, kwargs):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        where = "a local folder" if Path(name).exists() else "the Hugging Face hub or its local cache"
        hint = ("This machine is offline (HF_HUB_OFFLINE is set) and the model is not cached. " if offline else "")
        raise ModelNotAvailable(
            f"cannot load {name!r} from {where}: {e.__class__.__name__}: {str(e).splitlines()[0][:200]}. {hint}"
            "Download it where you have internet (huggingface-cli download " + name + " --local-dir FOLDER) "
            "and pass the folder: mri_widgets.load('FOLDER'), or use mri_widgets.load('demo') offline."
        ) from None
    model_type = getattr(config, "model_type", "")
    processor = None
    if model_type in ("llava", "llava_next", "llava_onevision"):
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
        processor = AutoProcessor.from_pretrained(name)
        tok = tokenizer or processor.tokenizer
    else:
        from .adapters import FAMILY_OF, SPECS
        fam = FAMILY_OF.get(model_type)
        is_encoder = fam is not None and SPECS[fam].encoder
        cls = AutoModel if is_encoder else AutoModelForCausalLM
        model = cls.from_pretrained(name, **kwargs)
        tok = tokenizer or AutoTokenizer.from_pretrained(name)
    return model, tok, processor


def _check_device(device) -> None:
    """A clear error for a device this machine does not have (before any loading)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here (no GPU or a CPU-only torch "
                             f"build); use device='cpu' or leave device out")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device={device!r} but this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r} but MPS (Apple GPU) is not available here; use device='cpu'")


def load(model, tokenizer=None, *, device=None, dtype=None, module_paths: Optional[dict] = None,
         **from_pretrained_kwargs) -> LoadedModel:
    """Load a model for analysis.

    Parameters
    ----------
    model : str or transformers model or LoadedModel
        ``"demo"`` (SmolLM2-135M-Instruct, offline), ``"demo-encoder"`` (all-MiniLM-L6-v2,
        offline), a hub id such as ``"gpt2"`` or ``"EleutherAI/pythia-160m"``, a local folder, or an
        already loaded model (then pass ``tokenizer`` too). A TransformerLens ``TransformerBridge``
        or an nnsight ``LanguageModel`` is unwrapped to the transformers model and tokenizer
        inside it (see :mod:`mri_widgets.models.byo`); a ``HookedTransformer`` is refused with
        what to pass instead.
    tokenizer : the tokenizer, when ``model`` is a model object (optional for ids and paths).
    device, dtype : where and in which precision to put the model (``"cuda"``, ``"float16"`` ...).
    module_paths : explicit module paths for a model family without an adapter (see
        :func:`mri_widgets.models.adapters.resolve_adapter`).
    **from_pretrained_kwargs : passed to ``from_pretrained`` (e.g. ``device_map="auto"``).
    """
    if isinstance(model, LoadedModel):
        return model
    from .byo import unwrap
    model, tokenizer = unwrap(model, tokenizer)
    dtype = _as_dtype(dtype)
    _check_device(device)
    processor = None
    name = None
    if isinstance(model, (str, os.PathLike)):
        name = str(model)
        if name == "demo":
            from .demo import load_demo
            model, tokenizer = load_demo(device=device, dtype=dtype)
        elif name == "demo-encoder":
            from .demo import load_demo_encoder
            model, tokenizer = load_demo_encoder(device=device, dtype=dtype)
        else:
            kw = dict(from_pretrained_kwargs)
            if dtype is not None:
                kw.setdefault("dtype", dtype)
            model, tokenizer, processor = _load_pretrained(name, tokenizer, kw)
            if device is not None and "device_map" not in kw:
                model = model.to(device)
        from_pretrained_kwargs = {}
    elif not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be 'demo', a model id or folder, or a torch model; got {type(model).__name__}")
    elif tokenizer is None:
        raise TypeError("pass the tokenizer with an already loaded model: mri_widgets.load(model, tokenizer)")
    else:
        if from_pretrained_kwargs:
            raise TypeError(f"unexpected arguments {sorted(from_pretrained_kwargs)} for an already loaded model")
        if dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
    return LoadedModel(model, tokenizer, module_paths=module_paths, name=name, processor=processor)


def _forward_params(model) -> set:
    """Names of the keyword arguments of a model's forward (empty when it cannot be inspected)."""
    import inspect

    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()
