"""Checkpoint formats: official ``.ckpt`` files (read-only) and our ``save_pretrained`` directories."""
