"""Interventions: the shared list of ablations (patches, steering) that views add to and runs apply.

One :class:`Interventions` widget is held by the :class:`~mri_widgets.Explorer` and passed to the
views (``interventions=``). Views with a head or neuron selected offer "ablate (zero / mean)"
buttons that call :meth:`Interventions.ablate`; the widget lists the interventions with a
checkbox each (enable / disable) and a remove button. ``lm.intervene(interventions)`` applies the
enabled ones; views that show a run (the :class:`~mri_widgets.FlowGraph`) observe the widget's
``version`` and recompute under them.

:class:`AblationControls` is the base of the views that offer the ablate buttons.
"""

from __future__ import annotations

import itertools
from typing import Optional

import traitlets as t

from ..models.interventions import Ablate, Intervention, InterventionError
from .base import MRIWidget, command
from .selection import Selection

__all__ = ["Interventions", "AblationControls"]

_KINDS = {"Ablate": "ablate", "Patch": "patch", "Steer": "steer"}


def _unit_key(target):
    """``("head", 21, 7)`` / ``("neuron", 3, 5)`` as a hashable tuple of plain ints, else the target itself."""
    if isinstance(target, (tuple, list)) and len(target) == 3 and target[0] in ("head", "neuron"):
        kind, layer, idx = target
        for name, v in (("layer", layer), (kind, idx)):
            if isinstance(v, bool) or not hasattr(v, "__index__"):
                raise InterventionError(f"{kind} target ({kind!r}, layer, index) needs integers, got {name} {v!r}")
        return (kind, int(layer), int(idx))
    if isinstance(target, list):
        return tuple(target)
    return target


class Interventions(MRIWidget):
    """The interventions in effect, shared by every view, toggled in its own small view.

    Parameters
    ----------
    items : interventions to start with (:class:`~mri_widgets.Ablate`, :class:`~mri_widgets.Patch`,
        :class:`~mri_widgets.Steer`), optional.
    corpus : texts (list of str or a :class:`~mri_widgets.Corpus`) whose mean activation replaces a
        target in mean ablation (``ablate(..., mode="mean")`` without its own ``corpus``).
    model : LoadedModel, optional: targets given to :meth:`ablate` are checked against it at once
        (an out-of-range head fails here rather than in the next run).
    selection : the shared :class:`Selection`.

    Use it as ``with lm.intervene(interventions): ...``: only the enabled interventions
    (:attr:`active`) apply. Every change (add, remove, toggle, clear) increments :attr:`version`;
    observe it (``interventions.observe(fn, "version")``) to recompute.

    Examples
    --------
    >>> iv = mw.Interventions(corpus=mw.datasets.emotions())
    >>> iv.ablate(("head", 21, 7))                # zero ablation
    >>> iv.ablate(("neuron", 20, 693), mode="mean")
    >>> iv.toggle(0)                             # disable the first; iv.toggle(0, True) enables it
    >>> with lm.intervene(iv):
    ...     res = mw.logit_lens(lm, "The Eiffel Tower is in the city of")
    """

    _view = "interventions"

    #: one entry per intervention: ``{id, label, kind, enabled, target, mode}`` (``target``:
    #: ``[kind, layer, index]`` for a head or neuron, else None; ``mode``: an ablation's mode, else None)
    entries = t.List(t.Dict()).tag(sync=True)
    #: incremented by every change; observe it to recompute
    version = t.Int(0).tag(sync=True)
    #: whether mean ablation has a corpus
    has_corpus = t.Bool(False).tag(sync=True)

    def __init__(self, items=None, *, corpus=None, model=None, selection: Optional[Selection] = None):
        if corpus is not None and isinstance(corpus, str):
            raise TypeError("corpus must be a list of texts or a mri_widgets.Corpus, not a single string")
        self._items: list = []
        self._ids: list = []
        self._counter = itertools.count()
        self.corpus = corpus
        self._lm = None
        if model is not None:
            from ..models.loading import load
            self._lm = load(model)
        super().__init__(selection=selection)
        self.has_corpus = corpus is not None
        for it in list(items or []):
            self._append(it)
        self._changed()

    # ---- reading -----------------------------------------------------------------------------
    @property
    def items(self) -> list:
        """Every intervention held (enabled or not), in order."""
        return list(self._items)

    @property
    def active(self) -> list:
        """The enabled interventions: what ``lm.intervene(self)`` applies."""
        return [it for it in self._items if it.enabled]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def __getitem__(self, index):
        return self._items[index]

    def find(self, target, mode: Optional[str] = None) -> Optional[int]:
        """Index of the ablation of ``target`` (with ``mode``, when given), or None."""
        key = _unit_key(target)
        for i, it in enumerate(self._items):
            if isinstance(it, Ablate) and _unit_key(it.target) == key and it.layers is None \
                    and it.positions is None and (mode is None or it.mode == mode):
                return i
        return None

    # ---- changing ----------------------------------------------------------------------------
    def ablate(self, target, mode: str = "zero", corpus=None) -> Ablate:
        """Ablate ``target`` (``("head", layer, h)``, ``("neuron", layer, i)``) by ``mode``
        (``"zero"`` or ``"mean"``); returns the :class:`~mri_widgets.Ablate`.

        Mean ablation uses ``corpus``, else the widget's own ``corpus``. Ablating a target again
        with the same mode adds nothing: the existing ablation is returned (and enabled again).
        """
        if mode not in ("zero", "mean"):
            raise InterventionError(f"mode must be 'zero' or 'mean', got {mode!r}")
        key = _unit_key(target)
        if mode == "mean" and corpus is None:
            corpus = self.corpus
            if corpus is None:
                raise InterventionError("mean ablation needs a corpus: pass ablate(target, mode='mean', corpus=texts) "
                                        "or Interventions(corpus=texts); or use mode='zero'")
        if self._lm is not None:
            from ..models.interventions import _resolve_target
            tgt = _resolve_target(self._lm.adapter, key, None)  # a clear error now, not in the next run
            if isinstance(key, tuple) and tgt.unit is not None:  # negative indices counted from the end
                width = self._lm.adapter.d_head if key[0] == "head" else 1
                key = (key[0], tgt.layers[0], tgt.unit.start // width)
        i = self.find(key, mode)
        if i is not None:
            it = self._items[i]
            if not it.enabled:
                it.enabled = True
                self._changed()
            return it
        it = Ablate(key, mode=mode, corpus=corpus)
        self._append(it)
        self._changed()
        return it

    def add(self, intervention: Intervention) -> Intervention:
        """Add an :class:`~mri_widgets.Ablate`, :class:`~mri_widgets.Patch` or
        :class:`~mri_widgets.Steer` (the same object twice is added once); returns it."""
        if any(it is intervention for it in self._items):
            return intervention
        self._append(intervention)
        self._changed()
        return intervention

    def remove(self, index: int) -> Intervention:
        """Remove the intervention at ``index``; returns it."""
        i = self._index(index)
        it = self._items.pop(i)
        self._ids.pop(i)
        self._changed()
        return it

    def toggle(self, index: int, enabled: Optional[bool] = None) -> Intervention:
        """Enable or disable the intervention at ``index`` (``enabled=None``: flip it); returns it."""
        i = self._index(index)
        if enabled is not None and not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True, False or None (flip), got {enabled!r}")
        it = self._items[i]
        it.enabled = (not it.enabled) if enabled is None else enabled
        self._changed()
        return it

    def clear(self) -> None:
        """Remove every intervention."""
        self._items.clear()
        self._ids.clear()
        self._changed()

    def refresh(self) -> None:
        """Tell the views after changing an intervention object directly (``iv[0].enabled = False``)."""
        self._changed()

    # ---- the view's commands (by stable id: an index may have moved meanwhile) ------------------
    @command
    def toggle_entry(self, id: int, enabled: Optional[bool] = None) -> list:
        """From the view: enable / disable the entry with ``id``; returns the entries."""
        self.toggle(self._index_of_id(id), None if enabled is None else bool(enabled))
        return self.entries

    @command
    def remove_entry(self, id: int) -> list:
        """From the view: remove the entry with ``id``; returns the entries."""
        self.remove(self._index_of_id(id))
        return self.entries

    @command
    def clear_entries(self) -> list:
        """From the view: remove every entry."""
        self.clear()
        return self.entries

    # ---- internals ---------------------------------------------------------------------------
    def _append(self, it) -> None:
        if not isinstance(it, Intervention):
            raise InterventionError(f"not an intervention: {it!r}; pass mw.Ablate(...), mw.Patch(...) or mw.Steer(...)")
        self._items.append(it)
        self._ids.append(next(self._counter))

    def _index(self, index) -> int:
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {index!r}")
        n = len(self._items)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range: there {'is' if n == 1 else 'are'} {n} intervention"
                             f"{'' if n == 1 else 's'}")
        return index % n

    def _index_of_id(self, id) -> int:
        try:
            return self._ids.index(int(id))
        except (ValueError, TypeError):
            raise IndexError(f"no intervention with id {id!r} (it was removed)") from None

    def _entry(self, it, id_) -> dict:
        target = _unit_key(getattr(it, "target", None))
        unit = isinstance(target, tuple) and len(target) == 3 and target[0] in ("head", "neuron") \
            and getattr(it, "layers", None) is None
        return {"id": id_, "label": str(it.label), "kind": _KINDS.get(type(it).__name__, type(it).__name__.lower()),
                "enabled": bool(it.enabled), "target": list(target) if unit else None,
                "mode": getattr(it, "mode", None) if isinstance(it, Ablate) else None}

    def _changed(self) -> None:
        with self.hold_sync():
            self.entries = [self._entry(it, i) for it, i in zip(self._items, self._ids)]
            self.version += 1

    def __repr__(self) -> str:
        rows = [f"  [{i}] {'x' if it.enabled else ' '} {it.label}" for i, it in enumerate(self._items)]
        return "Interventions(" + ("\n" + "\n".join(rows) + "\n" if rows else "") + ")"


class AblationControls(MRIWidget):
    """Base of the views that offer "ablate (zero / mean)" for the selected head or neuron.

    A subclass calls :meth:`_connect_interventions` with its ``interventions=`` argument. The
    synced ``ablation`` tells the view whether to show the buttons (empty: no
    :class:`Interventions`), whether mean ablation has a corpus, and which ablations are active.
    """

    #: ``{}`` without interventions; else ``{mean: bool, mean_note: str, active: [[kind, layer, index, mode]]}``
    ablation = t.Dict().tag(sync=True)

    interventions: Optional[Interventions] = None

    def _connect_interventions(self, interventions) -> None:
        if interventions is not None and not isinstance(interventions, Interventions):
            raise TypeError(f"interventions must be a mri_widgets.Interventions, got {type(interventions).__name__}")
        self.interventions = interventions
        if interventions is not None:
            interventions.observe(self._interventions_changed, names=["version"])
        self._push_ablation()

    def _interventions_changed(self, change) -> None:
        self._push_ablation()

    def _push_ablation(self) -> None:
        iv = self.interventions
        if iv is None:
            self.ablation = {}
            return
        active = [e["target"] + [e["mode"]] for e in iv.entries
                  if e["enabled"] and e["kind"] == "ablate" and e["target"] is not None]
        self.ablation = {"mean": iv.corpus is not None,
                         "mean_note": "" if iv.corpus is not None else
                         "mean ablation needs a corpus: pass Interventions(corpus=texts) (the Explorer's corpus=)",
                         "active": active}

    @command
    def ablate(self, kind: str, layer: int, index: int, mode: str = "zero") -> dict:
        """From the view: ablate the head or neuron ``(kind, layer, index)`` in the shared
        :class:`Interventions`; returns the intervention's entry."""
        if self.interventions is None:
            raise InterventionError(f"this {type(self).__name__} has no interventions: pass interventions=mw.Interventions()")
        if kind not in ("head", "neuron"):
            raise InterventionError(f"kind must be 'head' or 'neuron', got {kind!r}")
        it = self.interventions.ablate((kind, layer, index), mode=mode)
        i = next(j for j, x in enumerate(self.interventions.items) if x is it)
        return self.interventions.entries[i]
