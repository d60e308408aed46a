"""Big models: accelerate's CPU / disk offload works for every capture site and every weight accessor.

A tiny model is dispatched with a forced offload map (blocks, embeddings and final norm on
"disk", so their weights are meta tensors between forward passes) and compared with the same
model kept whole: every site of SITES, W_Q/W_K/W_V/W_O and the biases, the MLP weights and the
readout through the unembedding must be equal.
"""

import copy

import pytest
import torch

accelerate = pytest.importorskip("accelerate")

from mri_widgets.models.adapters import AdapterError, module_tensor  # noqa: E402
from mri_widgets.models.capture import SITES  # noqa: E402
from mri_widgets.models.loading import LoadedModel  # noqa: E402
from mri_widgets.testing import tiny_model  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog"]

MAPS = {
    "gpt2": {"transformer.wte": "disk", "transformer.wpe": "disk", "transformer.drop": "cpu",
             "transformer.h.0": "disk", "transformer.h.1": "cpu", "transformer.h.2": "disk",
             "transformer.ln_f": "disk", "lm_head": "disk"},
    "llama": {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "disk",
              "model.layers.1": "disk", "model.layers.2": "cpu", "model.norm": "disk", "lm_head": "disk"},
}


def _sites(lm):
    return [s for s in SITES if lm.gated or s not in ("mlp_gate", "mlp_up", "mlp_act")]


def _offloaded(lm, how, tmp_path):
    m = copy.deepcopy(lm.model)
    if how == "disk":
        m = accelerate.dispatch_model(m, device_map=MAPS[lm.arch], offload_dir=str(tmp_path))
    else:
        m = accelerate.cpu_offload(m, execution_device="cpu")
    return LoadedModel(m, lm.tokenizer, name=f"{lm.name}-offloaded")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("how", ["disk", "cpu_offload"])
def test_every_site_and_weight_equals_the_whole_model(arch, how, tmp_path):
    lm = tiny_model(arch)
    off = _offloaded(lm, how, tmp_path)
    W_O_module = off.adapter.part(0, "attn_out")
    assert W_O_module.weight.device.type == "meta"  # really offloaded
    sites = _sites(lm)
    a, b = lm.capture(TEXTS, sites), off.capture(TEXTS, sites)
    for s in sites:
        torch.testing.assert_close(b[s], a[s], atol=1e-5, rtol=1e-5, msg=lambda m, s=s: f"site {s}: {m}")
    for layer in range(lm.n_layers):
        for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            assert torch.equal(getattr(off, w)(layer), getattr(lm, w)(layer)), (w, layer)
        assert torch.equal(off.adapter.W_in(layer), lm.adapter.W_in(layer))
        assert torch.equal(off.adapter.W_out(layer), lm.adapter.W_out(layer))
    assert W_O_module.weight.device.type == "meta"  # gathered for the use only, not put back on the module
    assert torch.equal(off.W_U, lm.W_U)
    assert off.device == torch.device("cpu")
    ra = lm.readout(a["resid"][:, -1], k=3)
    rb = off.readout(b["resid"][:, -1], k=3)
    assert (ra.top_ids == rb.top_ids).all()
    torch.testing.assert_close(torch.as_tensor(rb.top_probs), torch.as_tensor(ra.top_probs))


def test_head_out_sums_to_attn_out_when_offloaded(tmp_path):
    lm = tiny_model("gpt2")
    off = _offloaded(lm, "disk", tmp_path)
    c = off.capture(TEXTS, ["head_out", "attn_out"])
    bias = torch.stack([off.b_O(l) for l in range(off.n_layers)])[None, :, None]
    mask = c["attn_out"].abs().sum(-1, keepdim=True) > 0  # padding rows are zero
    torch.testing.assert_close(c["head_out"].sum(2) + bias * mask, c["attn_out"], atol=1e-5, rtol=1e-5)


def test_meta_weight_without_offload_hook_is_a_clear_error():
    lin = torch.nn.Linear(3, 2, device="meta")
    with pytest.raises(AdapterError, match="meta device"):
        module_tensor(lin, "weight")
    assert module_tensor(torch.nn.Linear(3, 2, bias=False), "bias") is None
