"""Corpora read as streams: text files, JSON lines, CSV, Parquet and Hugging Face datasets.

:class:`CorpusSource` names a corpus on disk (or on the Hub) and yields ``(text, label)``
records one at a time, so that a corpus never has to fit in memory. Every record is checked
as it is read, and a bad one raises :class:`CorpusFileError` naming the file and the line or
row, with what to do about it.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, Optional

from ..models.capture import CaptureError, check_texts

__all__ = ["CorpusSource", "CorpusFileError", "FORMATS"]

#: file formats read from disk, by extension
FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}

#: rows read at a time from CSV and Parquet files
_BLOCK_ROWS = 4096


class CorpusFileError(ValueError):
    """A corpus file or dataset that cannot be read as texts (and labels)."""


class CorpusSource:
    """A corpus read as a stream of ``(text, label)`` records.

    Parameters
    ----------
    source : str
        A ``.txt`` file (one text a line; blank lines are skipped and not counted), a ``.jsonl``
        file (one JSON object a line), a ``.csv`` or ``.parquet`` file (Parquet needs pyarrow),
        or else a Hugging Face dataset name or folder, read with ``datasets.load_dataset(...,
        streaming=True)`` (needs the optional package ``datasets``).
    text_column, label_column : str
        Columns (keys) of the text and of the label for every format but ``.txt``. Without a
        label column every label is ``None``.
    split, config : the dataset's split (default ``"train"``) and configuration, for datasets.

    Records are checked as they are read: a missing or blank text, a text that is not a string
    or not valid UTF-8, a JSON line that is not an object, a missing column or label raise
    :class:`CorpusFileError` naming the file and the line (or row).
    """

    def __init__(self, source: str, *, text_column: str = "text", label_column: Optional[str] = None,
                 split: str = "train", config: Optional[str] = None):
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"source must be a path or dataset name, got {type(source).__name__}")
        self.source = os.fspath(source)
        self.text_column, self.label_column = text_column, label_column
        self.split, self.config = split, config
        ext = os.path.splitext(self.source)[1].lower()
        if os.path.isfile(self.source):
            if ext not in FORMATS:
                raise CorpusFileError(f"{self.source!r}: unknown corpus format {ext or '(no extension)'!r}; use a "
                                      f"file ending in {', '.join(FORMATS)}, or a Hugging Face dataset name or folder")
            self.format = FORMATS[ext]
        elif ext in FORMATS:
            raise FileNotFoundError(f"no such corpus file: {self.source!r}")
        else:
            self.format = "dataset"
        if self.format == "txt" and label_column is not None:
            raise CorpusFileError(f"{self.source!r} is a .txt file (one text a line): it has no label column; "
                                  "use a .jsonl, .csv or .parquet file for labelled texts")

    def describe(self) -> dict:
        """What identifies the corpus (for checkpoints): source, format, columns, size of a file."""
        d = {"source": os.path.abspath(self.source) if self.format != "dataset" else self.source,
             "format": self.format, "text_column": self.text_column, "label_column": self.label_column}
        if self.format == "dataset":
            d.update(split=self.split, config=self.config)
        else:
            d["bytes"] = os.path.getsize(self.source)
        return d

    def __repr__(self) -> str:
        return f"CorpusSource({self.source!r}, format={self.format!r})"

    # ---- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple]:
        """Yield ``(text, label)`` records in file order, checked one by one."""
        reader = {"txt": self._txt, "jsonl": self._jsonl, "csv": self._csv, "parquet": self._parquet,
                  "dataset": self._dataset}[self.format]
        return reader()

    def count(self) -> Optional[int]:
        """Number of records, or None when it is not known without reading a stream to its end."""
        if self.format in ("txt", "jsonl"):
            n = 0
            with open(self.source, "rb") as f:
                for line in f:
                    n += bool(line.strip())
            return n
        if self.format == "parquet":
            return int(self._parquet_file().metadata.num_rows)
        if self.format == "csv":
            return sum(len(block) for block in self._csv_blocks())
        return None

    def _where(self, line: int) -> str:
        return f"{self.source!r} line {line}"

    def _check(self, text, label, where: str) -> tuple:
        if self.label_column is not None and _missing(label):
            raise CorpusFileError(f"{where}: the label {self.label_column!r} is missing; drop or fill the row")
        if _missing(text):
            raise CorpusFileError(f"{where}: the text {self.text_column!r} is missing; drop the row")
        try:
            check_texts([text], what="text")
        except CaptureError as e:
            raise CorpusFileError(f"{where}: {e}") from None
        if label is not None and not isinstance(label, (str, int, float, bool)):
            raise CorpusFileError(f"{where}: the label is a {type(label).__name__}; use one string or number per "
                                  "text")
        return text, label

    def _lines(self) -> Iterator[tuple]:
        with open(self.source, "rb") as f:
            for i, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusFileError(f"{self._where(i)} is not UTF-8 ({e.reason} at byte {e.start}); "
                                          "convert the file to UTF-8, e.g. iconv -f LATIN1 -t UTF-8") from None
                if i == 1:
                    line = line.lstrip("\ufeff")  # a byte-order mark
                line = line.rstrip("\r\n")
                if line.strip():
                    yield i, line

    def _txt(self):
        for i, line in self._lines():
            yield self._check(line, None, self._where(i))

    def _jsonl(self):
        for i, line in self._lines():
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise CorpusFileError(f"{self._where(i)} is not JSON ({e}); a .jsonl file holds one object a line") from None
            if not isinstance(obj, dict):
                raise CorpusFileError(f"{self._where(i)} is a JSON {type(obj).__name__}, not an object; write one "
                                      f'object a line, e.g. {{"{self.text_column}": "...", "label": "..."}}')
            yield self._record(obj, self._where(i))

    def _record(self, row, where: str) -> tuple:
        if self.text_column not in row:
            raise CorpusFileError(f"{where} has no column {self.text_column!r}; its columns are {list(row)}. "
                                  "Name the text column with --text-column")
        if self.label_column is not None and self.label_column not in row:
            raise CorpusFileError(f"{where} has no column {self.label_column!r}; its columns are {list(row)}. "
                                  "Name the label column with --label-column")
        label = None if self.label_column is None else row[self.label_column]
        return self._check(row[self.text_column], label, where)

    def _columns(self, columns, where: str) -> list:
        want = [self.text_column] + ([self.label_column] if self.label_column is not None else [])
        for c in want:
            if c not in columns:
                flag = "--text-column" if c == self.text_column else "--label-column"
                raise CorpusFileError(f"{where} has no column {c!r}; its columns are {list(columns)}. "
                                      f"Name it with {flag}")
        return want

    def _csv_blocks(self):
        import pandas as pd

        try:
            # every column as text: labels keep their spelling ("01" stays "01"); empty cells are missing
            reader = pd.read_csv(self.source, chunksize=_BLOCK_ROWS, dtype=str, keep_default_na=False,
                                 na_values=[""], encoding="utf-8")
            yield from reader
        except UnicodeDecodeError as e:
            raise CorpusFileError(f"{self.source!r} is not UTF-8 ({e.reason}); convert the file to UTF-8") from None
        except pd.errors.ParserError as e:
            raise CorpusFileError(f"{self.source!r} is not a readable CSV file: {e}") from None
        except pd.errors.EmptyDataError:
            raise CorpusFileError(f"{self.source!r} is empty: a CSV corpus needs a header row and texts") from None

    def _csv(self):
        row = 0
        for block in self._csv_blocks():
            cols = self._columns(block.columns, repr(self.source))
            for values in zip(*(block[c].tolist() for c in cols)):
                row += 1
                yield self._check(values[0], values[1] if len(values) > 1 else None,
                                  f"{self.source!r} row {row} (line {row + 1})")

    def _parquet_file(self):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("reading .parquet needs the optional package pyarrow: pip install pyarrow "
                              "(or convert the corpus to .jsonl or .csv)") from None
        try:
            return pq.ParquetFile(self.source)
        except Exception as e:  # pyarrow raises its own error types
            raise CorpusFileError(f"{self.source!r} is not a readable Parquet file: {e}") from None

    def _parquet(self):
        pf = self._parquet_file()
        cols = self._columns(pf.schema_arrow.names, repr(self.source))
        row = 0
        for batch in pf.iter_batches(batch_size=_BLOCK_ROWS, columns=cols):
            for values in zip(*(batch.column(c).to_pylist() for c in cols)):
                row += 1
                yield self._check(values[0], values[1] if len(values) > 1 else None, f"{self.source!r} row {row}")

    def _dataset(self):
        try:
            import datasets
        except ImportError:
            raise ImportError(f"{self.source!r} is not a corpus file ({', '.join(FORMATS)}), so it is read as a "
                              "Hugging Face dataset, which needs the optional package datasets: pip install "
                              "datasets") from None
        args = (self.source,) if self.config is None else (self.source, self.config)
        ds = datasets.load_dataset(*args, split=self.split, streaming=True)
        names = None
        features = getattr(ds, "features", None)
        if self.label_column is not None and features is not None:
            names = getattr(features.get(self.label_column), "names", None)
        for i, row in enumerate(ds):
            text, label = self._record(row, f"dataset {self.source!r} row {i}")
            if names and isinstance(label, int) and not isinstance(label, bool):
                if not 0 <= label < len(names):
                    raise CorpusFileError(f"dataset {self.source!r} row {i}: label {label} is outside the class names "
                                          f"{names} (e.g. -1 for unlabelled rows); filter those rows first")
                label = names[label]
            yield text, label


def _missing(value) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and value != value
