"""Tiny random-initialised models with working tokenizers, offline, for fast tests.

``tiny_model("gpt2")`` returns a :class:`~mri_widgets.LoadedModel` built from a transformers
config in well under a second: 2-3 layers, a handful of heads and a byte-level BPE tokenizer
trained on a few paragraphs of English, so that token strings look like real ones.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["tiny_model", "tiny_tokenizer", "synthetic_areas", "synthetic_lens", "ARCHS", "SAMPLE_TEXTS"]

ARCHS = ("gpt2", "gpt_neox", "llama", "gptj", "gpt_neo", "bert", "llava")

_CORPUS = """\
The capital of France is Paris. The capital of Italy is Rome. The cat sat on the mat.
A quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.
Transformers read tokens, mix them with attention and write into the residual stream.
Neurons in the feed-forward layers fire on some texts and stay silent on others.
I was so happy to see you again! That made me angry. I am afraid of the dark. It is sad.
Numbers like 1, 2, 3 and 42 appear too, as do punctuation marks: commas, colons; dashes - and quotes "".
Layer by layer the model refines its guess of the next word in the sentence.
"""

SAMPLE_TEXTS = [
    "The capital of France is Paris.",
    "A quick brown fox jumps over the lazy dog.",
    "I was so happy to see you again!",
    "Neurons fire on some texts.",
    "The cat sat on the mat and the dog sat too.",
    "It is sad.",
]


@functools.lru_cache(maxsize=4)
def _trained(kind: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "bert":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
        tok.train_from_iterator(_CORPUS.splitlines(), trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return tok
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<image>"] if kind == "llava" else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS.splitlines(), trainer)
    return tok


def tiny_tokenizer(kind: str = "gpt2", vocab_size: int = 400):
    """A fast tokenizer trained offline on a few English paragraphs."""
    from transformers import PreTrainedTokenizerFast

    base = _trained("bert" if kind == "bert" else ("llava" if kind == "llava" else "bpe"), vocab_size)
    if kind == "bert":
        return PreTrainedTokenizerFast(tokenizer_object=base.__class__.from_str(base.to_str()),
                                       unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    tok = PreTrainedTokenizerFast(tokenizer_object=base.__class__.from_str(base.to_str()),
                                  eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>",
                                  **({"extra_special_tokens": {"image_token": "<image>"}} if kind == "llava" else {}))
    tok.pad_token = tok.eos_token
    return tok


def _config(arch: str, vocab: int, n_layers: int, d: int, heads: int):
    import transformers as T

    common_pos = 256
    if arch == "gpt2":
        return T.GPT2Config(n_layer=n_layers, n_head=heads, n_embd=d, vocab_size=vocab, n_positions=common_pos,
                            bos_token_id=0, eos_token_id=0)
    if arch == "gpt_neox":
        return T.GPTNeoXConfig(num_hidden_layers=n_layers, num_attention_heads=heads, hidden_size=d,
                               intermediate_size=4 * d, vocab_size=vocab, max_position_embeddings=common_pos,
                               bos_token_id=0, eos_token_id=0, rotary_pct=0.5)
    if arch == "llama":
        return T.LlamaConfig(num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                             hidden_size=d, intermediate_size=3 * d, vocab_size=vocab,
                             max_position_embeddings=common_pos, bos_token_id=0, eos_token_id=0,
                             tie_word_embeddings=True)
    if arch == "gptj":
        return T.GPTJConfig(n_layer=n_layers, n_head=heads, n_embd=d, vocab_size=vocab, n_positions=common_pos,
                            rotary_dim=4, bos_token_id=0, eos_token_id=0)
    if arch == "gpt_neo":
        return T.GPTNeoConfig(num_layers=n_layers, num_heads=heads, hidden_size=d, vocab_size=vocab,
                              max_position_embeddings=common_pos, bos_token_id=0, eos_token_id=0,
                              attention_types=[[["global", "local"], n_layers // 2]] + ([[["global"], 1]] if n_layers % 2 else []),
                              window_size=8)
    if arch == "bert":
        return T.BertConfig(num_hidden_layers=n_layers, num_attention_heads=heads, hidden_size=d,
                            intermediate_size=4 * d, vocab_size=vocab, max_position_embeddings=common_pos,
                            pad_token_id=0)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHS}")


def tiny_model(arch: str = "gpt2", *, n_layers: int = 3, d_model: int = 32, n_heads: int = 4, seed: int = 0,
               vocab_size: int = 400):
    """A tiny random-initialised :class:`~mri_widgets.LoadedModel` of family ``arch``.

    ``arch`` is one of ``"gpt2"``, ``"gpt_neox"``, ``"llama"``, ``"gptj"``, ``"gpt_neo"``,
    ``"bert"`` and ``"llava"`` (a Llama language model with a tiny CLIP vision tower: 28 px images
    in 4 x 4 patches of 7 px, 16 image tokens).
    """
    import transformers as T

    from .models.loading import LoadedModel

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHS}")
    torch.manual_seed(seed)
    tok = tiny_tokenizer(arch, vocab_size)
    vocab = len(tok)
    if arch == "llava":
        text = _config("llama", vocab, n_layers, d_model, n_heads)
        vision = T.CLIPVisionConfig(hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=2,
                                    num_attention_heads=n_heads, image_size=28, patch_size=7,
                                    projection_dim=d_model)
        image_id = tok.convert_tokens_to_ids("<image>")
        cfg = T.LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                            vision_feature_layer=-1, vision_feature_select_strategy="default",
                            image_seq_length=16)
        model = T.LlavaForConditionalGeneration(cfg)
        image_proc = T.CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                          do_center_crop=True)
        processor = T.LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=7,
                                     vision_feature_select_strategy="default", image_token="<image>",
                                     num_additional_image_tokens=1)
    else:
        cfg = _config(arch, vocab, n_layers, d_model, n_heads)
        cls = T.BertModel if arch == "bert" else T.AutoModelForCausalLM
        model = cls(cfg) if arch == "bert" else cls.from_config(cfg)
        processor = None
    model.eval()
    return LoadedModel(model, tok, name=f"tiny-{arch}", processor=processor)


def synthetic_areas(n_docs: int = 1000, n_layers: int = 31, grid: int = 10, n_labels: int = 6, seed: int = 0):
    """An :class:`~mri_widgets.ActivationAreas` of random 2-D coordinates, no model: for large-size tests.

    Each document's 2-D point drifts from layer to layer (a random walk with a pull towards its
    label's centre), so regions cluster by label and neighbouring layers share documents like a
    real corpus does. ``pooled`` holds the same points, so ``with_options`` works.
    """
    import numpy as np

    from .analysis.areas import ActivationAreas
    from .corpus import Corpus

    if n_docs < 3 or n_layers < 1 or n_labels < 1:
        raise ValueError("synthetic_areas needs n_docs >= 3, n_layers >= 1 and n_labels >= 1")
    rng = np.random.default_rng(seed)
    names = [f"label{i}" for i in range(n_labels)]
    lab = rng.integers(0, n_labels, n_docs)
    centres = rng.normal(0, 2, (n_layers, n_labels, 2))
    pts = rng.normal(0, 1, (n_docs, 2))
    coords = np.empty((n_layers, n_docs, 2))
    for l in range(n_layers):
        pts = 0.6 * pts + 0.4 * centres[l, lab] + rng.normal(0, 0.5, (n_docs, 2))
        coords[l] = pts
    corpus = Corpus([f"document {i} ({names[k]})" for i, k in enumerate(lab)], [names[k] for k in lab])
    areas = object.__new__(ActivationAreas)
    areas.model, areas.corpus, areas.site, areas.pool = None, corpus, "resid", "mean"
    areas.pooled = np.ascontiguousarray(coords.transpose(1, 0, 2), dtype=np.float32)
    areas.layer_ids = list(range(n_layers))
    areas._fit("pca", grid, 2, 0, 0.3, progress=False)
    return areas


def synthetic_lens(n_tokens: int = 2000, n_layers: int = 33, k: int = 20, vocab: int = 50257, seed: int = 0):
    """A :class:`~mri_widgets.LensResult` of random numbers, no model: for large-size tests.

    ``n_layers`` columns (embeddings included), ``n_tokens`` positions, top-``k`` ids drawn from
    a ``vocab``-sized vocabulary whose token ``i`` reads ``" w{i}"``; probabilities descend
    along k; the target at each position is the last layer's top-1.
    """
    import numpy as np

    from .analysis.lens import LensResult

    if n_tokens < 1 or n_layers < 1 or k < 1 or vocab < k:
        raise ValueError("synthetic_lens needs n_tokens, n_layers, k >= 1 and vocab >= k")
    rng = np.random.default_rng(seed)
    L, S = n_layers, n_tokens
    top_ids = rng.integers(0, vocab, (L, S, k))
    probs = -np.sort(-rng.random((L, S, k), dtype=np.float32), axis=-1) / k
    pool = np.array([f" w{i}" for i in range(vocab)], dtype=object)
    ids = rng.integers(0, vocab, S)
    return LensResult(prompt=" ".join(f"t{i}" for i in range(S)), tokens=[f" t{i}" for i in range(S)],
                      input_ids=ids, layer_names=["emb"] + [str(i) for i in range(1, L)], top_ids=top_ids,
                      top_tokens=pool[top_ids], top_probs=np.ascontiguousarray(probs),
                      entropy=(rng.random((L, S), dtype=np.float32) * 8).astype(np.float32),
                      target_ids=top_ids[-1, :, 0], target_tokens=[str(x) for x in pool[top_ids[-1, :, 0]]],
                      target_probs=np.ascontiguousarray(probs[..., 0]),
                      target_ranks=np.zeros((L, S), np.int64), model_name="synthetic", vocab_size=vocab)
