"""Data loading: training batch streams (image folders, WebDataset shards, video clips) and video files (PyAV).

``build_image_stream`` / ``build_video_stream`` return a :class:`BatchStream`: an endless iterator of batches that
resumes exactly from its ``state_dict`` and splits the data over torchrun ranks (``docs/data.md``).
"""

from open_magvit2.data.clips import Clip, ClipSpec, build_video_stream, read_clip
from open_magvit2.data.images import build_image_stream
from open_magvit2.data.sampler import FolderIndex, scan_folder
from open_magvit2.data.stream import BatchStream
from open_magvit2.data.transforms import ImageTransform

__all__ = [
    "BatchStream",
    "Clip",
    "ClipSpec",
    "FolderIndex",
    "ImageTransform",
    "build_image_stream",
    "build_video_stream",
    "read_clip",
    "scan_folder",
]
