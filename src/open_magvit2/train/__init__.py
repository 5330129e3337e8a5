"""Training: the tokenizer and generator trainers and what they share (recipes, checkpoints, run directory).

Import the trainers from their modules (``open_magvit2.train.tokenizer``, ``open_magvit2.train.generator``);
this package imports nothing heavy at import time.
"""
