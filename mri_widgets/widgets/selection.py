"""The shared selection: one view-less widget that every view follows."""

from __future__ import annotations

import ipywidgets as ipw
import traitlets as t

__all__ = ["Selection", "SELECTION_KEYS"]

SELECTION_KEYS = ("layer", "position", "neuron", "head", "region", "label")


class Selection(ipw.Widget):
    """What the user is looking at: a layer, token position, neuron, head, region and label.

    Every view accepts ``selection=`` and follows it in the front end; clicking in a view sets it.
    Each trait is ``None`` when unset. ``region`` is a region index within ``layer`` and
    ``label`` a corpus label name.

    Examples
    --------
    >>> sel = Selection()
    >>> sel.layer = 3            # every linked view moves to layer 3
    >>> sel.observe(lambda ch: print(ch.new), "neuron")
    """

    layer = t.Int(None, allow_none=True).tag(sync=True)
    position = t.Int(None, allow_none=True).tag(sync=True)
    neuron = t.Int(None, allow_none=True).tag(sync=True)
    head = t.Int(None, allow_none=True).tag(sync=True)
    region = t.Int(None, allow_none=True).tag(sync=True)
    label = t.Unicode(None, allow_none=True).tag(sync=True)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(SELECTION_KEYS)
        if unknown:
            raise TypeError(f"unknown selection keys {sorted(unknown)}; known: {SELECTION_KEYS}")
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in SELECTION_KEYS}

    def update(self, **values) -> None:
        """Set several keys at once (one front-end message)."""
        unknown = set(values) - set(SELECTION_KEYS)
        if unknown:
            raise TypeError(f"unknown selection keys {sorted(unknown)}; known: {SELECTION_KEYS}")
        with self.hold_sync():
            for k, v in values.items():
                setattr(self, k, v)

    def clear(self) -> None:
        self.update(**{k: None for k in SELECTION_KEYS})

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if v is not None)
        return f"Selection({items})"
