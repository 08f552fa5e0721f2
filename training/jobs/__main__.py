"""``python -m training.jobs run RUN_ID``: the training job process (training.jobs.process)."""

import sys

from training.jobs.process import main

sys.exit(main())
