"""LensTable: the logit lens of a prompt as a token x layer table, with an image-patch panel."""

from __future__ import annotations

import io
from typing import Optional, Union

import numpy as np
import traitlets as t

from ..analysis.lens import LensError, LensResult, logit_lens
from .base import MRIWidget
from .selection import Selection

__all__ = ["LensTable", "METRICS"]

#: colour metrics of the table: top-1 probability, rank of the target token, entropy
METRICS = ("prob", "rank", "entropy")


class LensTable(MRIWidget):
    """The logit lens as a live table: rows are tokens, columns are layers.

    Each cell shows the top-1 token that layer's residual stream predicts at that position,
    coloured by ``metric``; hovering shows the top-k tokens with their probabilities, the tracked
    target and the entropy; a dot marks each position's most confident layer. Clicking a cell
    pins it and sets the shared selection; arrow keys move the pinned cell. Only the visible
    cells are in the page, so long prompts stay smooth.

    Layer index (``selection.layer`` and the columns): ``0`` is the embeddings, ``l`` the residual
    stream after block ``l`` (``n_layers + 1`` columns).

    With ``image=`` (a LLaVA-style model) the image is shown beside the table with its patch grid:
    hovering a patch highlights its image-token row and shows its best layer and top-k; a click
    locks it. :meth:`patch_mask` gives the patches whose best top-1 token is blank.

    Parameters
    ----------
    model : LoadedModel
    prompt : str
    k : int
        Top tokens kept per cell (shown on hover).
    metric : {"prob", "rank", "entropy"}
        Cell colour: top-1 probability, rank of the target token, or entropy.
    target : str, optional
        A single token (``" Paris"``) whose rank and probability are tracked at every position;
        default: the model's own final prediction at each position.
    norm : bool
        Apply the final norm before the unembedding (see :func:`mri_widgets.logit_lens`).
    image : PIL image or (H, W, 3) uint8 array, optional
    transpose : bool
        Layers as rows and tokens as columns.
    height : int
        Height of the table in pixels.
    selection : Selection, optional
        The shared selection (``position`` and ``layer`` are set on click and followed).

    Examples
    --------
    >>> lm = mri_widgets.load("demo")
    >>> table = mri_widgets.LensTable(lm, "The capital of France is")
    >>> table.metric = "entropy"              # recolours the same view
    >>> table.prompt = "The capital of Italy is"   # recomputes, same view
    >>> table.result.target_ranks[:, -1]
    """

    _view = "lens_table"

    prompt = t.Unicode("").tag(sync=True)
    k = t.Int(5).tag(sync=True)
    metric = t.Unicode("prob").tag(sync=True)
    target = t.Unicode(None, allow_none=True).tag(sync=True)
    transpose = t.Bool(False).tag(sync=True)
    height = t.Int(480).tag(sync=True)

    def __init__(self, model, prompt: str, k: int = 5, *, metric: str = "prob", target: Optional[str] = None,
                 norm: bool = True, image=None, transpose: bool = False, height: int = 480,
                 selection: Optional[Selection] = None, _result: Optional[LensResult] = None):
        self._lm = model
        self._norm = bool(norm)
        self._image = image
        self._result: Optional[LensResult] = None
        self._ready = False
        super().__init__(selection=selection, prompt=prompt, k=k, metric=metric, target=target,
                         transpose=transpose, height=height)
        if _result is not None:
            self._show(_result)
        else:
            self._compute()
        self._ready = True

    @classmethod
    def from_result(cls, result: LensResult, *, metric: str = "prob", transpose: bool = False, height: int = 480,
                    selection: Optional[Selection] = None) -> "LensTable":
        """A table showing an existing :class:`~mri_widgets.LensResult` (no model needed).

        Such a table cannot recompute: setting ``prompt``, ``k`` or ``target`` raises an error.
        """
        if not isinstance(result, LensResult):
            raise TypeError(f"result must be a LensResult (from mri_widgets.logit_lens), got {type(result).__name__}")
        target = result.target
        return cls(None, result.prompt, result.k, metric=metric, target=target, norm=result.norm,
                   transpose=transpose, height=height, selection=selection, _result=result)

    # ---- results ---------------------------------------------------------------------------
    @property
    def result(self) -> LensResult:
        """The :class:`~mri_widgets.LensResult` shown now."""
        return self._result

    def patch_mask(self, save: Optional[str] = None, *, overlay: bool = True) -> np.ndarray:
        """(grid_h, grid_w) bool mask of the patches whose best top-1 token is blank.

        Parameters
        ----------
        save : str or path, optional
            Also write a PNG: with ``overlay=True`` the image as the model sees it with those
            patches blacked out; with ``overlay=False`` the mask itself (white = blank) at the
            image's size.
        """
        mask = self._result.patch_mask()
        if save is not None:
            from PIL import Image

            img = self._result.image
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
        return v

    def _check_can_recompute(self, name):
        if self._ready and self._lm is None:
            raise LensError(f"this table was built from a LensResult and has no model, so {name} cannot change: "
                            "make a new one with LensTable(model, prompt, ...)")

    @t.validate("k")
    def _check_k(self, proposal):
        self._check_can_recompute("k")
        v = proposal["value"]
        if v < 1 or v > 100:
            raise LensError(f"k must be between 1 and 100, got {v}")
        return v

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

    @t.observe("prompt", "k", "target")
    def _inputs_changed(self, change):
        if self._ready:
            self._compute()

    # ---- computing and sending -------------------------------------------------------------
    def _compute(self) -> None:
        try:
            res = logit_lens(self._lm, self.prompt, self.k, norm=self._norm, target=self.target, image=self._image)
        except (ValueError, TypeError) as e:
            self.error = str(e)
            raise
        self._show(res)

    def _show(self, res: LensResult) -> None:
        self._result = res
        self._set_data(lens_payload(res))


def _png(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def lens_payload(res: LensResult) -> dict:
    """What the view receives: token strings once each (``vocab``), indices and numbers as arrays."""
    all_ids = np.concatenate([res.top_ids.reshape(-1), res.target_ids.reshape(-1)])
    target_tokens = np.empty(len(res.target_tokens), dtype=object)
    target_tokens[:] = [str(x) for x in res.target_tokens]
    all_str = np.concatenate([res.top_tokens.reshape(-1), target_tokens])
    uniq, first, inv = np.unique(all_ids, return_index=True, return_inverse=True)
    vocab = [str(x) for x in all_str[first]]
    n_top = res.top_ids.size
    data = {
        "model": res.model_name,
        "prompt": res.prompt,
        "k": res.k,
        "norm": res.norm,
        "vocab_size": res.vocab_size,
        "tokens": [str(x) for x in res.tokens],
        "layer_names": list(res.layer_names),
        "vocab": vocab,
        "top_idx": inv[:n_top].reshape(res.top_ids.shape).astype(np.int32),
        "top_probs": res.top_probs.astype(np.float32),
        "entropy": res.entropy.astype(np.float32),
        "target_idx": inv[n_top:].astype(np.int32),
        "target_probs": res.target_probs.astype(np.float32),
        "target_ranks": res.target_ranks.astype(np.int32),
        "target_mode": "own" if res.target is None else "token",
        "best_layer": res.best_layer.astype(np.int32),
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
