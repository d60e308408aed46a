"""Feed-forward neurons as key-value memories (after Geva et al. 2021).

A neuron's *keys* are the inputs that make it fire (the texts and positions where its activation
is highest, from a :class:`~mri_widgets.NeuronScan`); its *value* is its output row, the
direction it adds to the residual stream, read in the vocabulary through the final norm and the
unembedding: the tokens it promotes and those it suppresses.
"""

from __future__ import annotations

from typing import Optional, Sequence


from ..models.loading import as_loaded_model
from .neurons import neuron_logit_effect

__all__ = ["neuron_memory"]


class NeuronMemoryError(ValueError):
    """Bad input to the key-value memory analysis."""


def neuron_memory(model, layer: int, neuron: int, scan=None, k: int = 10, *,
                  texts: Optional[Sequence[str]] = None, context: int = 8) -> dict:
    """A feed-forward neuron as a key-value memory.

    Parameters
    ----------
    model : LoadedModel (a causal LM: the values need the unembedding)
    layer, neuron : which MLP neuron (index into the d_mlp activations captured at site ``"mlp"``)
    scan : a :class:`~mri_widgets.NeuronScan` (anything with ``top(layer, neuron)`` returning
        ``(value, text_index, position)`` tuples, best first); gives the keys. ``None``: values only.
    k : how many promoted / suppressed tokens and keys
    texts : the texts the scan ran on, when the scan does not keep them (``scan.texts``)
    context : tokens of the prefix shown before each key's position

    Returns
    -------
    dict with
        ``promotes`` : list of ``(token, logit)``, the ``k`` tokens whose logits the neuron's output
        row raises most, largest first: ``unembed(w) - unembed(0)`` for the output row ``w``, i.e.
        through the final norm (rescaled to unit RMS, centred for LayerNorm, with its gain) and the
        unembedding, without the biases (:func:`mri_widgets.analysis.neurons.neuron_output_logits`);
        a negative activation swaps the roles of the two lists;
        ``suppresses`` : the ``k`` tokens it lowers most, most negative first;
        ``keys`` : list of dicts ``{"value", "text_index", "position", "token", "prefix", "text"}``
        (empty without a scan): where the neuron fires most, ``prefix`` being the text up to and
        including the firing token (its last ``context`` tokens);
        ``layer``, ``neuron``; with a scan that has them, ``stats`` (``scan.stats(layer, neuron)``:
        max, mean, frequency of firing ...).

    Examples
    --------
    >>> m = mri_widgets.neuron_memory(lm, 3, 1200, scan=scan)
    >>> m["promotes"][:3]
    [(' Paris', 0.71), ...]
    """
    lm = as_loaded_model(model)
    from .._checks import check_int
    k = check_int(k, "k", min=1, error=NeuronMemoryError, hint=" (k is a positive integer: tokens per list)")
    effect = neuron_logit_effect(lm, layer, neuron, k=k)
    promotes = [(tok, logit) for tok, _, logit in effect["promoted"]]
    suppresses = [(tok, logit) for tok, _, logit in effect["suppressed"]]
    out = {"layer": effect["layer"], "neuron": int(neuron), "promotes": promotes, "suppresses": suppresses,
           "keys": []}
    if scan is not None:
        out["keys"] = _keys(lm, scan, layer, neuron, int(k), texts, context)
        if hasattr(scan, "stats"):
            out["stats"] = scan.stats(layer, neuron)
    return out


def _keys(lm, scan, layer, neuron, k, texts, context) -> list:
    if not hasattr(scan, "top"):
        raise TypeError(f"scan must be a NeuronScan (with .top(layer, neuron)), got {type(scan).__name__}")
    texts = texts if texts is not None else getattr(scan, "texts", None)
    if texts is None:
        raise NeuronMemoryError("this scan does not keep its texts: pass texts=[...] (the texts it ran on)")
    texts = list(texts)
    rows = list(scan.top(layer, neuron))
    rows = sorted(rows, key=lambda r: -float(r[0]))[:k]
    out = []
    for value, ti, pos in rows:
        ti, pos = int(ti), int(pos)
        if not 0 <= ti < len(texts):
            raise NeuronMemoryError(f"the scan names text {ti} but only {len(texts)} texts were given")
        text = texts[ti]
        ids = lm.tokenizer(text)["input_ids"]
        if not 0 <= pos < len(ids):
            raise NeuronMemoryError(f"the scan names position {pos} of text {ti}, which has {len(ids)} tokens; "
                               "were the texts truncated differently?")
        toks = lm.token_str(ids[max(0, pos - context + 1):pos + 1])
        out.append({"value": float(value), "text_index": ti, "position": pos, "token": toks[-1],
                    "prefix": ("…" if pos - context + 1 > 0 else "") + "".join(toks), "text": text})
    return out

