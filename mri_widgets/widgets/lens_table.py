"""LensTable: the logit lens of a prompt as a token x layer table, with an image-patch panel."""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
import traitlets as t

from ..analysis.lens import LensError, LensResult, logit_lens
from .._checks import check_bool, check_int
from .base import MRIWidget, NDArray, array_serialization, command
from .selection import Selection

__all__ = ["LensTable", "METRICS"]

#: colour metrics of the table: top-1 probability, rank of the target token, entropy, and (only
#: under active interventions) the change of the target's probability (intervened - clean)
METRICS = ("prob", "rank", "entropy", "diff")

#: the most top-k entries (cells x k) a page saved with ``save_html`` holds for the hover (see
#: :meth:`LensTable._baked_commands`); a bigger table saves the top-1 of each cell only
BAKE_ENTRIES = 2_000_000


class LensTable(MRIWidget):
    """The logit lens as a live table: rows are tokens, columns are layers.

    Each cell shows the top-1 token that layer's residual stream predicts at that position,
    coloured by ``metric``; hovering shows the top-k tokens with their probabilities, the tracked
    target and the entropy; a dot marks each position's most confident layer. Clicking a cell
    pins it and sets the shared selection; arrow keys move the pinned cell. Only the visible
    cells are in the page, so long prompts stay smooth.

    Layer index (``selection.layer`` and the columns): ``0`` is the embeddings, ``l`` the residual
    stream after block ``l`` (``n_layers + 1`` columns).

    With ``generate=n`` the model first continues the prompt by ``n`` tokens (greedy, or sampled
    with ``sample=True`` and ``seed``) and the table covers prompt and continuation: generated
    rows are marked, and the cell where the model commits to each generated token (see
    :attr:`~mri_widgets.LensResult.commitment_layer`) carries a marker. Forward hooks on the model
    (interventions) apply to the generation and to the lens pass, so the effect of an ablation on
    the continuation shows in one table.

    With ``interventions=`` (a shared :class:`~mri_widgets.Interventions`) holding enabled
    interventions, the lens runs twice: clean, and under ``lm.intervene(interventions)``
    (generation included). The table shows the run under the interventions (:attr:`result`;
    :attr:`clean_result` is the clean one), both runs track the same target at each position (the
    given ``target``, else the clean run's own final prediction), a panel above the table
    compares the two at the selected position (:attr:`comparison`), and the ``"diff"`` metric
    colours each cell by :attr:`diff`, the change of the target's probability. Every change of
    the interventions (their ``version``) recomputes the run under them; the clean run is kept
    until the prompt or another input changes. With no enabled interventions the table is the
    clean run again.

    With ``image=`` (a LLaVA-style model) the image is shown beside the table with its patch grid:
    hovering a patch highlights its image-token row and shows its best layer and top-k; a click
    locks it. :meth:`patch_mask` gives the patches whose best top-1 token is blank.

    Parameters
    ----------
    model : LoadedModel
    prompt : str
    k : int
        Top tokens kept per cell (shown on hover).
    metric : {"prob", "rank", "entropy", "diff"}
        Cell colour: top-1 probability, rank of the target token, entropy, or (with enabled
        interventions only) the target's probability under them minus the clean one.
    target : str, optional
        A single token (``" Paris"``) whose rank and probability are tracked at every position;
        default: the model's own final prediction at each position.
    norm : bool
        Apply the final norm before the unembedding (see :func:`mri_widgets.logit_lens`).
    image : PIL image or (H, W, 3) uint8 array, optional
    generate : int
        New tokens to generate after the prompt (0: the prompt only); see
        :func:`mri_widgets.logit_lens`.
    sample, seed, temperature
        Sampling instead of greedy generation (see :func:`mri_widgets.logit_lens`); used only
        when ``generate > 0``.
    transpose : bool
        Layers as rows and tokens as columns.
    height : int
        Height of the table in pixels.
    selection : Selection, optional
        The shared selection (``position`` and ``layer`` are set on click and followed).
    interventions : Interventions, optional
        The shared interventions; see above.

    Examples
    --------
    >>> lm = mri_widgets.load("demo")
    >>> table = mri_widgets.LensTable(lm, "The capital of France is")
    >>> table.metric = "entropy"              # recolours the same view
    >>> table.prompt = "The capital of Italy is"   # recomputes, same view
    >>> table.result.target_ranks[:, -1]
    >>> iv = mri_widgets.Interventions()
    >>> table = mri_widgets.LensTable(lm, "The capital of France is", interventions=iv)
    >>> iv.ablate(("head", 1, 0))            # recomputes the run under the ablation
    >>> table.comparison["clean"]["prob"], table.comparison["intervened"]["prob"]
    >>> table.metric = "diff"
    """

    _view = "lens_table"

    # ---- parameters (set from Python or from the view's toolbar) ----------------------------
    #: the text read by the lens; setting it recomputes
    prompt = t.Unicode("").tag(sync=True)
    #: top tokens kept per cell (1..100); setting it recomputes
    k = t.Int(5).tag(sync=True)
    #: cell colour: one of :data:`METRICS` (recolours, no recompute)
    metric = t.Unicode("prob").tag(sync=True)
    #: tracked target token, or None for the model's own final prediction; setting it recomputes
    target = t.Unicode(None, allow_none=True).tag(sync=True)
    #: apply the final norm before the unembedding; setting it recomputes
    norm = t.Bool(True).tag(sync=True)
    #: new tokens generated after the prompt (0: the prompt only); setting it recomputes
    generate = t.Int(0).tag(sync=True)
    #: sample the generated tokens instead of greedy decoding; setting it recomputes
    sample = t.Bool(False).tag(sync=True)
    #: seed of the sampling (None: a fresh one each time); setting it recomputes
    seed = t.Int(None, allow_none=True).tag(sync=True)
    #: sampling temperature (> 0); setting it recomputes
    temperature = t.Float(1.0).tag(sync=True)
    #: layers as rows and tokens as columns
    transpose = t.Bool(False).tag(sync=True)
    #: height of the table in px (>= 1)
    height = t.Int(480).tag(sync=True)

    # ---- the result shown (set by Python only) ------------------------------------------------
    #: name of the model
    model_name = t.Unicode("").tag(sync=True)
    #: vocabulary size (scales the rank and entropy colours)
    vocab_size = t.Int(0).tag(sync=True)
    #: the prompt's tokens (rows)
    tokens = t.List(t.Unicode()).tag(sync=True)
    #: column names: ``"emb"``, then one per block
    layer_names = t.List(t.Unicode()).tag(sync=True)
    #: every token string the table shows up front, once (top-1 tokens and targets); the ``*_idx``
    #: arrays index it. The top-k lists come on demand (:meth:`cell_details`).
    vocab = t.List(t.Unicode()).tag(sync=True)
    #: (n_layers + 1, n_tokens) index into ``vocab`` of each cell's top-1 token (uint16 when the
    #: vocab holds fewer than 65536 strings, else int32)
    top1_idx = NDArray(("uint16", "int32"), ndim=2).tag(sync=True)
    #: (n_layers + 1, n_tokens) the values of the metric named by ``values_metric`` (the one that
    #: colours the table): top-1 probability, target rank (uint16 / int32), entropy (nats), or diff
    values = NDArray(("float32", "uint16", "int32"), ndim=2).tag(sync=True)
    #: the metric ``values`` holds (follows ``metric``: a metric change sends only the new array)
    values_metric = t.Unicode("prob").tag(sync=True)
    #: (n_tokens,) int32 index into ``vocab`` of the target at each position
    target_idx = NDArray("int32", ndim=1).tag(sync=True)
    #: ``"own"`` (the model's own prediction) or ``"token"`` (a given target)
    target_mode = t.Unicode("own").tag(sync=True)
    #: (n_tokens,) int32 most confident layer at each position
    best_layer = NDArray("int32", ndim=1).tag(sync=True)
    #: number of prompt tokens; the rows after them are generated
    n_prompt = t.Int(0).tag(sync=True)
    #: (n_tokens,) int32 commitment layer of each generated token (predicted one row above), -1 elsewhere
    commitment_layer = NDArray("int32", ndim=1).tag(sync=True)
    #: image mode: ``{png, width, height, grid, positions, blank}`` (arrays as buffers), else None
    image = t.Dict(None, allow_none=True).tag(sync=True, **array_serialization)

    # ---- under interventions (False / empty without enabled interventions) --------------------
    #: True when a clean run is shown beside the one under interventions (the ``"diff"`` metric applies)
    has_clean = t.Bool(False).tag(sync=True)
    #: counts the results shown: each new result (prompt, k, target, interventions ...) bumps it,
    #: and the view drops the top-k lists it fetched for an older one
    lens_version = t.Int(0).tag(sync=True)
    #: the clean run beside the run under the interventions at one position (the selected one,
    #: else the last), at the last layer (the model's output): ``{position, token, target,
    #: target_id, rank_base, interventions, clean: {prob, rank, prediction, prediction_id,
    #: prediction_prob}, intervened: {...}}``; ranks count from 0 (= top), as in the table;
    #: ``{}`` without enabled interventions
    comparison = t.Dict().tag(sync=True)

    def __init__(self, model, prompt: str, k: int = 5, *, metric: str = "prob", target: Optional[str] = None,
                 norm: bool = True, image=None, generate: int = 0, sample: bool = False,
                 seed: Optional[int] = None, temperature: float = 1.0, transpose: bool = False, height: int = 480,
                 selection: Optional[Selection] = None, interventions=None, _result: Optional[LensResult] = None):
        from .interventions import Interventions

        if interventions is not None and not isinstance(interventions, Interventions):
            raise TypeError(f"interventions must be a mri_widgets.Interventions, got {type(interventions).__name__}")
        if interventions is not None and model is None:
            raise LensError("a table built from a LensResult has no model to run under interventions; "
                            "use LensTable(model, prompt, interventions=...)")
        self._lm = model
        self._image = image
        self.interventions = interventions
        self._clean: Optional[LensResult] = None
        self._intervened: Optional[LensResult] = None
        self._ready = False
        self._restoring = False
        super().__init__(selection=selection, prompt=prompt, k=k, metric=metric, target=target,
                         norm=check_bool(norm, "norm"), generate=generate, sample=check_bool(sample, "sample"),
                         seed=seed, temperature=temperature, transpose=check_bool(transpose, "transpose"),
                         height=height)
        if _result is not None:
            self._clean = _result
            self._show()
        else:
            self._compute()
        self._ready = True
        if interventions is not None:
            interventions.observe(self._interventions_changed, names=["version"])

    @classmethod
    def from_result(cls, result: LensResult, *, metric: str = "prob", transpose: bool = False, height: int = 480,
                    selection: Optional[Selection] = None) -> "LensTable":
        """A table showing an existing :class:`~mri_widgets.LensResult` (no model needed).

        Such a table cannot recompute: setting ``prompt``, ``k``, ``target``, ``norm`` or the
        generation parameters raises an error.
        """
        if not isinstance(result, LensResult):
            raise TypeError(f"result must be a LensResult (from mri_widgets.logit_lens), got {type(result).__name__}")
        target = result.target
        return cls(None, result.prompt, result.k, metric=metric, target=target, norm=result.norm,
                   generate=result.n_generated, sample=result.seed is not None, seed=result.seed,
                   transpose=transpose, height=height, selection=selection, _result=result)

    @classmethod
    def from_arrays(cls, tokens, top_tokens, top_probs, *, entropy=None, target_tokens=None, layer_names=None,
                    prompt: Optional[str] = None, model_name: str = "", metric: str = "prob",
                    transpose: bool = False, height: int = 480,
                    selection: Optional[Selection] = None) -> "LensTable":
        """A table of a logit lens another library computed: arrays only, no model.

        ``tokens`` (positions,), ``top_tokens`` and ``top_probs`` (layers, positions, k); the
        optional arrays and the defaults are those of
        :meth:`~mri_widgets.LensResult.from_arrays`. Like :meth:`from_result`, the table cannot
        recompute.
        """
        result = LensResult.from_arrays(tokens, top_tokens, top_probs, entropy=entropy, target_tokens=target_tokens,
                                        layer_names=layer_names, prompt=prompt, model_name=model_name)
        return cls.from_result(result, metric=metric, transpose=transpose, height=height, selection=selection)

    # ---- results ---------------------------------------------------------------------------
    @property
    def result(self) -> LensResult:
        """The :class:`~mri_widgets.LensResult` shown now: the run under the enabled interventions
        when there are any, else the clean run."""
        return self._intervened if self._intervened is not None else self._clean

    @property
    def clean_result(self) -> LensResult:
        """The :class:`~mri_widgets.LensResult` of the clean run (no interventions)."""
        return self._clean

    @property
    def diff(self) -> Optional[np.ndarray]:
        """(n_layers + 1, n_tokens) float32: the target's probability under the interventions minus
        the clean one (NaN at positions the clean run lacks); None without enabled interventions."""
        if self._intervened is None:
            return None
        return self._intervened.target_probs.astype(np.float32) - _clean_on(self._clean, self._intervened)[0]

    def patch_mask(self, save: Optional[str] = None, *, overlay: bool = True) -> np.ndarray:
        """(grid_h, grid_w) bool mask of the patches whose best top-1 token is blank.

        Parameters
        ----------
        save : str or path, optional
            Also write a PNG: with ``overlay=True`` the image as the model sees it with those
            patches blacked out; with ``overlay=False`` the mask itself (white = blank) at the
            image's size.
        """
        mask = self.result.patch_mask()
        if save is not None:
            from PIL import Image

            img = self.result.image
            gh, gw = mask.shape
            H, W = img.shape[:2]
            rows = (np.arange(H) * gh // H)[:, None]
            cols = (np.arange(W) * gw // W)[None, :]
            full = mask[rows, cols]
            if overlay:
                out = img.copy()
                out[full] = 0
            else:
                out = (full * 255).astype(np.uint8)
            Image.fromarray(out).save(save, format="PNG")
        return mask

    # ---- validation --------------------------------------------------------------------------
    @t.validate("metric")
    def _check_metric(self, proposal):
        v = proposal["value"]
        if v not in METRICS:
            raise LensError(f"metric must be one of {METRICS}, got {v!r}")
        if v == "diff" and not self._active():
            raise LensError("metric 'diff' colours the change under interventions, and none are enabled: pass "
                            "LensTable(..., interventions=iv) and enable one (iv.ablate(...)), or use "
                            f"one of {METRICS[:-1]}")
        return v

    def _check_can_recompute(self, name):
        if self._ready and self._lm is None:
            raise LensError(f"this table was built from a LensResult and has no model, so {name} cannot change: "
                            "make a new one with LensTable(model, prompt, ...)")

    @t.validate("k")
    def _check_k(self, proposal):
        self._check_can_recompute("k")
        return check_int(proposal["value"], "k", min=1, max=100, error=LensError)

    @t.validate("norm")
    def _check_norm(self, proposal):
        self._check_can_recompute("norm")
        return proposal["value"]

    @t.validate("generate")
    def _check_generate(self, proposal):
        self._check_can_recompute("generate")
        return check_int(proposal["value"], "generate", min=0, error=LensError,
                         hint=" (the number of new tokens; 0 reads the prompt only)")

    @t.validate("sample", "seed", "temperature")
    def _check_sampling(self, proposal):
        self._check_can_recompute(proposal["trait"].name)
        return proposal["value"]

    @t.validate("height")
    def _check_height(self, proposal):
        return check_int(proposal["value"], "height", min=1, error=LensError, hint=" (px)")

    @t.validate("prompt")
    def _check_prompt(self, proposal):
        self._check_can_recompute("prompt")
        v = proposal["value"]
        if not v.strip():
            raise LensError("prompt is empty: give the lens some text")
        return v

    @t.validate("target")
    def _check_target(self, proposal):
        self._check_can_recompute("target")
        v = proposal["value"]
        return None if v == "" else v

    @t.observe("prompt", "k", "target", "norm", "generate", "sample", "seed", "temperature")
    def _inputs_changed(self, change):
        if not self._ready or self._restoring:
            return
        try:
            self._compute()
        except Exception:
            # the trait goes back to the value the table shows (in Python and in the view)
            self._restoring = True
            try:
                setattr(self, change["name"], change["old"])
            finally:
                self._restoring = False
            self.send_state([change["name"]])
            raise

    def _push_sel(self, change=None):
        super()._push_sel(change)
        # the comparison panel follows the selected position
        if getattr(self, "_ready", False) and self._intervened is not None and change is not None \
                and change.get("name") == "position":
            self.comparison = self._comparison()

    # ---- computing and sending -------------------------------------------------------------
    def _active(self) -> list:
        return [] if self.interventions is None else self.interventions.active

    def _run(self, target_ids=None) -> LensResult:
        gen = {}
        if self.generate:  # the sampling options matter only when generating
            gen = dict(generate=self.generate, sample=self.sample, seed=self.seed if self.sample else None,
                       temperature=self.temperature if self.sample else 1.0)
        if target_ids is not None:
            gen["target_ids"] = target_ids
        return logit_lens(self._lm, self.prompt, self.k, norm=self.norm, target=self.target, image=self._image, **gen)

    def _run_intervened(self, clean: LensResult) -> Optional[LensResult]:
        """The lens under the enabled interventions, tracking the clean run's targets; None without any."""
        active = self._active()
        if not active:
            return None
        with self._lm.intervene(active):
            # the clean run's targets at each position (a named target is the same everywhere anyway)
            return self._run(None if self.target is not None else clean.target_ids)

    def _compute(self) -> None:
        """Recompute both runs (an input changed)."""
        try:
            clean = self._run()
            intervened = self._run_intervened(clean)
        except (ValueError, TypeError) as e:
            self.error = str(e)
            raise
        self._clean, self._intervened = clean, intervened
        self._show()

    def _interventions_changed(self, change) -> None:
        """The shared interventions changed: recompute the run under them (the clean run is kept)."""
        if self._lm is None or self._clean is None:
            return
        try:
            intervened = self._run_intervened(self._clean)
        except Exception as e:  # shown in the view; the interventions widget itself must not fail
            self.error = f"{type(e).__name__}: {e}"
            return
        self._intervened = intervened
        self._show()

    def _comparison(self) -> dict:
        """The clean run beside the run under the interventions at the selected position, else the last."""
        iv, clean = self._intervened, self._clean
        if iv is None:
            return {}
        n = min(len(iv.tokens), len(clean.tokens))
        pos = self.selection.position
        if not isinstance(pos, int) or isinstance(pos, bool) or not 0 <= pos < n:
            pos = n - 1
        tid = int(iv.target_ids[pos])

        def run(res):
            return {"prob": float(res.target_probs[-1, pos]), "rank": int(res.target_ranks[-1, pos]),
                    "prediction": str(res.top_tokens[-1, pos, 0]), "prediction_id": int(res.top_ids[-1, pos, 0]),
                    "prediction_prob": float(res.top_probs[-1, pos, 0])}

        return {"position": int(pos), "token": str(iv.tokens[pos]), "target": str(iv.target_tokens[pos]),
                "target_id": tid, "rank_base": 0, "layer": iv.layer_names[-1],
                "interventions": [str(it.label) for it in self._active()],
                "clean": run(clean), "intervened": run(iv)}

    def _metric_values(self, metric: str) -> np.ndarray:
        """(layers, positions) values of ``metric`` for the result shown, in the dtype sent."""
        res = self.result
        if metric == "diff" and self._intervened is not None:
            return self.diff
        if metric == "rank":
            r = res.target_ranks
            return r.astype(np.uint16 if r.size == 0 or (r.min() >= 0 and r.max() < 2 ** 16) else np.int32)
        if metric == "entropy":
            return res.entropy.astype(np.float32)
        return res.top_probs[:, :, 0].astype(np.float32)

    @t.observe("metric")
    def _metric_changed(self, change):
        # a recolour sends only the new metric's values
        if getattr(self, "_ready", False) and self.result is not None:
            self._send_changed({"values": self._metric_values(change["new"]), "values_metric": change["new"]})

    def _send_changed(self, values: dict) -> None:
        """Set the traits among ``values`` whose value differs from the current one (one message)."""
        changed = {k: v for k, v in values.items() if not _same_value(getattr(self, k), v)}
        if changed:
            self._set_data(changed)

    def _show(self) -> None:
        """Send a new result: only the traits whose value changed, and a new ``lens_version``."""
        res = self.result
        payload = lens_payload(res)
        for key in ("prompt", "k", "norm"):  # the inputs are traits already
            payload.pop(key)
        payload["model_name"] = payload.pop("model")
        metric = self.metric
        if self._intervened is not None:
            payload["target_mode"] = "own" if self._clean.target is None else "token"
        elif metric == "diff":
            metric = "prob"  # nothing to compare any more
        payload["has_clean"] = self._intervened is not None
        payload["comparison"] = self._comparison()
        payload["values"], payload["values_metric"] = self._metric_values(metric), metric
        payload["lens_version"] = self.lens_version + 1
        payload["metric"] = metric
        with self.hold_trait_notifications():  # the metric observer sees the new result
            self._send_changed(payload)

    @command
    def cell_details(self, cells, version: Optional[int] = None) -> dict:
        """The top-k list and target numbers of some cells (the view fetches them on hover / pin).

        Parameters
        ----------
        cells : list of (layer, position)
            At most ``200_000 // k`` cells per call.
        version : int, optional
            The ``lens_version`` the view shows; the answer names the version it is for.

        Returns ``{version, cells, tokens, ids, probs, entropy, target_prob, target_rank,
        clean_prob, clean_rank}``: ``tokens[i]`` / ``probs[i]`` (an (n, k) float32 array) are
        :meth:`LensResult.top` of ``cells[i]`` and ``ids`` (n, k) int32 their token ids; the
        target numbers are per cell; ``clean_*`` (NaN / -1 where the clean run lacks the
        position) only under enabled interventions, else None.
        """
        res = self.result
        if not isinstance(cells, (list, tuple)):
            raise LensError(f"cells must be a list of (layer, position) pairs, got {type(cells).__name__}")
        limit = max(1, 200_000 // max(1, res.k))
        if len(cells) > limit:
            raise LensError(f"{len(cells)} cells asked at once; ask at most {limit} (k = {res.k}) per call")
        L, S = res.target_probs.shape
        ls, ps = [], []
        for c in cells:
            if not isinstance(c, (list, tuple)) or len(c) != 2:
                raise LensError(f"each cell is a (layer, position) pair, got {c!r}")
            ls.append(check_int(c[0], "layer", min=0, max=L - 1, error=LensError))
            ps.append(check_int(c[1], "position", min=0, max=S - 1, error=LensError))
        li, pi = np.asarray(ls, np.intp), np.asarray(ps, np.intp)
        out = {"version": int(self.lens_version), "cells": [[int(a), int(b)] for a, b in zip(ls, ps)],
               "tokens": [[str(x) for x in res.top_tokens[a, b]] for a, b in zip(ls, ps)]}
        out.update(self._details(li, pi, res.k))
        return out

    def _details(self, li: np.ndarray, pi: np.ndarray, k: int) -> dict:
        """The per-cell arrays of :meth:`cell_details` (all but the token strings) for the cells
        ``(li[i], pi[i])``, keeping the first ``k`` of the top-k."""
        res = self.result
        n = len(li)
        out = {"ids": res.top_ids[li, pi, :k].astype(np.int32).reshape(n, k),
               "probs": res.top_probs[li, pi, :k].astype(np.float32).reshape(n, k),
               "entropy": res.entropy[li, pi].astype(np.float32),
               "target_prob": res.target_probs[li, pi].astype(np.float32),
               "target_rank": res.target_ranks[li, pi].astype(np.int32),
               "clean_prob": None, "clean_rank": None}
        if self._intervened is not None:
            probs, ranks = _clean_on(self._clean, self._intervened)
            out["clean_prob"], out["clean_rank"] = probs[li, pi], ranks[li, pi].astype(np.int32)
        return out

    def _baked_commands(self) -> dict:
        """:meth:`cell_details` of every cell, for a page saved with :func:`~mri_widgets.save_html`
        (its hover shows the top-k without a kernel). Tables with more than :data:`BAKE_ENTRIES`
        top-k entries (cells x k) save the top-1 of each cell only (the answer carries a ``note``
        saying so); tables with more cells than that save none. The token ids are left out."""
        res = self.result
        if res is None:
            return {}
        L, S = res.target_probs.shape
        n = L * S
        k = res.k if n * res.k <= BAKE_ENTRIES else 1
        if n == 0 or n * k > BAKE_ENTRIES:
            return {}
        from .share import baked_rows, string_table

        li, pi = np.repeat(np.arange(L), S), np.tile(np.arange(S), L)
        out = {"version": int(self.lens_version)}
        out.update(self._details(li, pi, k))
        ids = out.pop("ids").reshape(-1)
        uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
        strings = res.top_tokens[:, :, :k].reshape(-1)[first]
        out["tokens"] = string_table([str(x) for x in strings], inv.reshape(n, k))
        if k < res.k:
            out["note"] = (f"this saved page holds only the top-1 token of each cell: the top-{res.k} of "
                           f"{n:,} cells is more than the {BAKE_ENTRIES:,} entries a page keeps (open the "
                           "notebook for it)")
        return {"cell_details": baked_rows(out, arg="cells", grid=(L, S), echo="cells")}


def _same_value(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, dict) and isinstance(b, dict) and ("png" in a or "png" in b):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def _clean_on(clean: LensResult, other: LensResult) -> tuple:
    """The clean run's target probabilities and ranks on ``other``'s (layers, positions) grid:
    NaN and -1 at positions the clean run lacks (a longer generated continuation)."""
    L, S = other.target_probs.shape
    probs = np.full((L, S), np.nan, np.float32)
    ranks = np.full((L, S), -1, np.int64)
    n = min(S, clean.target_probs.shape[1])
    probs[:, :n] = clean.target_probs[:, :n]
    ranks[:, :n] = clean.target_ranks[:, :n]
    return probs, ranks


def _png(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def lens_payload(res: LensResult) -> dict:
    """What the view receives up front: token strings once each (``vocab``: the top-1 tokens and
    the targets), the top-1 index of every cell, and per-position arrays. The top-k lists and the
    other per-cell numbers are fetched on demand (:meth:`LensTable.cell_details`)."""
    top1_ids = res.top_ids[:, :, 0]
    all_ids = np.concatenate([top1_ids.reshape(-1), np.asarray(res.target_ids).reshape(-1)])
    target_tokens = np.empty(len(res.target_tokens), dtype=object)
    target_tokens[:] = [str(x) for x in res.target_tokens]
    all_str = np.concatenate([res.top_tokens[:, :, 0].reshape(-1), target_tokens])
    uniq, first, inv = np.unique(all_ids, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    vocab = [str(x) for x in all_str[first]]
    n_top = top1_ids.size
    data = {
        "model": res.model_name,
        "prompt": res.prompt,
        "k": res.k,
        "norm": res.norm,
        "vocab_size": res.vocab_size,
        "tokens": [str(x) for x in res.tokens],
        "layer_names": list(res.layer_names),
        "vocab": vocab,
        "top1_idx": inv[:n_top].reshape(top1_ids.shape).astype(np.uint16 if len(vocab) < 2 ** 16 else np.int32),
        "target_idx": inv[n_top:].astype(np.int32),
        "target_mode": "own" if res.target is None else "token",
        "best_layer": res.best_layer.astype(np.int32),
        "n_prompt": int(res.n_prompt),
        "commitment_layer": res.commitment_layer.astype(np.int32),
        "image": None,
    }
    if res.patch_grid is not None and res.image is not None:
        H, W = res.image.shape[:2]
        data["image"] = {
            "png": _png(res.image), "width": int(W), "height": int(H), "grid": list(res.patch_grid),
            "positions": res.image_positions.astype(np.int32),
            "blank": res.patch_mask().reshape(-1).astype(np.uint8),
        }
    return data
