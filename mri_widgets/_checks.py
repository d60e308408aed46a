"""Argument checks shared by every room: integers, booleans, choices and layer lists.

One helper per kind of argument, so that every public function accepts and rejects the same
inputs with the same words. Each helper takes ``error=`` so that a module can keep raising its
own exception class (a subclass of ``ValueError``); type mistakes raise ``TypeError`` and
out-of-range indices ``IndexError``, as Python itself does.
"""

from __future__ import annotations

import numbers
import re
from typing import Optional, Sequence

import numpy as np

__all__ = ["check_int", "check_bool", "check_choice", "parse_layers", "check_index", "check_target"]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, *, min: Optional[int] = None, max: Optional[int] = None,
              error: type = ValueError, hint: str = "") -> int:
    """``value`` as a Python ``int``, or a clear error.

    Accepts Python and numpy integers. Rejects booleans, floats (even ``2.0``: a float where an
    integer belongs is usually a mistake), strings and ``None``. ``min`` / ``max`` are inclusive.
    """
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}){hint}")
    v = int(value)
    if min is not None and v < min:
        raise error(f"{name} must be >= {min}, got {v}{hint}")
    if max is not None and v > max:
        raise error(f"{name} must be <= {max}, got {v}{hint}")
    return v


def check_bool(value, name: str) -> bool:
    """``value`` as a Python ``bool``; strings such as ``"no"`` are rejected, not read as true."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_choice(value, choices: Sequence, name: str, *, error: type = ValueError, hint: str = ""):
    """``value`` if it is one of ``choices`` (compared by equality, strings case-sensitively)."""
    try:
        ok = value in tuple(choices)
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok or isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        raise error(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}{hint}")
    return value


def check_index(value, n: int, name: str) -> int:
    """An index into ``n`` items (negative counts from the end) as a non-negative ``int``."""
    i = check_int(value, name)
    if not -n <= i < n:
        if n == 0:
            raise IndexError(f"{name} {i} is out of range: there are none")
        raise IndexError(f"{name} {i} is out of range: there are {n} (0..{n - 1}, or -1 for the last)")
    return i % n


_RANGE = re.compile(r"^\s*(\d+)\s*(?:(-|:|\.\.)\s*(\d+))?\s*$")


def _parse_layer_string(text: str, name: str) -> list[int]:
    """``"12"``, ``"20-21"`` (inclusive), ``"8:12"`` (Python slice, end excluded), ``"1,3,5-7"``."""
    out: list[int] = []
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise ValueError(f"{name} {text!r} names no layer: write e.g. '12', '20-21' or '1,3,5-7'")
    for part in parts:
        if re.fullmatch(r"-\d+", part):  # a single negative index counts from the end
            out.append(int(part))
            continue
        m = _RANGE.match(part)
        if m is None:
            raise ValueError(f"cannot read {name} {text!r}: write layer numbers such as '12', a range "
                             "such as '20-21' (both included) or '8:12' (12 excluded), separated by commas")
        a = int(m.group(1))
        if m.group(2) is None:
            out.append(a)
            continue
        b = int(m.group(3))
        stop = b + 1 if m.group(2) in ("-", "..") else b
        if stop <= a:
            raise ValueError(f"{name} range {part!r} is empty: write the smaller layer first, e.g. '20-21'")
        out.extend(range(a, stop))
    return out


def parse_layers(layers, n: int, *, name: str = "layers", what: str = "layer", default=None,
                 error: type = ValueError, unique: bool = True, sort: bool = False) -> list[int]:
    """A layer selection as a list of indices in ``0..n-1``.

    Accepts ``None`` (``default``, or all ``n`` layers when ``default`` is None), one integer, a
    sequence, ``range`` or 1-D integer array, and strings: ``"12"``, ``"20-21"`` (inclusive),
    ``"8:12"`` (end excluded) or ``"1,3,5-7"``. Negative integers count from the end. Booleans,
    floats and characters are rejected (``"12"`` is layer 12, never layers 1 and 2). Duplicates
    are dropped (``unique``), keeping the first occurrence; ``sort`` sorts the result.
    """
    if layers is None:
        sel = list(range(n)) if default is None else list(default)
    elif isinstance(layers, (str, bytes)):
        if isinstance(layers, bytes):
            raise TypeError(f"{name} must be integers or a string such as '20-21', got bytes {layers!r}")
        sel = _parse_layer_string(layers, name)
    elif _is_int(layers):
        sel = [layers]
    elif isinstance(layers, (float, numbers.Real)) and not isinstance(layers, bool):
        raise TypeError(f"{name} must be integers, got {layers!r}: layer indices are whole numbers")
    else:
        if isinstance(layers, np.ndarray):
            if layers.ndim != 1:
                raise TypeError(f"{name} must be a 1-D list of integers, got an array of shape {layers.shape}")
            layers = layers.tolist()
        try:
            sel = list(layers)
        except TypeError:
            raise TypeError(f"{name} must be None, an integer, a list of integers or a string such as "
                            f"'20-21', got {type(layers).__name__}") from None
        for v in sel:
            if not _is_int(v):
                raise TypeError(f"{name} must hold integers, got {v!r} ({type(v).__name__}) in {layers!r}")
    if not sel:
        raise error(f"{name} is empty: pass None for the default, or some layers such as [10, 11]")
    out = []
    for v in sel:
        v = int(v)
        if not -n <= v < n:
            raise IndexError(f"{what} {v} is out of range: this model has {n} ({what}s 0..{n - 1})")
        out.append(v % n)
    if unique:
        out = list(dict.fromkeys(out))
    if sort:
        out.sort()
    return out


_TARGET_HELP = "None (the model's own prediction), a single-token string such as ' Paris', or a token id"


def check_target(lm, target, *, shape: Optional[tuple] = None, error: type = ValueError):
    """A target token as ``None``, one token id (``int``) or, with ``shape``, an int64 array of ids.

    ``lm`` is anything with ``vocab_size`` and ``token_id(text)`` (a
    :class:`~mri_widgets.models.loading.LoadedModel`). Accepts ``None``; a string that is exactly
    one token (``" Paris"``; otherwise the error says which tokens it splits into); a token id
    (Python or numpy integer, not a boolean); and, when ``shape`` is given, an integer array or
    list of that shape holding one id per row. Ids outside ``0..vocab_size-1`` raise ``error``.
    """
    V = int(lm.vocab_size)
    if target is None:
        return None
    if isinstance(target, str):
        if not target:
            raise error(f"target is an empty string; pass {_TARGET_HELP}")
        return int(lm.token_id(target))
    if _is_int(target):
        t = int(target)
        if not 0 <= t < V:
            raise error(f"target token id {t} is outside the vocabulary 0..{V - 1}")
        return t
    if shape is not None and not isinstance(target, (bytes, float, bool, np.bool_)) and hasattr(target, "__len__"):
        if hasattr(target, "detach"):  # a torch tensor
            target = target.detach().cpu().numpy()
        arr = np.asarray(target)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"per-row targets must be integer token ids, got an array of {arr.dtype}")
        if arr.shape != tuple(shape):
            raise error(f"per-row targets must have shape {tuple(shape)} (one id per vector), got {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= V):
            bad = int(arr[(arr < 0) | (arr >= V)].reshape(-1)[0])
            raise error(f"target token id {bad} is outside the vocabulary 0..{V - 1}")
        return arr.astype(np.int64)
    rows = ", or an integer array with one id per row" if shape is not None else ""
    raise TypeError(f"target must be {_TARGET_HELP}{rows}; got {target!r} ({type(target).__name__})")
