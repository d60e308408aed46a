"""Model adapters, loading and hooked capture (the only room that knows torch module paths)."""

from .adapters import Adapter, AdapterError, ArchSpec, resolve_adapter
from .capture import SITES, Capture, CaptureBatch, CaptureError
from .loading import LoadedModel, ModelNotAvailable, load

__all__ = ["Adapter", "AdapterError", "ArchSpec", "resolve_adapter", "SITES", "Capture", "CaptureBatch",
           "CaptureError", "LoadedModel", "ModelNotAvailable", "load"]
