"""Corpus validation, constructors, and the shipped emotions corpus."""

import re

import numpy as np
import pandas as pd
import pytest

from mri_widgets.corpus import Corpus
from mri_widgets.datasets import EMOTION_LABELS, emotions


def test_basic_attributes_and_ids():
    c = Corpus(["a b", "c d", "e f", "g h"], ["fear", "joy", "fear", 3])
    assert c.texts == ["a b", "c d", "e f", "g h"]
    assert c.labels == ["fear", "joy", "fear", "3"]
    assert c.label_names == ["3", "fear", "joy"]  # numeric-looking first, then sorted
    np.testing.assert_array_equal(c.label_ids, [1, 2, 1, 0])
    assert c.label_ids.dtype == np.int64
    assert [c.label_names[i] for i in c.label_ids] == c.labels
    assert len(c) == 4
    assert c[1] == ("c d", "joy")
    assert c.counts == {"3": 1, "fear": 2, "joy": 1}
    np.testing.assert_array_equal(c.indices("fear"), [0, 2])
    assert "fear: 2" in repr(c) and "4 texts" in repr(c)


def test_numeric_labels_sort_numerically():
    c = Corpus(["x"] * 3, [10, 2, -1])
    assert c.label_names == ["-1", "2", "10"]


@pytest.mark.parametrize(
    "texts, labels, err, match",
    [
        ([], [], ValueError, "at least one"),
        (["a"], ["x", "y"], ValueError, "1 texts but 2 labels"),
        (["a", 3], ["x", "y"], TypeError, "position 1"),
        (["a", float("nan")], ["x", "y"], TypeError, "position 1"),
        (["a", "  "], ["x", "y"], ValueError, "empty"),
        (["a", "b"], ["x", None], ValueError, "missing"),
        (["a", "b"], ["x", float("nan")], ValueError, "missing"),
        (["a", "b"], ["x", ["unhashable"]], TypeError, "hashable"),
        ("just one string", ["x"], TypeError, "single string"),
    ],
)
def test_bad_input_is_rejected_clearly(texts, labels, err, match):
    with pytest.raises(err, match=match):
        Corpus(texts, labels)


def test_label_names_option():
    c = Corpus(["a", "b"], ["y", "x"], label_names=["y", "x", "z"])
    assert c.label_names == ["y", "x", "z"]
    np.testing.assert_array_equal(c.label_ids, [0, 1])
    assert c.counts["z"] == 0
    with pytest.raises(ValueError, match="not in label_names"):
        Corpus(["a"], ["w"], label_names=["x"])
    with pytest.raises(KeyError, match="known labels"):
        c.indices("nope")


def test_subset_keeps_label_ids():
    c = Corpus(["a", "b", "c", "d"], ["x", "y", "z", "x"])
    s = c.subset([3, 1])
    assert s.texts == ["d", "b"] and s.labels == ["x", "y"]
    assert s.label_names == c.label_names
    np.testing.assert_array_equal(s.label_ids, [0, 1])
    m = c.subset(np.array([True, False, False, True]))
    assert m.texts == ["a", "d"]
    assert c[1:3].texts == ["b", "c"]
    with pytest.raises(ValueError, match="no text"):
        c.subset([])
    with pytest.raises(IndexError):
        c.subset([7])
    with pytest.raises(ValueError, match="mask"):
        c.subset(np.array([True, False]))


def test_from_pandas():
    df = pd.DataFrame({"sentence": ["hi there", "go away"], "y": [1, 0]})
    c = Corpus.from_pandas(df, text="sentence", label="y")
    assert c.texts == ["hi there", "go away"] and c.labels == ["1", "0"]
    with pytest.raises(KeyError, match="columns are"):
        Corpus.from_pandas(df)


class _ClassLabel:
    def __init__(self, names):
        self.names = names


class _FakeDataset:
    """Duck-typed stand-in for datasets.Dataset (column access + features)."""

    def __init__(self, columns, features=None):
        self._cols = columns
        self.column_names = list(columns)
        self.features = features or {}

    def __getitem__(self, key):
        return self._cols[key]


def test_from_hf_maps_class_labels():
    ds = _FakeDataset(
        {"text": ["good day", "bad day", "meh"], "label": [1, 0, 1]},
        {"text": object(), "label": _ClassLabel(["neg", "pos", "unused"])},
    )
    c = Corpus.from_hf(ds)
    assert c.labels == ["pos", "neg", "pos"]
    assert c.label_names == ["neg", "pos", "unused"]  # ClassLabel order kept
    np.testing.assert_array_equal(c.label_ids, [1, 0, 1])


def test_from_hf_plain_and_errors():
    ds = _FakeDataset({"t": ["a", "b"], "l": ["x", "y"]})
    assert Corpus.from_hf(ds, text="t", label="l").labels == ["x", "y"]
    assert Corpus.from_hf({"text": ["a"], "label": [5]}).labels == ["5"]
    with pytest.raises(KeyError, match="columns are"):
        Corpus.from_hf(ds)
    bad = _FakeDataset({"text": ["a"], "label": [-1]}, {"label": _ClassLabel(["n", "p"])})
    with pytest.raises(ValueError, match="outside the ClassLabel"):
        Corpus.from_hf(bad)
    splits = {"train": ds, "test": ds}
    with pytest.raises(TypeError, match="train"):
        Corpus.from_hf(splits)
    with pytest.raises(TypeError, match="not a dataset"):
        Corpus.from_hf(42)


def test_emotions_corpus():
    c = emotions()
    assert len(c) >= 400
    assert c.label_names == list(EMOTION_LABELS)
    counts = np.bincount(c.label_ids)
    assert counts.min() == counts.max() == len(c) // 4
    normalised = [re.sub(r"\W+", " ", t.lower()).strip() for t in c.texts]
    assert len(set(normalised)) == len(c), "duplicate sentences"
    n_words = np.array([len(t.split()) for t in c.texts])
    assert n_words.min() >= 6 and n_words.max() <= 20
    assert all("\t" not in t and t == t.strip() for t in c.texts)
