"""Loading models: :func:`load` and the :class:`LoadedModel` every analysis takes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .adapters import Adapter, AdapterError, resolve_adapter
from .capture import Capture, CaptureError, capture_inputs, check_texts, max_positions, run_capture

__all__ = ["LoadedModel", "load", "as_loaded_model", "ModelNotAvailable"]


def exec_device_dtype(module: torch.nn.Module):
    """Where a module computes: accelerate's execution device for offloaded modules, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}"), dtype
    return (p.device if p is not None else torch.device("cpu")), dtype


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


class LoadedModel:
    """A transformers model, its tokenizer and its :class:`~mri_widgets.models.adapters.Adapter`.

    Attributes
    ----------
    model, tokenizer : the transformers objects.
    arch : adapter family name (``"gpt2"``, ``"gpt_neox"``, ``"llama"``, ``"gptj"``,
        ``"gpt_neo"``, ``"bert"``, ``"distilbert"``); LLaVA-style models report their language
        model's family and set ``multimodal = "llava"``.
    n_layers, n_heads, d_model, d_mlp, vocab_size : sizes.
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
    vocab_size = property(lambda self: self.adapter.vocab_size)
    gated = property(lambda self: self.adapter.gated)
    is_encoder = property(lambda self: self.adapter.encoder)
    multimodal = property(lambda self: self.adapter.multimodal)
    max_positions = property(lambda self: max_positions(self.adapter))

    @property
    def device(self) -> torch.device:
        return self.adapter.embed.weight.device

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, arch={self.arch!r}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
                f"d_model={self.d_model}, d_mlp={self.d_mlp}, vocab_size={self.vocab_size}, device={self.device})")

    # ---- tokens -------------------------------------------------------------------------------
    def token_str(self, ids) -> list[str]:
        """Readable strings of token ids (each id decoded alone, cached)."""
        out = []
        cache = self._token_cache
        for i in np.asarray(ids).reshape(-1).tolist():
            s = cache.get(i)
            if s is None:
                s = self.tokenizer.decode([i])
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

    # ---- capture ------------------------------------------------------------------------------
    def capture(self, texts, sites=("resid",), *, batch_size: Optional[int] = None, max_length: Optional[int] = None,
                reducer=None, layers=None, progress: Optional[bool] = None, extra_inputs: Optional[dict] = None,
                batch_tokens: Optional[int] = None) -> Optional[Capture]:
        """Run the model over ``texts`` and record activations at ``sites``.

        Parameters
        ----------
        texts : str or list of str
        sites : names among ``"resid"`` (n_layers + 1 states: embeddings, then each block's output,
            the last one before the final norm), ``"mlp"`` (input of each MLP output projection),
            ``"mlp_gate"``, ``"mlp_up"``, ``"mlp_act"`` (gated MLPs), ``"attn"`` (attention
            probabilities; eager attention is switched on for the call only) and ``"head_out"``
            (each head's write into the residual stream, without the output bias).
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
            formed by the budget are not consecutive texts).
        layers : restrict to these layer indices (``resid`` counts the embeddings as layer 0).
        progress : show a tqdm progress bar (default: when there is more than one batch).
        extra_inputs : more keyword arguments for the model's forward pass.
        batch_tokens : with ``batch_size=None``, the most tokens (padding included) per batch, in
            place of the default memory budget (e.g. larger on a big GPU).

        Returns
        -------
        Capture or None
        """
        return run_capture(self.adapter, self.tokenizer, texts, sites, batch_size=batch_size,
                           max_length=max_length, reducer=reducer, layers=layers, progress=progress,
                           token_str=self.token_str, extra_inputs=extra_inputs, batch_tokens=batch_tokens)

    def capture_inputs(self, inputs: dict, sites=("resid",), *, layers=None) -> Capture:
        """Capture one already-encoded batch, e.g. ``self.encode(prompt, image=img)`` for a
        vision-language model (the processor expands the image placeholder into image tokens).
        Same sites and conventions as :meth:`capture`."""
        return capture_inputs(self.adapter, inputs, sites, layers=layers, token_str=self.token_str)

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

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding matrix (vocab, d_model)."""
        head = self.adapter.unembed_module
        if head is None:
            raise AdapterError(f"{self.name} is an encoder without an unembedding")
        return head.weight


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


def load(model, tokenizer=None, *, device=None, dtype=None, module_paths: Optional[dict] = None,
         **from_pretrained_kwargs) -> LoadedModel:
    """Load a model for analysis.

    Parameters
    ----------
    model : str or transformers model or LoadedModel
        ``"demo"`` (SmolLM2-135M-Instruct, offline), ``"demo-encoder"`` (all-MiniLM-L6-v2,
        offline), a hub id such as ``"gpt2"`` or ``"EleutherAI/pythia-160m"``, a local folder, or an
        already loaded model (then pass ``tokenizer`` too).
    tokenizer : the tokenizer, when ``model`` is a model object (optional for ids and paths).
    device, dtype : where and in which precision to put the model (``"cuda"``, ``"float16"`` ...).
    module_paths : explicit module paths for a model family without an adapter (see
        :func:`mri_widgets.models.adapters.resolve_adapter`).
    **from_pretrained_kwargs : passed to ``from_pretrained`` (e.g. ``device_map="auto"``).
    """
    if isinstance(model, LoadedModel):
        return model
    dtype = _as_dtype(dtype)
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
