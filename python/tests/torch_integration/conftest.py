"""The shared test helpers of python/tests (checkpoints.py, ...) importable from this folder."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
