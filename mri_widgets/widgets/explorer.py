"""Explorer: every view around one shared Selection."""

from __future__ import annotations

import html
from typing import Callable, Optional, Sequence

import ipywidgets as ipw

from .base import reject_unknown_keywords
from .selection import SELECTION_KEYS, Selection

__all__ = ["Explorer"]


def _notice(text: str, kind: str = "info") -> ipw.HTML:
    colour = {"info": ("#f3f6fa", "#234", "#cdd9e5"), "error": ("#fdf0f0", "#8a1f1f", "#f0c2c2")}[kind]
    return ipw.HTML(
        f'<div class="mri-explorer-notice" style="padding:8px 10px;border-radius:4px;background:{colour[0]};'
        f'color:{colour[1]};border:1px solid {colour[2]};font-size:12px">{html.escape(text)}</div>')


def _title(text: str) -> ipw.HTML:
    return ipw.HTML(f'<div style="font-weight:600;font-size:14px;margin:10px 0 4px">{html.escape(text)}</div>')


@reject_unknown_keywords
class Explorer(ipw.VBox):
    """One layout of every view around one shared :class:`Selection`.

    Picking a layer, token, neuron, head or region in one view updates the others: in the front
    end where views can reach the shared Selection (JupyterLab, Notebook 7, VS Code), and through
    Python where they cannot (Colab's separate output frames). A view that has no data yet says
    how to get it instead of failing.

    Parameters
    ----------
    model : LoadedModel or anything :func:`mri_widgets.load` accepts (``"demo"``, ``"gpt2"`` ...).
    corpus : :class:`~mri_widgets.Corpus`, optional
        A labelled corpus for the activation regions (layer grid and co-activation graph) and for
        scanning neurons; e.g. ``mri_widgets.datasets.emotions()``.
    prompt : str, optional
        A prompt for the logit lens and the information-flow graph.
    scan : :class:`~mri_widgets.NeuronScan`, optional
        A finished neuron scan for the neuron viewer. Without one, a button scans ``corpus``.
    selection : Selection, optional
        The shared selection (a new one by default), also at ``.selection``.
    head_texts : list of str, optional
        Texts for the attention-head map (default: the first 8 texts of ``corpus``, else the prompt).
    scan_layers : layers the corpus scan covers (default: every layer).
    areas_options : dict, optional
        Keyword arguments for :class:`~mri_widgets.ActivationAreas` (``pool``, ``grid``, ``layers`` ...).
    flow_layers : layers shown in the flow graph (default: its own default, the last few layers).

    Attributes
    ----------
    interventions : the shared :class:`~mri_widgets.Interventions` (shown above the views): the
        head map, flow graph and neuron viewer add ablations to it, the flow graph and the lens
        table recompute under it (the lens table beside the clean run); ``ex.interventions.ablate(("head", 21, 7))`` from Python; mean ablation uses
        the corpus.
    views : dict of the view widgets by name (``"lens"``, ``"flow"``, ``"grid"``, ``"graph"``,
        ``"neurons"``, ``"heads"``); a view that could not be built is absent.
    areas, scan : the ActivationAreas and NeuronScan behind the region and neuron views.
    """

    def __init__(self, model, corpus=None, *, prompt: Optional[str] = None, scan=None,
                 selection: Optional[Selection] = None, head_texts: Optional[Sequence[str]] = None,
                 scan_layers=None, areas_options: Optional[dict] = None, flow_layers=None):
        from ..models.loading import load

        if selection is not None and not isinstance(selection, Selection):
            raise TypeError(f"selection must be a mri_widgets.Selection, got {type(selection).__name__}")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if corpus is not None:
            from ..corpus import Corpus
            if not isinstance(corpus, Corpus):
                raise TypeError("corpus must be a mri_widgets.Corpus: build one with Corpus(texts, labels) "
                                "or use mri_widgets.datasets.emotions()")
        super().__init__()
        self.model = load(model)
        self.selection = selection if selection is not None else Selection()
        self.corpus = corpus
        self.prompt = prompt
        self.scan = scan
        self.areas = None
        self.views: dict = {}
        self._scan_layers = scan_layers
        self._areas_options = dict(areas_options or {})
        self._flow_layers = flow_layers
        self._head_texts = list(head_texts) if head_texts is not None else None

        from .interventions import Interventions
        self.interventions = Interventions(corpus=None if corpus is None else list(corpus.texts), model=self.model,
                                           selection=self.selection)
        self._status = ipw.HTML()
        self.selection.observe(self._show_selection, names=list(SELECTION_KEYS))
        self._show_selection()
        self._neuron_box = ipw.VBox()
        sections = [
            ipw.HTML(f'<div style="font-size:16px;font-weight:700">mri_widgets explorer: '
                     f'{html.escape(str(self.model.name))}</div>'),
            self._status,
            _title("Interventions: ablations applied to the runs below"), self.interventions,
            _title("Logit lens: each layer's guess at each token"), self._build("lens", self._lens),
            _title("Information flow into the prediction"), self._build("flow", self._flow),
            _title("Activation regions of the corpus"), self._build("grid", self._regions),
            _title("Neurons"), self._neuron_box,
            _title("Attention heads"), self._build("heads", self._heads),
        ]
        self._neuron_box.children = [self._build("neurons", self._neurons)]
        self.children = sections
        self.selection.observe(self._follow_position, names=["position"])

    # ---- sections --------------------------------------------------------------------------
    def _build(self, name: str, make: Callable[[], ipw.Widget]) -> ipw.Widget:
        try:
            return make()
        except Exception as e:  # one view failing must not take the others down
            return _notice(f"{name}: {type(e).__name__}: {e}", "error")

    def _need_causal(self, what: str) -> Optional[ipw.Widget]:
        if self.model.is_encoder:
            return _notice(f"{what} needs a causal language model; {self.model.name} is an encoder. "
                           "Load one such as mw.load('demo') or mw.load('gpt2').")
        return None

    def _lens(self) -> ipw.Widget:
        if self.prompt is None:
            return _notice("No prompt yet: pass Explorer(model, prompt='The capital of France is').")
        blocked = self._need_causal("The logit lens")
        if blocked:
            return blocked
        from .lens_table import LensTable
        self.views["lens"] = LensTable(self.model, self.prompt, selection=self.selection,
                                       interventions=self.interventions)
        return self.views["lens"]

    def _flow(self) -> ipw.Widget:
        if self.prompt is None:
            return _notice("No prompt yet: pass Explorer(model, prompt='The capital of France is').")
        blocked = self._need_causal("The information-flow graph")
        if blocked:
            return blocked
        from .flow_graph import FlowGraph
        kw = {} if self._flow_layers is None else {"layers": self._flow_layers}
        self.views["flow"] = FlowGraph(self.model, self.prompt, selection=self.selection,
                                       interventions=self.interventions, **kw)
        return self.views["flow"]

    def _regions(self) -> ipw.Widget:
        if self.corpus is None:
            return _notice("No corpus yet: pass Explorer(model, corpus=mw.datasets.emotions()) or "
                           "corpus=mw.Corpus(texts, labels) to see the activation regions.")
        from ..analysis.areas import ActivationAreas
        from .coactivation import CoactivationGraph
        from .layer_grid import LayerGrid
        self.areas = ActivationAreas(self.model, self.corpus, **self._areas_options)
        self.views["grid"] = LayerGrid(self.areas, mode="all", selection=self.selection)
        self.views["graph"] = CoactivationGraph(self.areas, selection=self.selection)
        return ipw.VBox([self.views["grid"], self.views["graph"]])

    def _neurons(self) -> ipw.Widget:
        from .neuron_viewer import NeuronViewer
        if self.scan is not None:
            texts = None if getattr(self.scan, "texts", None) else (self.corpus.texts if self.corpus else None)
            self.views["neurons"] = NeuronViewer(self.scan, self.model, texts, selection=self.selection,
                                                 interventions=self.interventions)
            return self.views["neurons"]
        if self.corpus is None:
            return _notice("No neuron scan yet: pass scan=mw.NeuronScan.run(model, texts) or a corpus "
                           "to scan from here.")
        n = len(self.corpus)
        layers = "every layer" if self._scan_layers is None else f"layers {list(self._scan_layers)}"
        button = ipw.Button(description=f"Scan {n} texts", icon="search", button_style="primary",
                            tooltip=f"NeuronScan.run over the corpus, {layers}")
        out = ipw.Output()
        note = _notice(f"Scan the corpus ({n} texts, {layers}) to find each neuron's most activating texts.")

        def run(_):
            button.disabled = True
            button.description = "Scanning…"
            with out:
                try:
                    self.run_scan()
                except Exception as e:
                    button.disabled = False
                    button.description = f"Scan {n} texts"
                    out.append_display_data(_notice(f"{type(e).__name__}: {e}", "error"))

        button.on_click(run)
        return ipw.VBox([note, button, out])

    def run_scan(self, **kwargs):
        """Scan the corpus (``NeuronScan.run``) and show the neuron viewer; returns the scan."""
        from ..analysis.neurons import NeuronScan
        if self.corpus is None:
            raise ValueError("no corpus to scan: pass Explorer(model, corpus=...) or scan=...")
        kwargs.setdefault("layers", self._scan_layers)
        self.scan = NeuronScan.run(self.model, self.corpus.texts, **kwargs)
        self._neuron_box.children = [self._build("neurons", self._neurons)]
        return self.scan

    def _heads(self) -> ipw.Widget:
        texts = self._head_texts
        if texts is None:
            if self.corpus is not None:
                texts = list(self.corpus.texts[:8])
            elif self.prompt is not None:
                texts = [self.prompt]
        if not texts:
            return _notice("No texts for the head map yet: pass head_texts=[...], a corpus or a prompt.")
        from .head_map import HeadMap
        self.views["heads"] = HeadMap(self.model, texts, selection=self.selection, interventions=self.interventions)
        return self.views["heads"]

    # ---- linking through Python ------------------------------------------------------------
    def _show_selection(self, change=None) -> None:
        s = self.selection
        parts = []
        for k in SELECTION_KEYS:
            v = getattr(s, k)
            parts.append(f"<b>{k}</b> {html.escape(str(v)) if v is not None else '–'}")
        self._status.value = ('<div class="mri-explorer-selection" style="font-size:12px;color:#444">Selection: '
                              + " · ".join(parts) + "</div>")

    def _follow_position(self, change) -> None:
        """A token picked in the lens (or anywhere, within the prompt) re-centres the flow graph."""
        flow = self.views.get("flow")
        pos = change["new"]
        if flow is None or pos is None:
            return
        n = len(self.views["lens"].result.tokens) if "lens" in self.views else None
        if n is not None and 0 <= pos < n and flow.position != pos:
            try:
                flow.position = pos
            except Exception as e:  # keep the explorer alive; the flow view shows the error
                flow.error = f"{type(e).__name__}: {e}"
