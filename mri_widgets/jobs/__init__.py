"""Batch jobs over corpus files: the command line, resumable and distributed runs.

``mri-widgets scan MODEL CORPUS --out scan.npz`` (or ``python -m mri_widgets scan ...``) streams
a corpus through a model in checkpointed chunks; see :mod:`mri_widgets.jobs.cli`,
:mod:`mri_widgets.jobs.runner` and :mod:`mri_widgets.jobs.sources`. From a notebook,
``mw.jobs.scan(...)`` and ``mw.jobs.areas(...)`` run the same jobs in a background thread with a
progress widget and a Cancel button (:mod:`mri_widgets.jobs.background`).
"""

from .background import Job, areas, scan
from .runner import JobCancelled, JobError, JobSpec, run_job
from .sources import CorpusFileError, CorpusSource

__all__ = ["scan", "areas", "Job", "CorpusSource", "CorpusFileError", "JobSpec", "JobError", "JobCancelled", "run_job"]
