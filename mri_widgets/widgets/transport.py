"""Binary transport of numpy arrays in widget traits.

An array travels as ``{"view": memoryview, "dtype": "float32", "shape": [..]}``: ipywidgets
moves the memoryview as a binary buffer beside the JSON message, and ``js/src/lib/codec.js``
turns it back into a typed array. No tensor travels as a JSON list of numbers.

One serializer (:data:`array_serialization`, i.e. :func:`encode_tree` / :func:`decode_tree`) does
it for every trait: an :class:`NDArray` trait (one array) carries it itself, and a ``Dict`` or
``List`` trait holding arrays is tagged with it.

Large states are split (:func:`offload_state`): every message a view sends stays under
:data:`MESSAGE_CAP` (8 MiB; the Jupyter server refuses ~10 MiB). When the traits of one state
message would weigh more than :data:`STATE_BUDGET`, the heaviest traits travel as a placeholder
``{"mri_chunked": token, "nbytes", "n_chunks"}`` instead; the view fetches the trait's bytes in
pieces of at most :data:`CHUNK_BYTES` (one call each, see ``js/src/lib/chunks.js``), joins them
and decodes the trait as if it had come in the state. This works in every front end that answers
custom messages (Colab included); saved widget state does not hold offloaded traits.
"""

from __future__ import annotations

from typing import Any

import json
import struct
import uuid

import numpy as np
import traitlets as t

__all__ = ["encode_array", "decode_array", "encode_tree", "decode_tree", "SUPPORTED_DTYPES", "NDArray",
           "array_serialization", "MESSAGE_CAP", "STATE_BUDGET", "CHUNK_BYTES", "offload_state", "pack_value",
           "unpack_value", "message_bytes"]

#: no message to or from the view may be larger than this (bytes of JSON + binary buffers)
MESSAGE_CAP = 8 * 2 ** 20
#: a state message whose traits weigh more than this sends its heaviest traits in pieces
STATE_BUDGET = 6 * 2 ** 20
#: size of one piece of an offloaded trait (a reply carries one piece and a few hundred bytes of JSON)
CHUNK_BYTES = 4 * 2 ** 20

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


# ---------------------------------------------------------------- splitting large states
def _json_bytes(obj) -> int:
    return len(json.dumps(obj, ensure_ascii=False, allow_nan=True, default=str).encode("utf-8"))


def message_bytes(data, buffers=()) -> int:
    """Size of a comm message as it travels: its JSON text (UTF-8) plus its binary buffers."""
    return _json_bytes(data) + sum(memoryview(b).nbytes for b in (buffers or ()))


def _trait_bytes(value) -> int:
    from ipywidgets.widgets.widget import _remove_buffers

    state, _, buffers = _remove_buffers({"v": value})
    return _json_bytes(state) + sum(memoryview(b).nbytes for b in buffers)


def _pad8(n: int) -> int:
    return (8 - n % 8) % 8


def pack_value(value) -> bytes:
    """One serialised trait value (arrays already encoded) as bytes.

    Layout: uint32 little-endian header length, the header (UTF-8 JSON ``{"value", "buffer_paths",
    "sizes"}``, the value with its buffers removed), zero padding to a multiple of 8, then each
    buffer padded to a multiple of 8 (so typed arrays can view it without a copy).
    """
    from ipywidgets.widgets.widget import _remove_buffers

    state, paths, buffers = _remove_buffers({"v": value})
    views = [memoryview(b).cast("B") for b in buffers]
    header = json.dumps({"value": state["v"], "buffer_paths": [p[1:] for p in paths],
                         "sizes": [v.nbytes for v in views]}, ensure_ascii=False, allow_nan=True).encode("utf-8")
    parts = [struct.pack("<I", len(header)), header, b"\0" * _pad8(4 + len(header))]
    for v in views:
        parts += [v, b"\0" * _pad8(v.nbytes)]
    return b"".join(parts)


def unpack_value(blob: bytes):
    """Inverse of :func:`pack_value` (arrays as ``{view: memoryview, dtype, shape}``)."""
    blob = memoryview(blob)
    (n,) = struct.unpack("<I", blob[:4])
    head = json.loads(bytes(blob[4:4 + n]).decode("utf-8"))
    off = 4 + n + _pad8(4 + n)
    value = {"v": head["value"]}
    for path, size in zip(head["buffer_paths"], head["sizes"]):
        o = value["v"] if path else value
        for k in path[:-1]:
            o = o[k]
        if path:
            o[path[-1]] = blob[off:off + size]
        else:
            value["v"] = blob[off:off + size]
        off += size + _pad8(size)
    return value["v"]


class Offloaded:
    """The pieces of traits that a widget sends on request (held by :func:`offload_state`)."""

    def __init__(self):
        self.blobs: dict = {}   # token -> bytes
        self.tokens: dict = {}  # trait name -> its latest token

    def put(self, name: str, blob: bytes) -> dict:
        old = self.tokens.pop(name, None)
        if old is not None:
            self.blobs.pop(old, None)
        token = f"{name}-{uuid.uuid4().hex[:12]}"
        self.tokens[name], self.blobs[token] = token, blob
        return {"mri_chunked": token, "nbytes": len(blob), "n_chunks": max(1, -(-len(blob) // CHUNK_BYTES))}

    def drop(self, name: str) -> None:
        token = self.tokens.pop(name, None)
        if token is not None:
            self.blobs.pop(token, None)

    def chunk(self, token: str, index: int) -> np.ndarray:
        blob = self.blobs.get(token)
        if blob is None:
            raise KeyError(f"no pending data {token!r}: the trait changed since; the view redraws with the new one")
        n = max(1, -(-len(blob) // CHUNK_BYTES))
        if not 0 <= index < n:
            raise IndexError(f"chunk {index} of {token!r} out of range 0..{n - 1}")
        return np.frombuffer(blob, np.uint8, count=min(CHUNK_BYTES, len(blob) - index * CHUNK_BYTES),
                             offset=index * CHUNK_BYTES)


def offload_state(state: dict, store: Offloaded, budget: int = STATE_BUDGET) -> dict:
    """Replace the heaviest traits of a serialised ``state`` by placeholders until it fits ``budget``.

    Returns a new dict (``state`` itself is not changed). A trait that fits is sent as it is, and
    its earlier pieces, if any, are dropped.
    """
    sizes = {k: _trait_bytes(v) for k, v in state.items()}
    total = sum(sizes.values())
    out = dict(state)
    for k in sorted(sizes, key=sizes.get, reverse=True):
        if total <= budget:
            break
        if sizes[k] <= 1024:  # never worth a round trip
            break
        out[k] = store.put(k, pack_value(state[k]))
        total += _json_bytes(out[k]) - sizes[k]
    for k in state:
        if out[k] is state[k]:
            store.drop(k)
    return out
