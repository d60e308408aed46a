"""GPU checks: capture, unembed and device_map="auto" on CUDA. Skipped where no GPU is present.

Run on a GPU machine with ``python -m pytest tests/gpu -q``. These need only torch and
transformers (the model and analysis rooms import without the widget stack).
"""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["The capital of France is Paris.", "A quick brown fox.", "It is sad."]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "bert"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_capture_on_cuda_matches_cpu(arch, dtype):
    from mri_widgets import load
    from mri_widgets.testing import tiny_model

    cpu = tiny_model(arch)
    ref = cpu.capture(TEXTS, sites=["resid", "mlp"], progress=False)
    gpu = load(tiny_model(arch).model, cpu.tokenizer, device="cuda", dtype=dtype)
    assert gpu.device.type == "cuda"
    seen = []
    gpu.capture(TEXTS, sites=["mlp"], reducer=lambda b: seen.append(b.acts["mlp"].device.type), progress=False)
    assert set(seen) == {"cuda"}
    cap = gpu.capture(TEXTS, sites=["resid", "mlp"], progress=False)
    assert cap["resid"].device.type == "cpu" and cap["resid"].dtype == torch.float32
    tol = 0.05 if dtype == torch.float16 else 0.2
    for s in ("resid", "mlp"):
        assert torch.allclose(cap[s], ref[s], atol=tol, rtol=tol), s
    if arch != "bert":
        n = int(cap.mask[0].sum())
        logits = gpu.unembed(cap["resid"][0, -1, :n])
        with torch.no_grad():
            own = gpu.model(**gpu.encode(TEXTS[0])).logits[0]
        assert logits.device.type == "cuda"
        assert (logits.argmax(-1) == own.argmax(-1)).float().mean() > 0.9


def test_device_map_auto_keeps_hooks_working(tmp_path):
    from mri_widgets import load
    from mri_widgets.testing import tiny_model

    tiny = tiny_model("llama")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    # "auto" puts everything on the one GPU of a single-GPU machine; an explicit map that splits
    # the blocks over the GPU and the CPU exercises the same accelerate hooks as several GPUs.
    lm = load(str(tmp_path), device_map="auto")
    assert lm.device.type == "cuda"
    split = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "model.layers.2": 0,
             "model.norm": 0, "model.rotary_emb": 0, "lm_head": "cpu"}
    lm = load(str(tmp_path), device_map=split)
    assert {p.device.type for p in lm.model.parameters()} == {"cuda", "meta"}  # "cpu" = offloaded
    cap = lm.capture(TEXTS, sites=["resid", "mlp", "attn"], progress=False)
    ref = tiny.capture(TEXTS, sites=["resid", "mlp", "attn"], progress=False)
    # head_out of an offloaded layer: W_O is gathered from accelerate's weights map
    h_off = lm.capture(TEXTS, sites=["head_out"], layers=[1], progress=False)["head_out"]
    h_ref = tiny.capture(TEXTS, sites=["head_out"], layers=[1], progress=False)["head_out"]
    assert torch.allclose(h_off.float().cpu(), h_ref.float().cpu(), atol=1e-3)
    assert torch.equal(lm.W_O(1).float().cpu(), tiny.W_O(1).float().cpu())
    for s in ("resid", "mlp", "attn"):
        assert torch.allclose(cap[s], ref[s], atol=1e-3), s
    n = int(cap.mask[0].sum())
    with torch.no_grad():
        own = lm.model(**lm.encode(TEXTS[0])).logits[0].float().cpu()
    assert torch.allclose(lm.unembed(cap["resid"][0, -1, :n]).float().cpu(), own, atol=1e-3)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_analyses_on_cuda_match_cpu(arch):
    """Neuron scan, logit lens and head distances give the CPU's answers on the GPU."""
    import numpy as np

    from mri_widgets import load
    from mri_widgets.analysis.heads import head_distances
    from mri_widgets.analysis.lens import logit_lens
    from mri_widgets.analysis.neurons import NeuronScan
    from mri_widgets.testing import SAMPLE_TEXTS, tiny_model

    cpu = tiny_model(arch)
    gpu = load(tiny_model(arch).model, cpu.tokenizer, device="cuda")
    a = NeuronScan.run(cpu, SAMPLE_TEXTS, k=4, progress=False)
    b = NeuronScan.run(gpu, SAMPLE_TEXTS, k=4, progress=False)
    for layer in range(cpu.n_layers):
        for n in (0, 5, cpu.d_mlp - 1):
            assert [t[1:] for t in a.top(layer, n)] == [t[1:] for t in b.top(layer, n)]
            assert np.allclose([t[0] for t in a.top(layer, n)], [t[0] for t in b.top(layer, n)], atol=1e-4)
    la, lb = logit_lens(cpu, SAMPLE_TEXTS[0]), logit_lens(gpu, SAMPLE_TEXTS[0])
    assert np.array_equal(la.top_ids, lb.top_ids)
    assert np.allclose(la.top_probs, lb.top_probs, atol=1e-4)
    assert np.allclose(head_distances(cpu, SAMPLE_TEXTS[:3]), head_distances(gpu, SAMPLE_TEXTS[:3]), atol=1e-3)
