"""Fixtures of the data-pipeline tests: tiny image folders, tar shards and videos built in tmp dirs
(``data_builders.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # data_builders.py
