"""Moved to :mod:`open_magvit2.data.pretokenize` (the token-set writer is data preparation) and, for
``token_set_tokenizer``, :mod:`open_magvit2.data.tokens` (the format's reader).

A temporary alias, so that the importers the training rewrite owns (``train/generator_data.py``,
``tests/train/``) keep working until they import the new homes; then delete this file.
"""

import sys

from open_magvit2.data import pretokenize as _moved
from open_magvit2.data.tokens import token_set_tokenizer

_moved.token_set_tokenizer = token_set_tokenizer  # type: ignore[attr-defined]
sys.modules[__name__] = _moved
