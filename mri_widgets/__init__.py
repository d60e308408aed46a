"""mri_widgets: live, linked Jupyter widgets for looking inside transformer language models.

Start with ``lm = mri_widgets.load("demo")`` (offline) or ``mri_widgets.load("gpt2")``.
"""

from ._version import __version__
from .models import Capture, CaptureBatch, LoadedModel, load
from .widgets import Selection, TokenHeat

__all__ = ["__version__", "load", "LoadedModel", "Capture", "CaptureBatch", "Selection", "TokenHeat"]
