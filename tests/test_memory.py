"""Key-value memories: what a neuron's output row promotes, and the texts that trigger it."""

import numpy as np
import pytest
import torch

from mri_widgets.analysis.memory import NeuronMemoryError, neuron_memory
from mri_widgets.analysis.neurons import NeuronScan
from mri_widgets.testing import SAMPLE_TEXTS, tiny_model


def reference_logits(lm, layer, neuron):
    """By hand: the neuron's output row through the final norm (no bias) and W_U."""
    with torch.no_grad():
        return _reference(lm, layer, neuron)


def _reference(lm, layer, neuron):
    norm = lm.adapter.final_norm
    w = lm.adapter.W_out(layer)[:, neuron].double()
    g = norm.weight.double()
    eps = getattr(norm, "eps", None) or norm.variance_epsilon
    if isinstance(norm, torch.nn.LayerNorm):
        c = w - w.mean()
        x = c / torch.sqrt((c ** 2).mean() + eps) * g
    else:  # RMSNorm
        x = w / torch.sqrt((w ** 2).mean() + eps) * g
    return (lm.W_U.double() @ x).float()


class FakeScan:
    """Stands in for NeuronScan: top(layer, neuron) -> (value, text_index, position), best first."""

    def __init__(self, rows, texts=None):
        self.rows, self.texts = rows, texts
        self.asked = []

    def top(self, layer, neuron):
        self.asked.append((layer, neuron))
        return list(self.rows)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_values_match_hand_computation(tiny, arch):
    lm = tiny(arch)
    layer, neuron = 1, 5
    ref = reference_logits(lm, layer, neuron)
    m = neuron_memory(lm, layer, neuron, k=5)
    order = torch.argsort(ref, descending=True)
    assert [t for t, _ in m["promotes"]] == lm.token_str(order[:5].tolist())
    assert [t for t, _ in m["suppresses"]] == lm.token_str(order.flip(0)[:5].tolist())
    vals = [v for _, v in m["promotes"]]
    assert vals == sorted(vals, reverse=True) and vals[0] == pytest.approx(float(ref.max()), abs=1e-4)
    assert m["suppresses"][0][1] == pytest.approx(float(ref.min()), abs=1e-4)
    assert m["keys"] == [] and (m["layer"], m["neuron"]) == (layer, neuron)


def test_values_ignore_the_final_norm_bias():
    lm = tiny_model("gpt2")  # fresh: we edit the final norm
    before = neuron_memory(lm, 0, 1, k=20)
    with torch.no_grad():
        lm.adapter.final_norm.bias.normal_(0, 3.0)  # a bias shifts every neuron's logits alike
    after = neuron_memory(lm, 0, 1, k=20)
    for key in ("promotes", "suppresses"):
        assert [t for t, _ in after[key]] == [t for t, _ in before[key]]
        np.testing.assert_allclose([v for _, v in after[key]], [v for _, v in before[key]], atol=1e-4)
    # ... while unembedding the row with the bias would rank tokens differently
    w = lm.adapter.W_out(0)[:, 1]
    naive = torch.topk(lm.unembed(w[None])[0].float(), 20).indices.tolist()
    assert lm.token_str(naive) != [t for t, _ in before["promotes"]]


def test_keys_from_a_scan(tiny):
    lm = tiny("gpt2")
    texts = SAMPLE_TEXTS[:3]
    ids = [lm.tokenizer(t)["input_ids"] for t in texts]
    scan = FakeScan([(0.5, 1, 2), (2.0, 0, 4), (1.0, 2, 0)], texts=texts)
    m = neuron_memory(lm, 2, 7, scan=scan, k=2)
    assert scan.asked == [(2, 7)]
    assert [(k["value"], k["text_index"], k["position"]) for k in m["keys"]] == [(2.0, 0, 4), (1.0, 2, 0)]
    first = m["keys"][0]
    assert first["token"] == lm.token_str([ids[0][4]])[0]
    assert first["prefix"] == "".join(lm.token_str(ids[0][:5]))
    assert first["text"] == texts[0]
    # long prefixes keep the last `context` tokens
    m = neuron_memory(lm, 2, 7, scan=FakeScan([(1.0, 0, 6)]), texts=texts, context=3)
    assert m["keys"][0]["prefix"] == "…" + "".join(lm.token_str(ids[0][4:7]))


def test_keys_from_a_real_neuron_scan(tiny):
    lm = tiny("gpt2")
    texts = SAMPLE_TEXTS
    scan = NeuronScan.run(lm, texts, k=4, layers=[1])
    m = neuron_memory(lm, 1, 3, scan=scan, k=3)
    acts = lm.capture(texts, ("mlp",), layers=[1])
    a = acts["mlp"][:, 0, :, 3].masked_fill(~acts.mask, -np.inf)  # (texts, seq)
    best = a.max(1)
    order = torch.argsort(best.values, descending=True)[:3].tolist()
    assert [k["text_index"] for k in m["keys"]] == order
    for key in m["keys"]:
        i = key["text_index"]
        assert key["position"] == int(best.indices[i])
        assert key["value"] == pytest.approx(float(best.values[i]), abs=1e-4)
    assert m["stats"]["max"] == pytest.approx(m["keys"][0]["value"], abs=1e-5)
    with pytest.raises(ValueError, match="not scanned"):
        neuron_memory(lm, 0, 3, scan=scan)


def test_errors(tiny):
    lm = tiny("gpt2")
    with pytest.raises(IndexError, match="neuron"):
        neuron_memory(lm, 0, lm.d_mlp)
    with pytest.raises(IndexError):
        neuron_memory(lm, lm.n_layers, 0)
    with pytest.raises(NeuronMemoryError, match="k must"):
        neuron_memory(lm, 0, 0, k=0)
    with pytest.raises(NeuronMemoryError, match="texts="):
        neuron_memory(lm, 0, 0, scan=FakeScan([(1.0, 0, 0)]))
    with pytest.raises(NeuronMemoryError, match="position"):
        neuron_memory(lm, 0, 0, scan=FakeScan([(1.0, 0, 99)], texts=["short"]))
    with pytest.raises(TypeError, match="NeuronScan"):
        neuron_memory(lm, 0, 0, scan=object())
    with pytest.raises(ValueError, match="encoder|unembedding"):
        neuron_memory(tiny("bert"), 0, 0)
