"""``python -m attrboost.study``: run the study (:mod:`attrboost.study.cli`)."""
import sys

from .cli import main

sys.exit(main())
