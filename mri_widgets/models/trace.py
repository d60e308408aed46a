"""The computation graph of any torch module, with activations fetchable by node id.

:func:`trace_graph` records what a module computes on example inputs as a
:class:`TraceGraph` (a ``networkx.DiGraph``): one node per operation (or per leaf-module call),
edges from the tensors each operation reads, and on every node its ``op``, ``module`` path and
activation ``shape``. Node ids are stable between runs, so nodes found once (e.g. the attention
softmaxes, :func:`find_attention`) can be read again on other inputs with
:func:`fetch_activations`.

Three ways to trace, tried in this order by ``method="auto"``:

``"fx"``
    ``torch.fx.symbolic_trace``: plain modules without data-dependent control flow.
``"export"``
    ``torch.export.export`` (non-strict, dynamic sizes where possible): most transformers models
    (``use_cache=False`` is passed when the forward accepts it). ATen-level ops.
``"functions"``
    One eager run under a ``TorchFunctionMode`` that records every torch function and tensor
    method returning tensors, with module paths from module hooks and edges from tensor
    provenance. Works for any module; fused kernels stay single nodes (``scaled_dot_product_attention``
    hides its softmax: switch the model to eager attention to see it).

``"modules"`` (never chosen automatically) keeps only leaf-module calls: a coarse graph of
``Linear``, ``LayerNorm``, ... joined through the functional code between them.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
import weakref
from collections import Counter, defaultdict
from typing import Iterable, Optional

import networkx as nx
import torch
from torch import nn

__all__ = [
    "TraceGraph",
    "TraceError",
    "trace_graph",
    "fetch_activations",
    "find_attention",
    "to_dot",
    "to_cytoscape",
    "METHODS",
]

METHODS = ("auto", "fx", "export", "functions", "modules")


class TraceError(ValueError):
    """A module could not be traced, or a node id / input does not fit the traced graph."""


# =============================================================================== the graph
class TraceGraph(nx.DiGraph):
    """A traced computation graph (a ``networkx.DiGraph``).

    Node attributes: ``op`` (short operation name: ``"softmax"``, ``"linear"``, ``"input"``,
    ``"output"``, or a module class name for leaf-module nodes), ``kind`` (``"input"``,
    ``"op"``, ``"module"``, ``"output"``), ``target`` (the full callable), ``module`` (dotted
    path of the innermost module that ran the op, ``""`` for the root), ``module_type`` (its class
    name), ``shape`` (tuple of ints of the (first) output tensor on the example inputs; ``None``
    if none), ``shapes`` (all output tensor shapes), ``dtype`` and ``order`` (execution order).
    ``G.graph`` holds ``method``, ``module_type``, ``inputs`` (input node ids) and ``runner``, the
    handle that re-runs the module for :meth:`fetch`.
    """

    def fetch(self, node_ids, *inputs, **kwargs) -> dict:
        """Activations of ``node_ids`` on new inputs (see :func:`fetch_activations`)."""
        return fetch_activations(self, node_ids, *inputs, **kwargs)

    def to_dot(self, **kwargs) -> str:
        """Graphviz DOT text (see :func:`to_dot`)."""
        return to_dot(self, **kwargs)

    def to_cytoscape(self, collapse_depth: Optional[int] = None, expanded: Iterable[str] = ()) -> list:
        """Cytoscape.js elements (see :func:`to_cytoscape`)."""
        return to_cytoscape(self, collapse_depth=collapse_depth, expanded=expanded)

    def find(self, op: Optional[str] = None, module: Optional[str] = None) -> list:
        """Node ids in execution order whose ``op`` equals ``op`` and whose module path starts
        with ``module`` (either may be None)."""
        out = []
        for n, d in self.nodes(data=True):
            if op is not None and d.get("op") != op:
                continue
            if module is not None and not _under(d.get("module", ""), module):
                continue
            out.append(n)
        return sorted(out, key=lambda n: self.nodes[n].get("order", 0))

    def __repr__(self) -> str:
        return (f"TraceGraph({self.graph.get('module_type', '?')}, method={self.graph.get('method')!r}, "
                f"{self.number_of_nodes()} nodes, {self.number_of_edges()} edges)")

    __str__ = __repr__


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + ".")


def _shapes(value) -> list:
    flat, _ = torch.utils._pytree.tree_flatten(value)
    return [tuple(int(s) for s in t.shape) for t in flat if isinstance(t, torch.Tensor)]


def _dtype(value) -> Optional[str]:
    flat, _ = torch.utils._pytree.tree_flatten(value)
    for t in flat:
        if isinstance(t, torch.Tensor):
            return str(t.dtype).replace("torch.", "")
    return None


# =============================================================================== entry point
def trace_graph(module, *example_inputs, method: str = "auto", example_kwargs: Optional[dict] = None,
                progress: bool = False) -> TraceGraph:
    """The computation graph of ``module`` run on ``example_inputs``.

    Parameters
    ----------
    module : torch.nn.Module, or a :class:`~mri_widgets.LoadedModel` (then a string example input
        is tokenised with its tokenizer).
    *example_inputs : positional inputs of ``module.forward`` (tensors or other values). A single
        dict (e.g. a tokenizer's output) is taken as keyword inputs.
    method : ``"auto"`` (fx, then export, then functions), ``"fx"``, ``"export"``,
        ``"functions"`` or ``"modules"``; see the module docstring.
    example_kwargs : keyword inputs of ``module.forward``.
    progress : print which method is tried (useful for slow exports of big models).

    Returns
    -------
    TraceGraph
        ``G.nodes[n]`` has ``op``, ``kind``, ``module``, ``shape`` ...; ``G.graph["method"]``
        says which method traced it. ``G.fetch(ids, *inputs)`` re-runs the module and returns the
        activations of those nodes; ``G.to_dot()`` gives Graphviz text.

    Examples
    --------
    >>> lm = mri_widgets.load("demo"); lm.model.set_attn_implementation("eager")
    >>> G = mri_widgets.trace_graph(lm, "The cat sat")
    >>> soft = find_attention(G)                  # one softmax per layer
    >>> acts = G.fetch(soft, lm.encode("Another text")["input_ids"])
    """
    if method not in METHODS:
        raise TraceError(f"unknown method {method!r}; choose one of {METHODS}")
    from .._checks import check_bool
    progress = check_bool(progress, "progress")
    module, lm, args, kwargs = _normalise_inputs(module, example_inputs, example_kwargs)
    was_training = module.training
    module.eval()
    errors = []
    order = {"auto": ("fx", "export", "functions")}.get(method, (method,))
    try:
        for m in order:
            if progress:
                print(f"trace_graph: trying {m} ...")
            try:
                if m == "fx":
                    G = _trace_fx(module, args, kwargs)
                elif m == "export":
                    G = _trace_export(module, args, kwargs)
                else:
                    G = _trace_recorded(module, args, kwargs, coarse=(m == "modules"))
                G.graph["loaded_model"] = lm
                return G
            except TraceError:
                raise
            except Exception as e:  # report every method's failure
                errors.append(f"{m}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
                if method != "auto":
                    break
        raise TraceError(f"could not trace {type(module).__name__}: " + " | ".join(errors)
                         + ". Check that module(*example_inputs) runs.")
    finally:
        module.train(was_training)


def _text_inputs(lm, args: list, kwargs: dict) -> tuple:
    """Replace a text input by its token ids (needs the LoadedModel's tokenizer)."""
    if not any(isinstance(a, str) for a in args):
        return args, kwargs
    if lm is None:
        raise TypeError("a text input needs a LoadedModel (trace_graph(lm, 'text')); for a bare module pass "
                        "token ids")
    new = []
    for a in args:
        if isinstance(a, str):
            kwargs.setdefault("input_ids", lm.encode(a)["input_ids"])
        else:
            new.append(a)
    return new, kwargs


def _normalise_inputs(module, example_inputs, example_kwargs):
    from .loading import LoadedModel

    kwargs = dict(example_kwargs or {})
    args = list(example_inputs)
    lm = module if isinstance(module, LoadedModel) else None
    if lm is not None:
        module = lm.model
    args, kwargs = _text_inputs(lm, args, kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module or a LoadedModel, got {type(module).__name__}")
    if len(args) == 1 and isinstance(args[0], dict) or (len(args) == 1 and hasattr(args[0], "keys")
                                                         and hasattr(args[0], "items") and not torch.is_tensor(args[0])):
        kwargs = {**dict(args[0].items()), **kwargs}
        args = []
    if not args and not kwargs:
        raise TraceError("give example inputs: trace_graph(module, x) runs module(x) once to trace it")
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        params = {}
    if "use_cache" in params and "use_cache" not in kwargs:
        kwargs["use_cache"] = False  # caches are outputs that tracing cannot follow
    return module, lm, tuple(args), kwargs


def _input_names(module, args, kwargs) -> list:
    try:
        names = [p for p in inspect.signature(module.forward).parameters if p not in ("self",)]
    except (TypeError, ValueError):  # pragma: no cover
        names = []
    out = []
    for i in range(len(args)):
        out.append(names[i] if i < len(names) and names[i] not in ("args", "kwargs") else f"input_{i}")
    return out + list(kwargs)


# =============================================================================== fx / export
_PATH_CLEAN = [(re.compile(r"^L\['self'\]\.?"), ""), (re.compile(r"\[(\d+)\]"), r".\1"),
               (re.compile(r"\['([^']+)'\]"), r".\1"), (re.compile(r"^\."), "")]


def _clean_path(p: str) -> str:
    for pat, rep in _PATH_CLEAN:
        p = pat.sub(rep, p)
    return p


def _fx_op_name(node) -> str:
    t = node.target
    if node.op == "call_function":
        packet = getattr(t, "overloadpacket", None)
        if packet is not None:
            return getattr(packet, "__name__", str(packet)).split(".")[-1]
        return getattr(t, "__name__", str(t)).strip("_") or str(t)
    if node.op == "call_method":
        return str(t).strip("_")
    return str(t)


class _Runner:
    """Re-runs a traced module; remembers how the example inputs were passed."""

    module: nn.Module

    def remember(self, args, kwargs) -> None:
        self.n_args = len(args)
        self.kw_names = list(kwargs)
        self.defaults = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}

    def restructure(self, args, kwargs) -> tuple:
        """Pass new inputs the way the example inputs were passed (positional / keyword)."""
        args, kwargs = list(args), dict(kwargs)
        if len(args) == 1 and not torch.is_tensor(args[0]) and hasattr(args[0], "items"):
            kwargs = {**dict(args[0].items()), **kwargs}
            args = []
        try:
            sig = inspect.signature(self.module.forward)
            bound = sig.bind_partial(*args, **kwargs).arguments
        except (TypeError, ValueError) as e:
            raise TraceError(f"inputs do not fit {type(self.module).__name__}.forward: {e}") from None
        names = [p for p in sig.parameters]
        values = dict(self.defaults)
        values.update(bound)
        pos_names = names[:self.n_args]
        missing = [n for n in pos_names + self.kw_names if n not in values]
        if missing:
            raise TraceError(f"missing inputs {missing}: pass them like the example inputs of trace_graph")
        extra = sorted(set(bound) - set(pos_names) - set(self.kw_names))
        if extra:
            raise TraceError(f"inputs {extra} were not given when tracing; the traced graph cannot take them")
        return tuple(values[n] for n in pos_names), {k: values[k] for k in self.kw_names}


class _FxRunner(_Runner):
    """Re-runs a GraphModule with an Interpreter that keeps the outputs of chosen nodes."""

    def __init__(self, gm, module, flatten: bool, method: str, input_names: list):
        self.gm = gm
        self.module = module
        self.flatten = flatten
        self.method = method
        self.input_names = input_names

    def _flat(self, args, kwargs):
        if self.flatten:
            flat, _ = torch.utils._pytree.tree_flatten((tuple(args), dict(kwargs)))
            return flat
        return list(args)

    def run(self, args, kwargs, want: Optional[set] = None, shapes: bool = False):
        keep: dict = {}
        info: dict = {}
        gm = self.gm

        class Rec(torch.fx.Interpreter):
            def run_node(self, n):
                r = super().run_node(n)
                if want is not None and n.name in want:
                    keep[n.name] = _detach(r)
                if shapes:
                    info[n.name] = (_shapes(r), _dtype(r))
                return r

        flat = self._flat(args, kwargs)
        with torch.no_grad():
            out = Rec(gm).run(*flat)
        return out, keep, info


def _detach(value):
    return torch.utils._pytree.tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, value)


def _graph_from_fx(gm, runner: _FxRunner, args, kwargs, method: str, root: nn.Module) -> TraceGraph:
    _, _, info = runner.run(args, dict(kwargs), shapes=True)
    G = TraceGraph()
    types = {name: type(m).__name__ for name, m in root.named_modules()}
    order = 0
    kept = set()
    input_ids = []
    for node in gm.graph.nodes:
        shp, dt = info.get(node.name, ([], None))
        if node.op == "get_attr":
            continue
        if node.op == "placeholder":
            if not shp:
                continue  # a constant input (use_cache=False ...)
            kind, op, path = "input", "input", ""
            input_ids.append(node.name)
        elif node.op == "output":
            kind, op, path = "output", "output", ""
        else:
            if not shp:
                continue  # sym sizes, Python scalars
            stack = node.meta.get("nn_module_stack") or {}
            path = ""
            if stack:
                last = list(stack.values())[-1]
                path = _clean_path(str(last[0] if isinstance(last, tuple) else last))
            if node.op == "call_module":
                path = str(node.target)
                kind, op = "module", types.get(path, "module")
            else:
                kind, op = "op", _fx_op_name(node)
        G.add_node(node.name, op=op, kind=kind, target=str(node.target), module=path,
                   module_type=types.get(path, ""), shape=shp[0] if shp else None, shapes=shp, dtype=dt,
                   order=order, label=node.name)
        order += 1
        kept.add(node.name)
    for node in gm.graph.nodes:
        if node.name not in kept:
            continue
        for src in node.all_input_nodes:
            for s in _kept_ancestors(src, kept):
                if s != node.name:
                    G.add_edge(s, node.name)
    G.graph.update(method=method, module_type=type(root).__name__, inputs=input_ids, runner=runner)
    return G


def _kept_ancestors(node, kept, memo=None):
    """Kept nodes reached from ``node`` going upstream through dropped (non-tensor) nodes."""
    if node.name in kept:
        return [node.name]
    memo = {} if memo is None else memo
    if node.name not in memo:
        memo[node.name] = []  # guards against revisiting
        out = []
        for src in node.all_input_nodes:
            if src.op != "get_attr":
                out.extend(_kept_ancestors(src, kept, memo))
        memo[node.name] = list(dict.fromkeys(out))
    return memo[node.name]


def _trace_fx(module, args, kwargs) -> TraceGraph:
    if kwargs:
        raise NotImplementedError("fx symbolic tracing takes positional tensor inputs only")
    gm = torch.fx.symbolic_trace(module)
    runner = _FxRunner(gm, module, flatten=False, method="fx", input_names=_input_names(module, args, kwargs))
    runner.remember(args, kwargs)
    return _graph_from_fx(gm, runner, args, kwargs, "fx", module)


@contextlib.contextmanager
def _quiet_export():
    loggers = [logging.getLogger(n) for n in ("torch._export", "torch.export", "torch._dynamo",
                                              "torch.fx.experimental.symbolic_shapes", "torch._export.non_strict_utils")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _trace_export(module, args, kwargs) -> TraceGraph:
    from torch.export import Dim

    def spec(x):
        if isinstance(x, torch.Tensor):
            return {i: Dim.AUTO for i in range(x.dim())}
        return None

    dyn = tuple(spec(a) for a in args) + tuple(spec(v) for v in kwargs.values())
    with _quiet_export():
        try:
            ep = torch.export.export(module, args, kwargs, strict=False, dynamic_shapes=dyn)
            dynamic = True
        except Exception:  # retry with static shapes
            ep = torch.export.export(module, args, kwargs, strict=False)
            dynamic = False
        gm = ep.module()
    runner = _FxRunner(gm, module, flatten=True, method="export", input_names=_input_names(module, args, kwargs))
    runner.remember(args, kwargs)
    runner.dynamic = dynamic
    G = _graph_from_fx(gm, runner, args, kwargs, "export", module)
    G.graph["dynamic_shapes"] = dynamic
    return G


# =============================================================================== recording
def _func_name(func) -> str:
    name = getattr(func, "__name__", None)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", "attr")
    if not name:
        name = type(func).__name__
    name = name.strip("_") or "op"
    return name


class _Recorder(torch.overrides.TorchFunctionMode):
    """Records tensor-producing torch calls with tensor provenance and the module stack."""

    def __init__(self, want: Optional[set] = None):
        super().__init__()
        self.ops: list[dict] = []
        self.counts: Counter = Counter()
        self.producer: dict = {}  # id(tensor) -> (weakref, node id)
        self.stack: list = [("", None)]  # (path, call id)
        self.want = want
        self.kept: dict = {}

    def source(self, t: torch.Tensor):
        hit = self.producer.get(id(t))
        if hit is None:
            return None
        ref, nid = hit
        return nid if ref() is t else None

    def mark(self, t: torch.Tensor, nid: str) -> None:
        try:
            self.producer[id(t)] = (weakref.ref(t), nid)
        except TypeError:  # pragma: no cover - tensors without weakref support
            pass

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = [t for t in torch.utils._pytree.tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outs:
            return out
        ins = [t for t in torch.utils._pytree.tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        parents = []
        for t in ins:
            s = self.source(t)
            if s is not None and s not in parents:
                parents.append(s)
        name = _func_name(func)
        k = self.counts[name]
        self.counts[name] += 1
        nid = name if k == 0 else f"{name}_{k}"
        path, call = self.stack[-1]
        self.ops.append({"id": nid, "op": name, "target": getattr(func, "__qualname__", name), "module": path,
                         "call": call, "parents": parents, "shapes": [tuple(int(s) for s in t.shape) for t in outs],
                         "dtype": str(outs[0].dtype).replace("torch.", "")})
        for t in outs:
            self.mark(t, nid)
        if self.want is not None and nid in self.want:
            self.kept[nid] = _detach(out)
        return out


class _RecordRunner(_Runner):
    """Runs a module under :class:`_Recorder` with module hooks for paths and leaf-module calls."""

    def __init__(self, module: nn.Module, coarse: bool, input_names: list):
        self.module = module
        self.coarse = coarse
        self.input_names = input_names
        self.method = "modules" if coarse else "functions"

    def run(self, args, kwargs, want: Optional[set] = None):
        rec = _Recorder(want=want)
        calls: list = []  # per leaf-module call: (call id, path, type, output shapes)
        call_counts: Counter = Counter()
        handles = []
        named = list(self.module.named_modules())
        leaf = {id(m) for _, m in named if next(iter(m.children()), None) is None}
        module_out: dict = {}

        def pre(path):
            def hook(mod, inp):
                k = call_counts[path]
                call_counts[path] += 1
                cid = path if k == 0 else f"{path}#{k}"
                rec.stack.append((path, cid))
            return hook

        def post(path, mod):
            def hook(m, inp, out):
                p, cid = rec.stack.pop()
                if id(mod) in leaf:
                    calls.append((cid, path, type(mod).__name__, _shapes(out), _dtype(out)))
                    if want is not None and cid in want:
                        module_out[cid] = _detach(out)
            return hook

        for path, m in named:
            if path == "":
                continue
            handles.append(m.register_forward_pre_hook(pre(path)))
            handles.append(m.register_forward_hook(post(path, m)))
        inputs = []
        names = self.input_names
        flat_inputs = list(args) + list(kwargs.values())
        for _i, (nm, v) in enumerate(zip(names, flat_inputs)):
            ts = [t for t in torch.utils._pytree.tree_flatten(v)[0] if isinstance(t, torch.Tensor)]
            if not ts:
                continue
            inputs.append({"id": nm, "shapes": [tuple(t.shape) for t in ts],
                           "dtype": str(ts[0].dtype).replace("torch.", "")})
            for t in ts:
                rec.mark(t, nm)
        try:
            with torch.no_grad(), rec:
                out = self.module(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        outs = [t for t in torch.utils._pytree.tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        out_parents = []
        for t in outs:
            s = rec.source(t)
            if s is not None and s not in out_parents:
                out_parents.append(s)
        kept = dict(rec.kept)
        kept.update(module_out)
        if want is not None:
            for nm, v in zip(names, flat_inputs):
                if nm in want:
                    kept[nm] = _detach(v)
            if "output" in want:
                kept["output"] = _detach(out)
        return {"inputs": inputs, "ops": rec.ops, "calls": calls, "out": out, "out_parents": out_parents,
                "out_shapes": [tuple(t.shape) for t in outs], "kept": kept}


def _trace_recorded(module, args, kwargs, coarse: bool) -> TraceGraph:
    runner = _RecordRunner(module, coarse, _input_names(module, args, kwargs))
    runner.remember(args, kwargs)
    res = runner.run(args, kwargs)
    types = {name: type(m).__name__ for name, m in module.named_modules()}
    G = TraceGraph()
    order = 0
    for inp in res["inputs"]:
        G.add_node(inp["id"], op="input", kind="input", target="input", module="", module_type=types.get("", ""),
                   shape=inp["shapes"][0], shapes=inp["shapes"], dtype=inp["dtype"], order=order, label=inp["id"])
        order += 1
    input_ids = [i["id"] for i in res["inputs"]]
    if not coarse:
        for o in res["ops"]:
            G.add_node(o["id"], op=o["op"], kind="op", target=o["target"], module=o["module"],
                       module_type=types.get(o["module"], ""), shape=o["shapes"][0], shapes=o["shapes"],
                       dtype=o["dtype"], order=order, label=o["id"])
            order += 1
            for p in o["parents"]:
                G.add_edge(p, o["id"])
        out_parents = res["out_parents"]
    else:
        # leaf-module calls are nodes; everything else is transparent glue
        leaf_calls = {c[0]: c for c in res["calls"]}
        call_order = {c[0]: i for i, c in enumerate(res["calls"])}
        first_op = {}
        for o in res["ops"]:
            if o["call"] in leaf_calls:
                first_op.setdefault(o["call"], len(first_op))
        sources: dict = {i: {i} for i in input_ids}  # fine node -> coarse sources
        edges = set()
        for o in res["ops"]:
            srcs = set()
            for p in o["parents"]:
                srcs |= sources.get(p, set())
            group = o["call"] if o["call"] in leaf_calls else None
            if group is not None:
                for s in srcs:
                    if s != group:
                        edges.add((s, group))
                sources[o["id"]] = {group}
            else:
                sources[o["id"]] = srcs
        for cid, path, typ, shp, dt in sorted(res["calls"], key=lambda c: call_order[c[0]]):
            G.add_node(cid, op=typ, kind="module", target=typ, module=path, module_type=typ,
                       shape=shp[0] if shp else None, shapes=shp, dtype=dt, order=order, label=cid)
            order += 1
        for s, t in edges:
            if s in G and t in G:
                G.add_edge(s, t)
        out_parents = sorted({s for p in res["out_parents"] for s in sources.get(p, {p})} & set(G.nodes))
    G.add_node("output", op="output", kind="output", target="output", module="", module_type=types.get("", ""),
               shape=res["out_shapes"][0] if res["out_shapes"] else None, shapes=res["out_shapes"], dtype=None,
               order=order, label="output")
    for p in out_parents:
        if p in G:
            G.add_edge(p, "output")
    G.graph.update(method=runner.method, module_type=type(module).__name__, inputs=input_ids, runner=runner)
    return G


# =============================================================================== fetching
def fetch_activations(G: TraceGraph, node_ids, *inputs, example_kwargs: Optional[dict] = None) -> dict:
    """Run the traced module again and return the activations of some nodes.

    Parameters
    ----------
    G : a graph from :func:`trace_graph`
    node_ids : a node id or a list of them (e.g. from :func:`find_attention` or ``G.find(...)``)
    *inputs : inputs of the module, like the example inputs of :func:`trace_graph` (a
        LoadedModel-traced graph accepts a text string)
    example_kwargs : keyword inputs

    Returns
    -------
    dict node id -> tensor (detached copies; a tuple for multi-output nodes). Node ids are stable
    between runs as long as the module takes the same code path.
    """
    runner = G.graph.get("runner")
    if runner is None:
        raise TraceError("this graph has no runner (was it copied or loaded?); trace it again with trace_graph")
    ids = [node_ids] if isinstance(node_ids, str) else list(node_ids)
    missing = [n for n in ids if n not in G]
    if missing:
        raise KeyError(f"nodes {missing[:5]} are not in the graph; use G.find(op=...) or list(G.nodes) for ids")
    lm = G.graph.get("loaded_model")
    args, kwargs = _text_inputs(lm, list(inputs), dict(example_kwargs or {}))
    args, kwargs = runner.restructure(args, kwargs)
    want = set(ids)
    if isinstance(runner, _FxRunner):
        try:
            _, kept, _ = runner.run(args, kwargs, want=want)
        except Exception as e:
            hint = ("" if getattr(runner, "dynamic", True) else
                    " The graph was exported with static shapes: pass inputs of the example's shapes, or trace "
                    "with method='functions'.")
            raise TraceError(f"re-running the traced graph failed: {type(e).__name__}: {e}.{hint}") from None
    else:
        res = runner.run(args, kwargs, want=want)
        kept = res["kept"]
    lost = [n for n in ids if n not in kept]
    if lost:
        raise TraceError(f"nodes {lost[:5]} did not run on these inputs (the module took another code path); "
                         "trace the graph on inputs like these")
    return {n: kept[n] for n in ids}


def find_attention(G: TraceGraph) -> list:
    """Attention-probability nodes: softmax ops with a 4-D output (batch, heads, query, key).

    Returns node ids in execution order (one per attention layer for eager attention). Fused
    attention (``scaled_dot_product_attention``) has no softmax node: switch the model to eager
    attention (``model.set_attn_implementation("eager")``) before tracing.
    """
    out = []
    for n in G.find():
        d = G.nodes[n]
        if d.get("op") in ("softmax", "_softmax", "Softmax") and d.get("shape") is not None and len(d["shape"]) == 4:
            out.append(n)
    return out


# =============================================================================== export formats
def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape_str(shape) -> str:
    return "" if shape is None else "(" + ", ".join(str(s) for s in shape) + ")"


def to_dot(G: TraceGraph, *, clusters: bool = True, rankdir: str = "TB") -> str:
    """Graphviz DOT text of a traced graph (no pygraphviz needed).

    Ops are boxes labelled with their op and shape; with ``clusters=True`` the ops of each module
    are drawn inside nested ``cluster`` subgraphs named by module path.
    """
    from .._checks import check_bool
    clusters = check_bool(clusters, "clusters")
    lines = ["digraph trace {", f"  rankdir={rankdir};", '  node [shape=box, fontsize=10, fontname="Helvetica"];',
             '  edge [arrowsize=0.6];']

    def node_line(n, indent):
        d = G.nodes[n]
        shape = _shape_str(d.get("shape"))
        label_txt = str(d.get("op", n)) + ("" if d.get("op") == n else "\n" + str(n)) + (f"\n{shape}" if shape else "")
        style = {"input": ', style=filled, fillcolor="#d8e8f8"', "output": ', style=filled, fillcolor="#f8e0d8"',
                 "module": ', style="rounded,filled", fillcolor="#eeeeee"'}.get(d.get("kind"), "")
        return f"{indent}{_q(n)} [label={_q(label_txt)}{style}];"

    if clusters:
        tree: dict = defaultdict(list)  # module path -> node ids directly in it
        for n, d in G.nodes(data=True):
            tree[d.get("module", "")].append(n)
        paths = set(tree)
        for p in list(paths):
            parts = p.split(".") if p else []
            for i in range(1, len(parts)):
                paths.add(".".join(parts[:i]))
        children: dict = defaultdict(list)
        for p in paths:
            if p:
                parent = p.rsplit(".", 1)[0] if "." in p else ""
                children[parent].append(p)
        types = {p: "" for p in paths}
        for _n, d in G.nodes(data=True):
            if d.get("module_type"):
                types[d.get("module", "")] = d["module_type"]

        def emit(path, indent):
            for n in sorted(tree.get(path, []), key=lambda n: G.nodes[n].get("order", 0)):
                lines.append(node_line(n, indent))
            for c in sorted(children.get(path, [])):
                label = c + (f" ({types[c]})" if types.get(c) else "")
                lines.append(f"{indent}subgraph {_q('cluster_' + c)} {{")
                lines.append(f"{indent}  label={_q(label)}; style=rounded; color=\"#999999\"; fontsize=9;")
                emit(c, indent + "  ")
                lines.append(f"{indent}}}")

        emit("", "  ")
    else:
        for n in sorted(G.nodes, key=lambda n: G.nodes[n].get("order", 0)):
            lines.append(node_line(n, "  "))
    for u, v in G.edges:
        lines.append(f"  {_q(u)} -> {_q(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1


def _collapse(G: TraceGraph, collapse_depth: Optional[int], expanded) -> tuple:
    """Map each node to what represents it: itself, or a collapsed module ``mod:<path>``."""
    expanded = set(expanded or ())
    rep = {}
    collapsed: dict = {}
    for n, d in G.nodes(data=True):
        path = d.get("module", "")
        target = n
        if collapse_depth is not None and d.get("kind") not in ("input", "output") and path:
            parts = path.split(".")
            for i in range(1, len(parts) + 1):
                q = ".".join(parts[:i])
                if i > collapse_depth and q not in expanded:
                    target = "mod:" + q
                    collapsed.setdefault(q, []).append(n)
                    break
        rep[n] = target
    return rep, collapsed


def _boxes(paths: Iterable[str]) -> set:
    out = set()
    for p in paths:
        parts = p.split(".") if p else []
        for i in range(1, len(parts) + 1):
            out.add(".".join(parts[:i]))
    return out


def to_cytoscape(G: TraceGraph, collapse_depth: Optional[int] = None, expanded: Iterable[str] = ()) -> list:
    """Cytoscape.js elements of a traced graph, submodules as compound parent nodes.

    Parameters
    ----------
    G : a graph from :func:`trace_graph`
    collapse_depth : modules deeper than this (``transformer.h.0`` has depth 3) are drawn as one
        node each (``kind="collapsed"``, ``n_ops`` inner nodes, edges merged with a ``count``);
        ``None`` shows every op.
    expanded : module paths to open although deeper than ``collapse_depth`` (their own submodules
        stay collapsed unless listed too).

    Returns
    -------
    list of ``{"group": "nodes" | "edges", "data": {...}}``. Module boxes have ids
    ``"mod:<path>"`` and ``kind="module"``; every node's ``data.parent`` is its module's box.
    """
    rep, collapsed = _collapse(G, collapse_depth, expanded)
    types = {}
    for _n, d in G.nodes(data=True):
        if d.get("module_type"):
            types.setdefault(d.get("module", ""), d["module_type"])
    shown_ops = [n for n in G.nodes if rep[n] == n]
    box_paths = _boxes([G.nodes[n].get("module", "") for n in shown_ops]
                       + [q.rsplit(".", 1)[0] for q in collapsed if "." in q])
    els = []

    def parent_of(path):
        return "mod:" + path if path else None

    for p in sorted(box_paths, key=lambda s: (_depth(s), s)):
        par = p.rsplit(".", 1)[0] if "." in p else ""
        d = {"id": "mod:" + p, "label": p.rsplit(".", 1)[-1] + (f" ({types[p]})" if types.get(p) else ""),
             "module": p, "kind": "module", "depth": _depth(p)}
        if parent_of(par):
            d["parent"] = parent_of(par)
        els.append({"group": "nodes", "data": d})
    for q, inner in sorted(collapsed.items()):
        if q in box_paths:
            continue
        par = q.rsplit(".", 1)[0] if "." in q else ""
        last = max(inner, key=lambda n: G.nodes[n].get("order", 0))
        d = {"id": "mod:" + q, "label": q.rsplit(".", 1)[-1] + (f" ({types[q]})" if types.get(q) else ""),
             "module": q, "kind": "collapsed", "n_ops": len(inner), "depth": _depth(q),
             "shape": list(G.nodes[last].get("shape") or []), "order": min(G.nodes[n].get("order", 0) for n in inner)}
        if parent_of(par):
            d["parent"] = parent_of(par)
        els.append({"group": "nodes", "data": d})
    for n in sorted(shown_ops, key=lambda n: G.nodes[n].get("order", 0)):
        a = G.nodes[n]
        d = {"id": n, "label": str(a.get("op", n)), "op": a.get("op"), "kind": a.get("kind"),
             "module": a.get("module", ""), "shape": list(a.get("shape") or []), "order": a.get("order", 0)}
        if parent_of(a.get("module", "")):
            d["parent"] = parent_of(a.get("module", ""))
        els.append({"group": "nodes", "data": d})
    counts: Counter = Counter()
    for u, v in G.edges:
        ru, rv = rep[u], rep[v]
        if ru != rv:
            counts[(ru, rv)] += 1
    for i, ((u, v), c) in enumerate(sorted(counts.items())):
        els.append({"group": "edges", "data": {"id": f"e{i}", "source": u, "target": v, "count": c}})
    return els


def __getattr__(name):
    # the drawing of traced graphs is presentation: it lives in widgets/graph_layout.py; the old
    # import path (``from mri_widgets.models.trace import graph_view_args``) still works
    if name == "graph_view_args":
        from ..widgets.graph_layout import graph_view_args

        return graph_view_args
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
