"""Bring your own model or arrays: wrappers unwrapped by mw.load, arrays-only constructors, to_pandas.

The wrapper tests use stand-ins shaped like nnsight's LanguageModel and TransformerLens's
TransformerBridge (which wraps the transformers modules in place); the real packages are checked
too where they are installed (``pip install mri_widgets[byo]``), and skipped elsewhere.
"""

import copy
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import mri_widgets as mw
from mri_widgets.models.byo import UnsupportedModel, unwrap
from mri_widgets.models.capture import SITES
from mri_widgets.testing import tiny_model

TEXTS = ["the cat sat on the mat", "a dog ran"]


def _sites(lm):
    return [s for s in SITES if lm.gated or s not in ("mlp_gate", "mlp_up", "mlp_act")]


def _assert_same_capture(a, b, sites):
    ca, cb = a.capture(TEXTS, sites), b.capture(TEXTS, sites)
    for s in sites:
        torch.testing.assert_close(cb[s], ca[s], atol=1e-5, rtol=1e-5, msg=lambda m, s=s: f"site {s}: {m}")


# ---- stand-ins ---------------------------------------------------------------------------------
class LanguageModel:  # like nnsight's: not a torch module, the model in _module
    def __init__(self, module, tokenizer):
        self.__dict__["_module"] = module
        self.__dict__["tokenizer"] = tokenizer

    def __getattr__(self, name):  # nnsight's Envoy forwards to its module
        return getattr(self.__dict__["_module"], name)


class _Component(nn.Module):  # like a TransformerLens bridge component
    def __init__(self, original):
        super().__init__()
        self.add_module("_original_component", original)
        self.hook_in = nn.Identity()
        self.hook_out = nn.Identity()

    def forward(self, *args, **kwargs):
        out = self._original_component(*args, **kwargs)
        return out


class TransformerBridge(nn.Module):
    def __init__(self, model, tokenizer):
        super().__init__()
        self.__dict__["original_model"] = model
        self.tokenizer = tokenizer
        # wrap in place, as the bridge does: blocks, and inside them attention and MLP
        blocks = model.transformer.h
        for i, blk in enumerate(list(blocks)):
            blk.attn = _Component(blk.attn)
            blk.mlp = _Component(blk.mlp)
            blocks[i] = _Component(blk)
        model.transformer.ln_f = _Component(model.transformer.ln_f)

    def forward(self, input_ids):
        return self.original_model(input_ids=input_ids).logits


class HookedTransformer(nn.Module):
    pass


# ---- wrappers ----------------------------------------------------------------------------------
def test_nnsight_like_model_is_unwrapped():
    lm = tiny_model("gpt2")
    wrapped = LanguageModel(lm.model, lm.tokenizer)
    got = mw.load(wrapped)
    assert got.model is lm.model and got.tokenizer is lm.tokenizer
    _assert_same_capture(lm, got, _sites(lm))


def test_bridge_like_model_is_unwrapped_and_keeps_working():
    lm = tiny_model("gpt2")
    bridge = TransformerBridge(copy.deepcopy(lm.model), lm.tokenizer)
    inner = bridge.original_model
    ids = torch.tensor([[5, 6, 7, 8]])
    before = bridge(ids)
    got = mw.load(bridge)
    assert got.tokenizer is lm.tokenizer
    assert type(got.model.transformer.h[0]).__name__ == "GPT2Block"
    assert type(got.model.transformer.h[0].attn).__name__ == "GPT2Attention"
    # the bridge is left wrapped and gives the same logits
    assert isinstance(inner.transformer.h[0], _Component) and isinstance(inner.transformer.ln_f, _Component)
    torch.testing.assert_close(bridge(ids), before)
    # the view shares the parameters
    assert got.model.transformer.h[1].attn.c_proj.weight is inner.transformer.h[1]._original_component.attn \
        ._original_component.c_proj.weight
    _assert_same_capture(lm, got, _sites(lm))
    assert torch.equal(got.W_O(2), lm.W_O(2))


def test_explicit_tokenizer_wins_over_the_wrappers():
    lm = tiny_model("gpt2")
    other = copy.deepcopy(lm.tokenizer)
    model, tok = unwrap(LanguageModel(lm.model, lm.tokenizer), other)
    assert model is lm.model and tok is other


def test_hooked_transformer_is_refused_with_what_to_pass():
    with pytest.raises(UnsupportedModel, match="TransformerBridge"):
        mw.load(HookedTransformer(), object())


def test_plain_models_pass_through_unwrap():
    lm = tiny_model("gpt2")
    assert unwrap(lm.model, lm.tokenizer) == (lm.model, lm.tokenizer)


# ---- the real packages, where installed ----------------------------------------------------------
def test_real_nnsight_language_model():
    nnsight = pytest.importorskip("nnsight")
    lm = tiny_model("gpt2")
    wrapped = nnsight.LanguageModel(lm.model, tokenizer=lm.tokenizer)
    got = mw.load(wrapped)
    assert got.model is lm.model
    _assert_same_capture(lm, got, _sites(lm))
    with wrapped.trace("the cat sat"):  # nnsight still works afterwards
        h = wrapped.transformer.h[0].output.save()
    assert h is not None


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_real_transformer_bridge(arch, tmp_path):
    pytest.importorskip("transformer_lens")
    from transformer_lens.model_bridge import TransformerBridge as RealBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = tiny_model(arch)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    bridge = RealBridge.boot_transformers(str(tmp_path), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(tmp_path))
    got = mw.load(bridge, lm.tokenizer)
    _assert_same_capture(lm, got, _sites(lm))
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(bridge(ids), lm.model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    shutil.rmtree(tmp_path, ignore_errors=True)
