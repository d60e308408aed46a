"""Activation patching (causal tracing): restore clean activations into a corrupted run, one at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["PatchingResult", "PatchingError"]


class PatchingError(ValueError):
    """Bad input to :func:`patching` (prompts of different lengths, unknown site or metric, ...)."""


@dataclass
class PatchingResult:
    """What :func:`patching` computes: the effect of restoring each clean activation.

    Rows are layers, columns are token positions (``kind="position"``) or attention heads
    (``kind="head"``). ``effect[l, j]`` is the metric of the corrupted run with the clean
    activation restored at row ``l`` and column ``j``, normalised so that 0 is the corrupted
    run's metric and 1 the clean run's: ``(raw - corrupt_metric) / (clean_metric - corrupt_metric)``.

    Attributes
    ----------
    effect : (rows, cols) float32 array, normalised as above.
    raw : (rows, cols) float32 array, the metric itself.
    clean_metric, corrupt_metric : float, the metric of the unpatched clean and corrupted runs.
    site : str, the patched site (``"resid"``, ``"attn_out"``, ``"mlp_out"``, ``"mlp"``, ``"z"``).
    kind : ``"position"`` or ``"head"``.
    layers : (rows,) int64 array, the site's layer index of each row (``resid``: 0 = embeddings).
    layer_names : list of str, a label per row (``"emb"``, ``"1"``, ... for ``resid``; ``"0"``,
        ``"1"``, ... for block sites).
    columns : list of str, a label per column: the corrupted prompt's tokens (``kind="position"``)
        or ``"h0"``, ``"h1"``, ... (``kind="head"``).
    clean_tokens, corrupt_tokens : list of str, the tokens of the two prompts.
    metric : str, ``"logit_diff"``, ``"logit"`` or ``"prob"``.
    answer, wrong : str or None, the tokens the metric compares.
    positions : (cols,) int64 array for ``kind="position"`` (the patched positions), else empty.
    model_name : str
    """

    effect: np.ndarray
    raw: np.ndarray
    clean_metric: float
    corrupt_metric: float
    site: str
    kind: str
    layers: np.ndarray
    layer_names: list
    columns: list
    clean_tokens: list
    corrupt_tokens: list
    metric: str = "logit_diff"
    answer: Optional[str] = None
    wrong: Optional[str] = None
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    model_name: str = ""

    @property
    def shape(self) -> tuple:
        return tuple(self.effect.shape)

    def top(self, n: int = 5) -> list:
        """The ``n`` entries with the largest effect: ``(layer_name, column_label, effect)``, largest first."""
        flat = np.argsort(-np.nan_to_num(self.effect, nan=-np.inf), axis=None)[:n]
        rows, cols = np.unravel_index(flat, self.effect.shape)
        return [(self.layer_names[r], self.columns[c], float(self.effect[r, c])) for r, c in zip(rows, cols)]

    def __repr__(self) -> str:
        return (f"PatchingResult({self.model_name!r}, site={self.site!r}, kind={self.kind!r}, "
                f"shape={self.shape}, metric={self.metric!r}, clean={self.clean_metric:.4g}, "
                f"corrupt={self.corrupt_metric:.4g})")
