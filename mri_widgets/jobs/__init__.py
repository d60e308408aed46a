"""Batch jobs over corpus files: the command line, resumable and distributed runs.

``mri-widgets scan MODEL CORPUS --out scan.npz`` (or ``python -m mri_widgets scan ...``) streams
a corpus through a model in checkpointed chunks; see :mod:`mri_widgets.jobs.cli`,
:mod:`mri_widgets.jobs.runner` and :mod:`mri_widgets.jobs.sources`.
"""

from .runner import JobCancelled, JobError, JobSpec, run_job
from .sources import CorpusFileError, CorpusSource

__all__ = ["CorpusSource", "CorpusFileError", "JobSpec", "JobError", "JobCancelled", "run_job"]
