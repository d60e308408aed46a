"""Binary transport of numpy arrays in widget traits.

An array travels as ``{"view": memoryview, "dtype": "float32", "shape": [..]}``: ipywidgets
moves the memoryview as a binary buffer beside the JSON message, and ``js/src/lib/codec.js``
turns it back into a typed array. No tensor travels as a JSON list of numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["encode_array", "decode_array", "encode_tree", "decode_tree", "SUPPORTED_DTYPES"]

#: dtypes with a JS typed-array counterpart; others are converted (float64 -> float32, bool -> uint8 ...)
SUPPORTED_DTYPES = ("float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32")
_CONVERT = {"float16": "float32", "bool": "uint8", "int64": "int32", "uint64": "uint32"}


def encode_array(a) -> dict:
    """Encode an array-like (numpy, torch) as ``{view, dtype, shape}`` for a widget trait."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    name = a.dtype.name
    if name in _CONVERT:
        target = _CONVERT[name]
        if name == "int64" and a.size and (a.max() > np.iinfo(np.int32).max or a.min() < np.iinfo(np.int32).min):
            raise ValueError("int64 array does not fit in int32 for transport; convert it to float64 first")
        a = a.astype(target)
    elif name not in SUPPORTED_DTYPES:
        raise TypeError(f"cannot send arrays of dtype {a.dtype} to the front end; use a numeric dtype")
    a = np.ascontiguousarray(a)
    return {"view": memoryview(a.reshape(-1)).cast("B"), "dtype": a.dtype.name, "shape": list(a.shape)}


def decode_array(obj: dict) -> np.ndarray:
    """Inverse of :func:`encode_array` (for messages coming back from the front end)."""
    buf = obj["view"]
    if isinstance(buf, memoryview):
        buf = buf.tobytes()
    return np.frombuffer(buf, dtype=obj["dtype"]).reshape(obj["shape"]).copy()


def _is_encoded(x) -> bool:
    return isinstance(x, dict) and set(x) == {"view", "dtype", "shape"}


def encode_tree(value: Any, widget=None) -> Any:
    """Encode every array (numpy or torch) inside nested dicts / lists; other values are kept."""
    if isinstance(value, np.ndarray) or hasattr(value, "detach"):
        return encode_array(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: encode_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_tree(v) for v in value]
    return value


def decode_tree(value: Any, widget=None) -> Any:
    if _is_encoded(value):
        return decode_array(value)
    if isinstance(value, dict):
        return {k: decode_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_tree(v) for v in value]
    return value


#: trait metadata: ``Dict().tag(sync=True, **array_serialization)``
array_serialization = {"to_json": encode_tree, "from_json": decode_tree}
