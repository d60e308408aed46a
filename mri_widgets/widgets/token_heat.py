"""TokenHeat: the tokens of a text coloured by one value each (an activation, a probability ...)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .base import MRIWidget
from .selection import Selection

__all__ = ["TokenHeat"]


class TokenHeat(MRIWidget):
    """Tokens coloured by a value per token; clicking a token sets ``selection.position``.

    Parameters
    ----------
    tokens : list of str
    values : array-like of one number per token (negative values use a diverging scale)
    title, value_name : labels shown in the view and its tooltips
    selection : the shared :class:`Selection`
    """

    _view = "token_heat"

    def __init__(self, tokens: Sequence[str], values=None, *, title: str = "", value_name: str = "value",
                 selection: Optional[Selection] = None):
        super().__init__(selection=selection)
        self.set_tokens(tokens, values, title=title, value_name=value_name)

    def set_tokens(self, tokens: Sequence[str], values=None, *, title: str = "", value_name: str = "value") -> None:
        """Replace the tokens and values shown (the view updates in place)."""
        tokens = [str(x) for x in tokens]
        if not tokens:
            raise ValueError("tokens is empty: pass at least one token")
        vals = np.zeros(len(tokens), np.float32) if values is None else np.asarray(values, dtype=np.float32).reshape(-1)
        if vals.shape[0] != len(tokens):
            raise ValueError(f"got {len(tokens)} tokens but {vals.shape[0]} values; pass one value per token")
        self._set_data({"tokens": tokens, "values": vals, "title": title, "value_name": value_name})
