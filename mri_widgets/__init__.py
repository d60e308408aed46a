"""mri_widgets: live, linked Jupyter widgets for looking inside transformer language models.

Start with ``lm = mri_widgets.load("demo")`` (offline) or ``mri_widgets.load("gpt2")``, then
open a view: ``mri_widgets.LensTable(lm, "The capital of France is")``.

Public names are imported lazily, so ``import mri_widgets`` stays fast.
"""

from importlib import import_module

from ._version import __version__

#: public name -> module that defines it
_PUBLIC = {
    # models: loading, adapters, capture
    "load": "mri_widgets.models.loading",
    "LoadedModel": "mri_widgets.models.loading",
    "Capture": "mri_widgets.models.capture",
    "CaptureBatch": "mri_widgets.models.capture",
    "trace_graph": "mri_widgets.models.trace",
    "Ablate": "mri_widgets.models.interventions",
    "Patch": "mri_widgets.models.interventions",
    "Steer": "mri_widgets.models.interventions",
    # data
    "Corpus": "mri_widgets.corpus",
    # analysis
    "logit_lens": "mri_widgets.analysis.lens",
    "LensResult": "mri_widgets.analysis.lens",
    "ActivationAreas": "mri_widgets.analysis.areas",
    "graph_metrics": "mri_widgets.analysis.graph_metrics",
    "NeuronScan": "mri_widgets.analysis.neurons",
    "head_distances": "mri_widgets.analysis.heads",
    "neuron_memory": "mri_widgets.analysis.memory",
    "flow_graph": "mri_widgets.analysis.flow",
    "patching": "mri_widgets.analysis.patching",
    "PatchingResult": "mri_widgets.analysis.patching",
    # widgets
    "Selection": "mri_widgets.widgets.selection",
    "TokenHeat": "mri_widgets.widgets.token_heat",
    "LensTable": "mri_widgets.widgets.lens_table",
    "PatchingTable": "mri_widgets.widgets.patching_table",
    "LayerGrid": "mri_widgets.widgets.layer_grid",
    "CoactivationGraph": "mri_widgets.widgets.coactivation",
    "NeuronViewer": "mri_widgets.widgets.neuron_viewer",
    "HeadMap": "mri_widgets.widgets.head_map",
    "GraphView": "mri_widgets.widgets.graph_view",
    "FlowGraph": "mri_widgets.widgets.flow_graph",
    "Explorer": "mri_widgets.widgets.explorer",
    "Interventions": "mri_widgets.widgets.interventions",
    # sharing
    "save_html": "mri_widgets.widgets.share",
    # bqplot charts (optional dependency: pip install "mri_widgets[charts]")
    "LayerTrace": "mri_widgets.widgets.charts",
    "AreaMetrics": "mri_widgets.widgets.charts",
    "NeuronHistogram": "mri_widgets.widgets.charts",
}

__all__ = ["__version__", *_PUBLIC, "datasets", "testing", "jobs"]


def __getattr__(name):
    if name in ("datasets", "testing", "models", "analysis", "widgets", "jobs"):
        return import_module(f"mri_widgets.{name}")
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mri_widgets' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
