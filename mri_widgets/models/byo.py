"""Bring your own model: unwrap TransformerLens and nnsight objects into the transformers model inside.

:func:`unwrap` is called by :func:`mri_widgets.load`. It works by duck typing, so neither package
needs to be installed for the rest of mri_widgets:

* nnsight ``LanguageModel`` (an ``Envoy`` around the transformers model): the model is its
  ``_module`` (``_model`` in older releases), the tokenizer its ``tokenizer``.
* TransformerLens 3/4 ``TransformerBridge``: the model is ``original_model`` and the tokenizer
  ``tokenizer``. The bridge wraps the model's sub-modules *in place* in its own components, each
  holding the transformers module as ``_original_component``; :func:`unwrap` rebuilds a view of
  the original module tree (new container objects sharing every parameter, leaf module and
  buffer with the bridge), so the bridge keeps working and mri_widgets sees plain transformers
  modules.
* ``HookedTransformer`` (TransformerLens up to 2.x) keeps its own re-implementation of the
  blocks, with ``W_Q`` / ``W_K`` / ``W_V`` / ``W_O`` as bare parameters (not projection modules)
  and usually folded layer norms: the hooks of mri_widgets' sites have nothing to attach to, so
  it is refused with an error that says what to pass instead.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

__all__ = ["unwrap", "UnsupportedModel"]


class UnsupportedModel(TypeError):
    """A model object mri_widgets cannot analyse (with what to pass instead)."""


def _cls_names(obj) -> set:
    return {c.__name__ for c in type(obj).__mro__}


def _is_bridge(obj) -> bool:
    return isinstance(obj, nn.Module) and ("TransformerBridge" in _cls_names(obj) or (
        isinstance(obj.__dict__.get("original_model"), nn.Module) and hasattr(obj, "tokenizer")))


def _is_nnsight(obj) -> bool:
    names = _cls_names(obj)
    if "LanguageModel" in names or "NNsight" in names or "Envoy" in names:
        return True
    return False


def _nnsight_module(obj) -> Optional[nn.Module]:
    d = getattr(obj, "__dict__", {})
    for key in ("_module", "_model"):
        m = d.get(key)
        if isinstance(m, nn.Module):
            return m
    return None


def _original(m: nn.Module) -> nn.Module:
    """Follow ``_original_component`` links (a bridge component -> the module it wraps)."""
    seen = 0
    while isinstance(m, nn.Module) and isinstance(m._modules.get("_original_component"), nn.Module):
        m = m._modules["_original_component"]
        seen += 1
        if seen > 100:
            raise UnsupportedModel("cyclic _original_component links in a TransformerBridge")
    return m


def unwrap_bridge_tree(root: nn.Module) -> nn.Module:
    """The module tree of ``root`` with every bridge component replaced by the module it wraps.

    Containers whose children change are shallow copies (their own ``_modules`` and hook dicts,
    the same parameters and buffers); unchanged sub-trees are the original objects. ``root`` is
    left as it is.
    """
    memo: dict[int, nn.Module] = {}

    def visit(m: nn.Module) -> nn.Module:
        m = _original(m)
        if id(m) in memo:
            return memo[id(m)]
        new_children = {}
        changed = False
        for name, child in m._modules.items():
            if child is None:
                new_children[name] = None
                continue
            nc = visit(child)
            changed |= nc is not child
            new_children[name] = nc
        if not changed:
            memo[id(m)] = m
            return m
        cp = m.__new__(type(m))
        cp.__dict__.update({k: (v.copy() if isinstance(v, dict) else v) for k, v in m.__dict__.items()})
        cp._modules = type(m._modules)(new_children)
        memo[id(m)] = cp
        return cp

    return visit(root)


def unwrap(model, tokenizer=None):
    """``(model, tokenizer)`` with TransformerLens / nnsight wrappers removed.

    Anything else is returned unchanged. A tokenizer passed explicitly wins over the wrapper's.
    Raises :class:`UnsupportedModel` for a ``HookedTransformer``.
    """
    names = _cls_names(model)
    if "HookedTransformer" in names or "HookedEncoder" in names or "HookedEncoderDecoder" in names:
        raise UnsupportedModel(
            f"{type(model).__name__} re-implements the model with bare W_Q/W_K/W_V/W_O parameters (and usually "
            "folded layer norms), so mri_widgets has no projection modules to hook. Pass the transformers model "
            "instead: mw.load('gpt2'), or mw.load(hf_model, tokenizer); with TransformerLens >= 3, a "
            "TransformerBridge works too: mw.load(TransformerBridge.boot_transformers('gpt2')).")
    if _is_bridge(model):
        inner = model.__dict__["original_model"]
        tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        return unwrap_bridge_tree(inner), tok
    if not isinstance(model, nn.Module) and _is_nnsight(model):
        inner = _nnsight_module(model)
        if inner is None:
            raise UnsupportedModel(
                f"this nnsight {type(model).__name__} holds no torch module yet (dispatch=False and not loaded?): "
                "create it with LanguageModel(name, dispatch=True) or pass the transformers model itself")
        if type(inner).__name__ == "MetaModel" or all(p.device.type == "meta" for p in inner.parameters()):
            raise UnsupportedModel(
                f"this nnsight {type(model).__name__} has not loaded its weights yet (they are on the meta device): "
                "create it with LanguageModel(name, dispatch=True), or run one trace first")
        tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        return unwrap_bridge_tree(inner), tok
    return model, tokenizer
