import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools

import pytest


@functools.lru_cache(maxsize=None)
def _tiny(arch):
    from mri_widgets.testing import tiny_model
    return tiny_model(arch)


@pytest.fixture
def tiny():
    """tiny(arch) -> a cached tiny LoadedModel (do not mutate it)."""
    return _tiny


CAUSAL = ("gpt2", "gpt_neox", "llama", "gptj", "gpt_neo")
ALL_TEXT = CAUSAL + ("bert",)
