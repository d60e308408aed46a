"""``python -m mri_widgets scan|areas ...``: the command line (see :mod:`mri_widgets.jobs.cli`)."""

import sys

from mri_widgets.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
