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


class FakeComm:
    """A widget comm that records what Python sends (data, buffers) instead of sending it."""

    def __init__(self):
        self.sent = []
        self.comm_id = "fake"
        self.kernel = True

    def send(self, data=None, metadata=None, buffers=None):
        self.sent.append((data, buffers))

    def on_msg(self, cb):
        pass

    def close(self, *a, **k):
        pass
