"""Jobs from a notebook without blocking the kernel: ``mw.jobs.scan(...)`` and ``mw.jobs.areas(...)``.

The job runs in a background thread (the same checkpointed job as the command line), and a
small widget shows its progress (texts, tokens per second, ETA) with a Cancel button. Cancel
stops the job after its next checkpoint; running the same job again continues from there.
"""

from __future__ import annotations

import threading
from typing import Optional

from .runner import JobCancelled, JobSpec, run_job
from .sources import CorpusSource

__all__ = ["Job", "scan", "areas"]


def _fmt_s(s: Optional[float]) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Job:
    """A job running in a background thread, with a progress widget (:attr:`widget`).

    Attributes
    ----------
    spec : the :class:`~mri_widgets.jobs.runner.JobSpec`.
    status : ``"running"``, ``"done"``, ``"cancelled"`` or ``"error"``.
    progress : the last progress report (``texts``, ``total``, ``tokens``, ``tokens_per_s``, ``eta_s``).
    error : the exception of a failed job (None otherwise).
    widget : an ipywidgets box (progress bar, label, Cancel button); displaying the Job shows it.
    """

    def __init__(self, spec: JobSpec, *, start: bool = True):
        import ipywidgets as W

        self.spec = spec
        self.status = "pending"
        self.progress: dict = {}
        self.error: Optional[BaseException] = None
        self._result = None
        self._cancel = threading.Event()
        self._bar = W.IntProgress(value=0, min=0, max=1, description=spec.kind,
                                  layout=W.Layout(width="320px"))
        self._label = W.Label(value="starting")
        self._button = W.Button(description="Cancel", button_style="warning", tooltip="stop after the next checkpoint")
        self._button.on_click(lambda _b: self.cancel())
        self.widget = W.HBox([self._bar, self._label, self._button])
        self._thread = threading.Thread(target=self._run, name=f"mri_widgets job {spec.out}", daemon=True)
        if start:
            self.start()

    def start(self) -> "Job":
        """Start the thread (done by the constructor unless ``start=False``)."""
        if self.status == "pending":
            self.status = "running"
            self._thread.start()
        return self

    def _on_progress(self, p: dict) -> None:
        self.progress = p
        total = p.get("total")
        if total:
            self._bar.max = total
            self._bar.value = min(p["texts"], total)
        of = f"/{total:,}" if total else ""
        self._label.value = (f"{p['texts']:,}{of} texts, {p['tokens_per_s']:,.0f} tok/s, "
                             f"ETA {_fmt_s(p.get('eta_s'))}")

    def _run(self) -> None:
        try:
            self._result = run_job(self.spec, progress=False, cancel=self._cancel, on_progress=self._on_progress)
            self.status = "done"
            self._label.value = f"done: {self.spec.out}"
            self._bar.bar_style = "success"
            self._bar.value = self._bar.max
        except JobCancelled as e:
            self.status, self.error = "cancelled", e
            self._label.value = "cancelled: run the same job again to continue"
            self._bar.bar_style = "warning"
        except BaseException as e:  # shown in the widget, raised again by result()
            self.status, self.error = "error", e
            self._label.value = f"error: {e}"
            self._bar.bar_style = "danger"
        finally:
            self._button.disabled = True

    def cancel(self) -> None:
        """Ask the job to stop after its next checkpoint (the checkpoint is kept)."""
        self._cancel.set()
        self._button.disabled = True
        self._label.value = "cancelling after the next checkpoint"

    @property
    def done(self) -> bool:
        """Whether the thread has finished (done, cancelled or failed)."""
        return self.status != "pending" and not self._thread.is_alive()

    def result(self, timeout: Optional[float] = None):
        """Wait for the job and return its NeuronScan or ActivationAreas (raises what the job raised)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the job is still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self._result

    def __repr__(self) -> str:
        return f"Job({self.spec.kind!r}, out={self.spec.out!r}, status={self.status!r})"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _source(corpus, text_column, label_column, split, config) -> CorpusSource:
    if isinstance(corpus, CorpusSource):
        return corpus
    return CorpusSource(corpus, text_column=text_column, label_column=label_column, split=split, config=config)


def scan(model, corpus, out, *, k: int = 16, layers=None, max_length: Optional[int] = None,
         batch_tokens: Optional[int] = None, checkpoint_every: int = 1024, keep_texts: bool = True,
         text_column: str = "text", split: str = "train", config: Optional[str] = None,
         dtype=None, device=None, device_map=None, checkpoint: Optional[str] = None) -> Job:
    """Scan a corpus file for a :class:`~mri_widgets.NeuronScan` in the background; returns a :class:`Job`.

    The same job as ``mri-widgets scan`` (arguments of the same names): written to ``out``,
    checkpointed every ``checkpoint_every`` texts. ``model`` is an id, a folder, ``"demo"`` or a
    loaded model; ``corpus`` a file, a dataset name or a :class:`CorpusSource`.

    Examples
    --------
    >>> job = mw.jobs.scan("demo", "corpus.txt", "scan.npz", layers="10-12")   # doctest: +SKIP
    >>> job            # progress bar with a Cancel button                       # doctest: +SKIP
    >>> scan = job.result()                                                     # doctest: +SKIP
    """
    spec = JobSpec(kind="scan", model=model, corpus=_source(corpus, text_column, None, split, config), out=out,
                   dtype=dtype, device=device, device_map=device_map, layers=layers, k=k, max_length=max_length,
                   batch_tokens=batch_tokens, checkpoint_every=checkpoint_every, keep_texts=keep_texts,
                   checkpoint=checkpoint)
    return Job(spec)


def areas(model, corpus, out, *, site: str = "resid", pool: str = "mean", reduction: str = "pca", grid: int = 10,
          n_components: int = 2, seed: int = 0, layers=None, max_length: Optional[int] = None,
          batch_tokens: Optional[int] = None, checkpoint_every: int = 1024, text_column: str = "text",
          label_column: Optional[str] = None, split: str = "train", config: Optional[str] = None,
          dtype=None, device=None, device_map=None, checkpoint: Optional[str] = None) -> Job:
    """Compute :class:`~mri_widgets.ActivationAreas` of a corpus file in the background; returns a :class:`Job`.

    The same job as ``mri-widgets areas``; see :func:`scan`.
    """
    spec = JobSpec(kind="areas", model=model, corpus=_source(corpus, text_column, label_column, split, config),
                   out=out, dtype=dtype, device=device, device_map=device_map, layers=layers, site=site, pool=pool,
                   reduction=reduction, grid=grid, n_components=n_components, seed=seed, max_length=max_length,
                   batch_tokens=batch_tokens, checkpoint_every=checkpoint_every, checkpoint=checkpoint)
    return Job(spec)
