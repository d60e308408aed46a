"""Binary transport of numpy arrays in widget traits.

An array travels as ``{"view": memoryview, "dtype": "float32", "shape": [..]}``: ipywidgets
moves the memoryview as a binary buffer beside the JSON message, and ``js/src/lib/codec.js``
turns it back into a typed array. No tensor travels as a JSON list of numbers.

One serializer (:data:`array_serialization`, i.e. :func:`encode_tree` / :func:`decode_tree`) does
it for every trait: an :class:`NDArray` trait (one array) carries it itself, and a ``Dict`` or
``List`` trait holding arrays is tagged with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets as t

__all__ = ["encode_array", "decode_array", "encode_tree", "decode_tree", "SUPPORTED_DTYPES", "NDArray",
           "array_serialization"]

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


class NDArray(t.TraitType):
    """A trait holding one numpy array, synced to the view as one binary buffer.

    Assigned values (numpy arrays, torch tensors, nested lists) are converted to ``dtype`` and
    checked against ``ndim``; the view receives ``{view, dtype, shape}`` and decodes it with
    ``js/src/lib/codec.js``. ``dtype`` may be a tuple of allowed dtypes: a value of one of them is
    kept as it is (e.g. ``("uint16", "int32")``: small counts at half the bytes), others are
    converted to the first that holds them. ``None`` is allowed with ``allow_none=True``.

    Examples
    --------
    >>> values = NDArray("float32", ndim=1).tag(sync=True)
    """

    info_text = "a numeric array"

    def __init__(self, dtype="float32", ndim: Any = None, *, allow_none: bool = False, **kwargs):
        dtypes = (dtype,) if isinstance(dtype, str) else tuple(dtype)
        bad = [d for d in dtypes if d not in SUPPORTED_DTYPES]
        if bad or not dtypes:
            raise ValueError(f"dtype must be among {SUPPORTED_DTYPES}, got {dtype!r}")
        self.dtypes = tuple(np.dtype(d) for d in dtypes)
        self.ndim = ndim
        shape = (0,) * (ndim if isinstance(ndim, int) else 1)
        super().__init__(default_value=None if allow_none else np.zeros(shape, self.dtypes[0]),
                         allow_none=allow_none, **kwargs)
        self.metadata.update(array_serialization)
        self.info_text = (f"a {' or '.join(dtypes)} array"
                          + (f" with {ndim} dimensions" if ndim is not None else ""))

    def _fail(self, obj, why: str):
        raise t.TraitError(f"the {self.name!r} trait of {type(obj).__name__} must be {self.info_text}; {why}")

    def validate(self, obj, value):
        if value is None:
            if self.allow_none:
                return None
            self._fail(obj, "got None")
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        try:
            a = np.asarray(value)
        except (TypeError, ValueError) as e:
            self._fail(obj, f"got {type(value).__name__} ({e})")
        if a.dtype.kind not in "biuf":
            if a.size:
                self._fail(obj, f"got dtype {a.dtype}")
            a = a.astype(self.dtypes[0])
        ndims = (self.ndim,) if isinstance(self.ndim, int) else self.ndim
        if ndims is not None and a.ndim not in ndims:
            self._fail(obj, f"got shape {a.shape}")
        if a.dtype in self.dtypes:
            return np.ascontiguousarray(a)
        why = ""
        for target in self.dtypes:  # the first allowed dtype that holds the values
            if target.kind in "iu":
                if a.dtype.kind == "f":
                    why = "got floats"
                    continue
                info = np.iinfo(target)
                if a.size and (a.min() < info.min or a.max() > info.max):
                    why = f"values {a.min()}..{a.max()} do not fit"
                    continue
            return np.ascontiguousarray(a, dtype=target)
        self._fail(obj, why)
