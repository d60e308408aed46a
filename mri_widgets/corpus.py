"""A labelled text corpus: the input of activation-region analyses.

`Corpus` holds texts and one label per text. Labels are stored as strings;
`label_names` fixes their order and `label_ids` gives each text's index into
`label_names`, which is what the numeric analyses (`mri_widgets.analysis`) use.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Corpus"]


def _label_sort_key(name: str) -> tuple:
    """Sort integer-looking labels numerically ("2" < "10"), then others as text."""
    stripped = name[1:] if name.startswith("-") else name
    if stripped.isdigit():
        return (0, int(name), "")
    return (1, 0, name)


def _is_missing(value: Any) -> bool:
    """True for the values pandas and numpy use for "no value": None, NaN (any float type),
    ``pd.NA`` and ``NaT``; decided without importing pandas."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    return type(value).__name__ in ("NAType", "NaTType")


def _as_label(value: Any, index: int) -> tuple[str, type]:
    """Validate one label: its text and the type that text came from (numpy scalars as Python)."""
    if _is_missing(value):
        raise ValueError(
            f"label at position {index} is missing ({value!r}); drop or fill "
            "unlabelled rows before building a Corpus (Corpus.from_pandas(..., missing='drop') "
            "drops them)."
        )
    if not isinstance(value, Hashable):
        raise TypeError(
            f"label at position {index} is a {type(value).__name__}, which is not "
            "hashable; use one string or number per text."
        )
    if isinstance(value, np.generic):
        value = value.item()
    return str(value), type(value)


def _labels_as_text(labels: list) -> list[str]:
    """Labels as strings, keeping apart labels that differ in value or type.

    The rule: two labels are the same label when they have the same type and the same value
    (``1``, ``1.0``, ``True`` and ``'1'`` are four labels; numpy scalars count as the Python
    type they hold). Each is stored as ``str(label)``; when two different labels would print
    the same (``1`` and ``'1'``), that is an error naming both positions rather than a silent
    merge. Missing labels (None, NaN, ``pd.NA``, ``NaT``) are an error naming all their positions.
    """
    missing = [i for i, v in enumerate(labels) if _is_missing(v)]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} label(s) missing ({labels[missing[0]]!r}) at position(s) {shown}; drop or "
            "fill unlabelled rows before building a Corpus (Corpus.from_pandas(..., missing='drop') "
            "drops them)."
        )
    out: list[str] = []
    seen: dict[str, tuple[type, int]] = {}
    for i, v in enumerate(labels):
        text, kind = _as_label(v, i)
        first = seen.setdefault(text, (kind, i))
        if first[0] is not kind:
            raise ValueError(
                f"labels at positions {first[1]} ({first[0].__name__}) and {i} ({kind.__name__}) both "
                f"read {text!r}: labels are compared by value and type, so these are two labels that "
                "would print the same. Make the label column one type, e.g. "
                "[str(x) for x in labels] or df[col].astype(str)."
            )
        out.append(text)
    return out


class Corpus:
    """Texts with one label each.

    Parameters
    ----------
    texts : sequence of str
        Non-empty strings, one per document.
    labels : sequence of hashable
        One label per text (numbers, strings, ...); stored as ``str``. Two labels are the
        same label when they have the same value *and* type: ``1``, ``1.0``, ``True`` and
        ``'1'`` are four labels (numpy scalars count as the Python type they hold). Labels
        that differ but print the same (``1`` and ``'1'``) raise ``ValueError`` instead of
        merging; missing labels (None, NaN of any float type, ``pd.NA``, ``NaT``) raise
        ``ValueError`` naming their positions.
    label_names : sequence of str, optional
        Order of the label names (may include labels with no text, which is
        how `subset` keeps the ids of its parent). Default: the distinct
        labels, integer-looking ones in numeric order, then the rest sorted.

    Attributes
    ----------
    texts : list of str
    labels : list of str
    label_names : list of str
    label_ids : numpy.ndarray of int64, shape (n_texts,)
        ``label_names[label_ids[i]] == labels[i]``.

    Examples
    --------
    >>> c = Corpus(["I won!", "I lost."], ["joy", "sadness"])
    >>> c.label_names, c.label_ids.tolist()
    (['joy', 'sadness'], [0, 1])
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[Hashable],
        *,
        label_names: Sequence[str] | None = None,
    ):
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            raise TypeError("texts must be a list of strings, not a single string.")
        if isinstance(labels, str) or not isinstance(labels, Iterable):
            raise TypeError("labels must be a list with one label per text.")
        texts = list(texts)
        labels = list(labels)
        if len(texts) == 0:
            raise ValueError("a Corpus needs at least one text; got none.")
        if len(texts) != len(labels):
            raise ValueError(
                f"got {len(texts)} texts but {len(labels)} labels; pass one label per text."
            )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(
                    f"text at position {i} is a {type(t).__name__}, not str; "
                    "convert or drop it (missing values show up as float NaN)."
                )
            if not t.strip():
                raise ValueError(f"text at position {i} is empty; drop empty texts.")
        self.texts: list[str] = texts
        self.labels: list[str] = _labels_as_text(labels)
        present = set(self.labels)
        if label_names is None:
            names = sorted(present, key=_label_sort_key)
        else:
            names = [str(n) for n in label_names]
            if len(set(names)) != len(names):
                raise ValueError(f"label_names has duplicates: {names}")
            missing = present.difference(names)
            if missing:
                raise ValueError(
                    f"labels {sorted(missing)} are not in label_names {names}; "
                    "add them or leave label_names out."
                )
        self.label_names: list[str] = names
        index = {n: i for i, n in enumerate(names)}
        self.label_ids: np.ndarray = np.fromiter(
            (index[v] for v in self.labels), dtype=np.int64, count=len(self.labels)
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key):
        """``corpus[i]`` -> ``(text, label)``; a slice or index array -> Corpus."""
        if isinstance(key, (int, np.integer)):
            return self.texts[key], self.labels[key]
        if isinstance(key, slice):
            return self.subset(range(len(self))[key])
        return self.subset(key)

    def __iter__(self):
        return iter(zip(self.texts, self.labels))

    @property
    def counts(self) -> dict[str, int]:
        """Number of texts per label, in `label_names` order (zeros included)."""
        c = np.bincount(self.label_ids, minlength=len(self.label_names))
        return {n: int(k) for n, k in zip(self.label_names, c)}

    def indices(self, label: str) -> np.ndarray:
        """Positions of the texts that carry ``label``.

        Raises
        ------
        KeyError
            If ``label`` is not one of `label_names`.
        """
        return np.flatnonzero(self.label_ids == self.label_id(label))

    def label_id(self, label: str) -> int:
        """Index of ``label`` in `label_names` (KeyError listing the names if absent)."""
        try:
            return self.label_names.index(str(label))
        except ValueError:
            raise KeyError(
                f"unknown label {label!r}; known labels: {self.label_names}"
            ) from None

    def subset(self, indices) -> "Corpus":
        """A new Corpus with the texts at ``indices`` (ints or a boolean mask).

        The subset keeps this corpus's `label_names`, so label ids agree.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"boolean mask has shape {idx.shape}; expected ({len(self)},)."
                )
            idx = np.flatnonzero(idx)
        elif idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError("subset takes integer positions or a boolean mask.")
        idx = idx.astype(np.int64).ravel()
        if idx.size == 0:
            raise ValueError("subset selects no text; a Corpus cannot be empty.")
        if idx.min() < -len(self) or idx.max() >= len(self):
            raise IndexError(f"subset index out of range for a corpus of {len(self)}.")
        return Corpus(
            [self.texts[i] for i in idx],
            [self.labels[i] for i in idx],
            label_names=self.label_names,
        )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_pandas(cls, df, text: str = "text", label: str = "label", *,
                    missing: str = "error") -> "Corpus":
        """Build from a pandas DataFrame with a text column and a label column.

        Parameters
        ----------
        missing : {"error", "drop"}
            What to do with rows whose label or text is missing (None, NaN, ``pd.NA``,
            ``NaT``): ``"error"`` (default) raises ``ValueError`` naming those rows (by the
            DataFrame's index); ``"drop"`` leaves them out. A missing value never becomes a
            label such as ``'<NA>'`` or ``'nan'``.

        Labels follow the rule of `Corpus`: compared by value and type, stored as ``str``.

        Raises
        ------
        KeyError
            If a column is missing (the message lists the columns).
        ValueError
            For missing labels or texts with ``missing="error"``, or labels of different
            types that print the same (``1`` and ``'1'``).
        """
        from ._checks import check_choice
        check_choice(missing, ("error", "drop"), "missing")
        for col in (text, label):
            if col not in df.columns:
                raise KeyError(
                    f"column {col!r} not found; columns are {list(df.columns)}. "
                    "Pass text=... and label=... to name them."
                )
        texts = df[text].tolist()
        labels = df[label].tolist()
        rows = list(df.index)
        bad = [i for i, (t, y) in enumerate(zip(texts, labels)) if _is_missing(y) or _is_missing(t)]
        if bad and missing == "error":
            shown = ", ".join(repr(rows[i]) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise ValueError(
                f"{len(bad)} row(s) have a missing {label!r} or {text!r} (e.g. row {rows[bad[0]]!r}: "
                f"label {labels[bad[0]]!r}); rows {shown}. Drop or fill them, or pass missing='drop'."
            )
        if bad:
            drop = set(bad)
            keep = [i for i in range(len(texts)) if i not in drop]
            texts = [texts[i] for i in keep]
            labels = [labels[i] for i in keep]
        return cls(texts, labels)

    @classmethod
    def from_hf(cls, dataset, text: str = "text", label: str = "label") -> "Corpus":
        """Build from a Hugging Face ``datasets.Dataset`` (or any column mapping).

        Works by duck typing, so `datasets` need not be installed: ``dataset[col]``
        must give a column. When ``dataset.features[label]`` has ``names`` (a
        ``ClassLabel``), integer labels are mapped to those names and the names'
        order is kept as `label_names`.

        Raises
        ------
        TypeError
            For a ``DatasetDict`` (pick a split, e.g. ``ds["train"]``).
        KeyError
            If a column is missing.
        """
        columns = _hf_columns(dataset)
        for col in (text, label):
            if col not in columns:
                raise KeyError(
                    f"column {col!r} not found; columns are {columns}. "
                    "Pass text=... and label=... to name them."
                )
        texts = list(dataset[text])
        raw = list(dataset[label])
        features = getattr(dataset, "features", None)
        feature = features.get(label) if isinstance(features, Mapping) else None
        names = getattr(feature, "names", None)
        if not names:
            return cls(texts, raw)
        names = [str(n) for n in names]
        mapped = []
        for i, v in enumerate(raw):
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                if not 0 <= v < len(names):
                    raise ValueError(
                        f"label {v} at position {i} is outside the ClassLabel names "
                        f"{names} (e.g. -1 for unlabelled rows); filter those rows first."
                    )
                mapped.append(names[v])
            else:
                mapped.append(v)
        return cls(texts, mapped, label_names=names)

    # ---------------------------------------------------------------- display
    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {k}" for n, k in self.counts.items())
        return f"Corpus({len(self)} texts; {parts})"


def _hf_columns(dataset) -> list[str]:
    """Column names of a Dataset-like object, rejecting DatasetDicts."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, Mapping) or (
        isinstance(dataset, Mapping)
        and dataset
        and all(hasattr(v, "column_names") for v in dataset.values())
    ):
        raise TypeError(
            f"got several splits {list(dataset.keys())}; pass one, e.g. dataset['train']."
        )
    if names is not None:
        return list(names)
    if isinstance(dataset, Mapping):
        return list(dataset.keys())
    raise TypeError(
        f"{type(dataset).__name__} is not a dataset: expected a datasets.Dataset "
        "or a mapping of column name -> values."
    )
