"""load(), adapters and their errors."""

import pytest
import torch

from conftest import ALL_TEXT
from mri_widgets import load
from mri_widgets.models import AdapterError, ModelNotAvailable
from mri_widgets.testing import tiny_model


@pytest.mark.parametrize("arch", ALL_TEXT + ("llava",))
def test_sizes(tiny, arch):
    lm = tiny(arch)
    assert lm.n_layers == 3 and lm.n_heads == 4 and lm.d_model == 32
    assert lm.d_mlp == (96 if arch in ("llama", "llava") else 128)
    assert lm.vocab_size == len(lm.tokenizer) or arch == "bert"
    assert lm.arch == ("llama" if arch == "llava" else arch)
    assert lm.is_encoder == (arch == "bert")
    assert lm.gated == (arch in ("llama", "llava"))


def test_load_passes_through_model_objects(tiny):
    lm = tiny("gpt2")
    again = load(lm.model, lm.tokenizer)
    assert again.model is lm.model and again.arch == "gpt2"
    assert load(lm) is lm
    with pytest.raises(TypeError, match="tokenizer"):
        load(lm.model)


def test_unknown_model_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as e:
        load("some-org/definitely-not-cached-model-xyz")
    msg = str(e.value)
    assert "offline" in msg and "local" in msg and "demo" in msg


def test_local_folder_round_trip(tmp_path, tiny):
    lm = tiny("gpt_neox")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load(str(tmp_path))
    assert again.arch == "gpt_neox"
    enc = lm.encode("The cat sat")
    with torch.no_grad():
        assert torch.allclose(again.model(**enc).logits, lm.model(**enc).logits, atol=1e-5)


def test_family_without_adapter_names_the_fix(tiny):
    lm = tiny("gpt2")

    class Strange(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "strange"})()
            self.body = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(AdapterError) as e:
        load(Strange(), lm.tokenizer)
    assert "module_paths" in str(e.value) and "strange" in str(e.value)


def test_explicit_module_paths(tiny):
    lm = tiny("gpt2")
    paths = dict(blocks="transformer.h", embed="transformer.wte", final_norm="transformer.ln_f", attn="attn",
                 attn_out="attn.c_proj", mlp="mlp", mlp_out="mlp.c_proj", mlp_in="mlp.c_fc", conv1d=True)
    again = load(lm.model, lm.tokenizer, module_paths=paths)
    a = again.capture(["The cat"], sites=["resid", "mlp"], progress=False)
    b = lm.capture(["The cat"], sites=["resid", "mlp"], progress=False)
    assert torch.equal(a["resid"], b["resid"]) and torch.equal(a["mlp"], b["mlp"])
    with pytest.raises(AdapterError, match="has no part 'nope'"):
        load(lm.model, lm.tokenizer, module_paths={**paths, "mlp_out": "mlp.nope"})


def test_unembed_errors(tiny):
    with pytest.raises(AdapterError, match="encoder"):
        tiny("bert").unembed(torch.zeros(3, 32))
    with pytest.raises(ValueError, match="d_model"):
        tiny("gpt2").unembed(torch.zeros(3, 5))


def test_huge_prompt_clear_error(tiny):
    with pytest.raises(ValueError, match="accepts 256"):
        tiny("gpt2").encode("word " * 1000)


def test_token_helpers(tiny):
    lm = tiny("gpt2")
    assert lm.token_id(" capital") in lm.tokenizer(" capital")["input_ids"]
    with pytest.raises(ValueError, match="not one"):
        lm.token_id(" capital of France")
    ids = lm.tokenizer("The capital")["input_ids"]
    assert "".join(lm.token_str(ids)) == "The capital"


def test_llava_image_tokens(tiny):
    import numpy as np
    lm = tiny("llava")
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")
    enc = lm.encode("What is this?", image=img)
    pos = lm.image_positions(enc["input_ids"][0])
    assert len(pos) == 16 and np.all(np.diff(pos) == 1)
    with torch.no_grad():
        out = lm.model(**enc)
    assert out.logits.shape[1] == enc["input_ids"].shape[1]
    with pytest.raises(ValueError, match="not a vision-language"):
        tiny("gpt2").encode("hi", image=img)


def test_dtype_and_bad_dtype():
    lm = tiny_model("gpt2", seed=1)
    lm2 = load(lm.model, lm.tokenizer, dtype="float64")
    assert lm2.model.transformer.wte.weight.dtype == torch.float64
    with pytest.raises(TypeError, match="dtype"):
        load(lm.model, lm.tokenizer, dtype="floaty")
