"""Small labelled corpora shipped with mri_widgets (no download needed).

``emotions()``: 440 short English sentences written for this project, 110
each for joy, sadness, anger and fear. Stored as ``emotions.tsv`` (UTF-8,
columns ``label`` and ``text``) inside this package.
"""

from __future__ import annotations

import csv
import io
from importlib import resources

from mri_widgets.corpus import Corpus

__all__ = ["emotions", "EMOTION_LABELS"]

EMOTION_LABELS = ("joy", "sadness", "anger", "fear")


def _read_tsv(name: str) -> tuple[list[str], list[str]]:
    data = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(data), delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def emotions() -> Corpus:
    """The demo emotion corpus.

    Returns
    -------
    Corpus
        440 sentences (6 to 20 words each, no duplicates), 110 per label;
        ``label_names`` in the order joy, sadness, anger, fear.

    Examples
    --------
    >>> from mri_widgets.datasets import emotions
    >>> corpus = emotions()
    >>> corpus.counts
    {'joy': 110, 'sadness': 110, 'anger': 110, 'fear': 110}
    """
    texts, labels = _read_tsv("emotions.tsv")
    return Corpus(texts, labels, label_names=EMOTION_LABELS)
