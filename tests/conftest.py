import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest


_TINY: dict = {}


def _tiny(arch):
    """A tiny model per architecture, built once per session."""
    if arch not in _TINY:
        from mri_widgets.testing import tiny_model
        _TINY[arch] = tiny_model(arch)
    return _TINY[arch]


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


class CappedComm(FakeComm):
    """A FakeComm that fails the test when a message (JSON text + binary buffers) passes ``cap`` bytes.

    Built by the ``capped_comms`` fixture for every widget opened while it is active, so the
    comm_open message (the initial state) is checked too.
    """

    def __init__(self, cap, data=None, buffers=None, **kw):
        super().__init__()
        self.cap = cap
        self.sizes = []
        self.send(data, buffers=buffers)

    def send(self, data=None, metadata=None, buffers=None):
        from mri_widgets.widgets.transport import message_bytes

        size = message_bytes(data, buffers)
        self.sizes.append(size)
        assert size <= self.cap, f"a message of {size / 2**20:.2f} MiB was sent (cap {self.cap / 2**20:.0f} MiB)"
        super().send(data, metadata, buffers)


@pytest.fixture
def capped_comms(monkeypatch):
    """Every widget comm opened in the test is a CappedComm (8 MiB); yields the list of them."""
    import ipywidgets.widgets.widget as W

    from mri_widgets.widgets.transport import MESSAGE_CAP

    made = []

    def create_comm(**kw):
        c = CappedComm(MESSAGE_CAP, kw.get("data"), kw.get("buffers"))
        made.append(c)
        return c

    monkeypatch.setattr(W.comm, "create_comm", create_comm)
    yield made



def _ours(fn) -> bool:
    """A hook function of this package or its tests (transformers installs hooks of its own, e.g. to
    record attentions, and keeps them)."""
    mod = getattr(fn, "__module__", "") or ""
    return mod.startswith(("mri_widgets", "test", "conftest"))


def our_hooks(model) -> int:
    """Forward hooks and pre-hooks of mri_widgets (or the tests) on any module of ``model``."""
    return sum(_ours(f) for m in model.modules() for d in (m._forward_hooks, m._forward_pre_hooks) for f in d.values())


@pytest.fixture(autouse=True)
def _no_leaked_hooks():
    """Every test leaves the shared tiny models without our hooks (interventions and captures remove theirs)."""
    yield
    for arch, lm in list(_TINY.items()):
        n = our_hooks(lm.model)
        if n:
            for m in lm.model.modules():  # remove them so one leak fails one test, not every later one
                for d in (m._forward_hooks, m._forward_pre_hooks):
                    for k in [k for k, f in d.items() if _ours(f)]:
                        del d[k]
            pytest.fail(f"this test left {n} forward hooks on the cached tiny {arch} model")
