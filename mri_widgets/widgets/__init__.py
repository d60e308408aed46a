"""Widgets: thin anywidget classes that ship arrays to the views in js/ and hold the selection."""

from .base import MRIWidget, NDArray, command, rpc
from .selection import SELECTION_KEYS, Selection
from .token_heat import TokenHeat

__all__ = ["MRIWidget", "NDArray", "command", "rpc", "Selection", "SELECTION_KEYS", "TokenHeat"]
