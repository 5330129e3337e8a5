"""Data loading: video files (PyAV)."""
