"""TokenHeat: the tokens of a text coloured by one value each (an activation, a probability ...)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import traitlets as t

from .base import MRIWidget, NDArray
from .selection import Selection

__all__ = ["TokenHeat"]


class TokenHeat(MRIWidget):
    """Tokens coloured by a value per token; clicking a token sets ``selection.position``.

    Parameters
    ----------
    tokens : list of str
        The tokens, already split (e.g. ``capture.tokens[0]``); one coloured box each. A plain
        string is rejected: tokenise it first (``lm.tokenizer.tokenize(text)``) or pass
        ``list(text)`` to colour its characters.
    values : array-like of one number per token (negative values use a diverging scale)
    title, value_name : labels shown in the view and its tooltips
    selection : the shared :class:`Selection`

    Attributes (synced traits, the view's contract)
    ------------------------------------------------
    tokens : list of str
    values : float32 array, one value per token
    title : str
    value_name : str
    """

    _view = "token_heat"

    #: the tokens shown, one box each
    tokens = t.List(t.Unicode()).tag(sync=True)
    #: one value per token (float32)
    values = NDArray("float32", ndim=1).tag(sync=True)
    #: text above the tokens
    title = t.Unicode("").tag(sync=True)
    #: what a value is, for tooltips
    value_name = t.Unicode("value").tag(sync=True)

    def __init__(self, tokens: Sequence[str], values=None, *, title: str = "", value_name: str = "value",
                 selection: Optional[Selection] = None):
        super().__init__(selection=selection)
        self.set_tokens(tokens, values, title=title, value_name=value_name)

    def set_tokens(self, tokens: Sequence[str], values=None, *, title: str = "", value_name: str = "value") -> None:
        """Replace the tokens and values shown (the view updates in place)."""
        if isinstance(tokens, (str, bytes)):
            raise TypeError(f"tokens must be a list of token strings, got one {type(tokens).__name__} "
                            f"({tokens[:30]!r}); tokenise it first, e.g. lm.tokenizer.tokenize(text), "
                            "or pass list(text) to colour each character")
        try:
            tokens = [str(x) for x in tokens]
        except TypeError:
            raise TypeError(f"tokens must be a list of token strings, got {type(tokens).__name__}") from None
        if not tokens:
            raise ValueError("tokens is empty: pass at least one token")
        vals = np.zeros(len(tokens), np.float32) if values is None else np.asarray(values, dtype=np.float32).reshape(-1)
        if vals.shape[0] != len(tokens):
            raise ValueError(f"got {len(tokens)} tokens but {vals.shape[0]} values; pass one value per token")
        self._set_data({"tokens": tokens, "values": vals, "title": str(title), "value_name": str(value_name)})

    @t.validate("values")
    def _check_values(self, proposal):
        v = proposal["value"]
        if v.shape[0] != len(self.tokens):
            raise t.TraitError(f"values has {v.shape[0]} entries for {len(self.tokens)} tokens; "
                               "pass one value per token (or use set_tokens)")
        return v
