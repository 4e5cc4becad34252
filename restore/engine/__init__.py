"""Inference engine: run any registered model over clips of any length and frames of any size.

* ``temporal``: overlapping temporal chunks, cross-faded, streamed (memory does not grow with length);
* ``spatial``: overlapping spatial tiles with blended seams when a frame exceeds the memory budget;
* ``runner``: ``FrameRunner``, the entry point: integer frames in, the same integer type out, on the
  chosen device and precision (a video goes through ``FrameRunner.stream``).
"""

from .runner import FrameRunner
from .spatial import TilePlan, run_tiled
from .temporal import ChunkPlan, ChunkResult, stream_chunks

__all__ = ["ChunkPlan", "ChunkResult", "FrameRunner", "TilePlan", "run_tiled", "stream_chunks"]
