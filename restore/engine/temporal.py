"""Temporal chunking with overlap cross-fading, streamed over a frame iterator.

Chunk ``c`` covers input frames ``[c*S, c*S + N)`` with ``N = chunk`` and stride ``S = N - K``
(``K = overlap``). The ``K`` frames shared by chunks ``c`` and ``c+1`` are cross-faded linearly:
frame ``j`` of the overlap takes weight ``(j+1)/(K+1)`` from chunk ``c+1``. Chunk ``c`` therefore
*finalises* frames ``[c*S, (c+1)*S)`` (the last chunk finalises everything left). Only one chunk of
input frames and ``K`` output frames are held at a time, so memory does not grow with video length.

For resume, the caller says which chunks it still ``needs``; chunks before those are read and
skipped without running the model, except the :attr:`ChunkPlan.context` chunks right before a
needed chunk, whose output tails reach it through the cross-fades (one when ``K <= S``; more when
the overlap is larger than the stride, as a frame is then faded from more than two chunks). The
result is identical to an uninterrupted run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChunkPlan:
    """``chunk``: frames per model call (N >= 1); ``overlap``: frames shared by neighbours (0 <= K < N)."""

    chunk: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"--chunk must be >= 1, got {self.chunk}")
        if not 0 <= self.overlap < self.chunk:
            raise ValueError(f"--overlap must be in [0, chunk), got {self.overlap} with chunk {self.chunk}")

    @property
    def stride(self) -> int:
        return self.chunk - self.overlap

    @property
    def context(self) -> int:
        """Chunks before a chunk whose outputs reach its frames through the cross-fades:
        ``ceil(K / S)`` (0 without overlap). Chunk ``c``'s tail is faded with chunk ``c-1``'s on
        the frames they share, and when ``K > S`` part of that tail was itself faded with chunk
        ``c-2``'s, and so on; ``ceil(K / S)`` chunks back, no faded frame is left in the tail."""
        return -(-self.overlap // self.stride)

    def fade_in(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """Weights ``(n,)`` of the newer chunk over the first ``n <= K`` frames of an overlap."""
        return torch.arange(1, n + 1, device=device, dtype=torch.float32) / (self.overlap + 1)


@dataclass
class ChunkResult:
    """Frames finalised by one chunk.

    ``frames``: the ``n`` output frames, None when the chunk was skipped for resume; from
    :func:`stream_chunks` the ``(n, C, H, W)`` float32 that ``process`` returns (cross-faded), from
    :meth:`~restore.engine.runner.FrameRunner.stream` ``(n, H, W, C)`` integers like its input.
    ``pts``: the input timestamps of those frames; ``first_index``: index of the first frame.
    """

    index: int
    first_index: int
    pts: list[int]
    frames: torch.Tensor | None
    is_last: bool


def stream_chunks(
    frames: Iterable[tuple[torch.Tensor, int]],
    plan: ChunkPlan,
    process: Callable[[list[torch.Tensor]], torch.Tensor],
    needs: Callable[[int], bool] = lambda c: True,
) -> Iterator[ChunkResult]:
    """Run ``process`` over overlapping chunks of ``frames`` and yield finalised output frames.

    ``frames`` yields ``(frame, pts)`` with frames in any layout ``process`` accepts;
    ``process(list of n frames) -> (n, C, H, W)`` float tensor. ``needs(c)`` says whether chunk ``c``'s
    finalised frames are wanted (False: skipped when resuming). Every chunk is yielded, in order,
    with ``frames=None`` when it was not needed.
    """
    source = iter(frames)
    window: deque[tuple[torch.Tensor, int]] = deque()
    lookahead: list[tuple[torch.Tensor, int]] = []

    def fill() -> bool:
        """Fill the window to N frames; return True if more frames follow it."""
        while len(window) < plan.chunk:
            item = lookahead.pop() if lookahead else next(source, None)
            if item is None:
                return False
            window.append(item)
        if not lookahead:
            item = next(source, None)
            if item is None:
                return False
            lookahead.append(item)
        return True

    tail: torch.Tensor | None = None  # output of the previous chunk's last K frames
    index = 0
    first = 0
    more = fill()
    while window:
        is_last = not more
        wanted = needs(index)
        # a skipped chunk still runs when a needed chunk within `context` after it takes its tail
        run_model = wanted or (not is_last and any(needs(index + j) for j in range(1, plan.context + 1)))
        n = len(window)
        keep = n if is_last else plan.stride
        out = None
        if run_model:
            out = process([f for f, _ in window]).float()
            if tail is not None and plan.overlap:
                k = min(plan.overlap, n)
                w = plan.fade_in(k, out.device).view(k, 1, 1, 1)
                out[:k] = w * out[:k] + (1 - w) * tail[:k].to(out.device)
            tail = out[plan.stride :].clone() if not is_last and plan.overlap else None
        else:
            tail = None
        pts = [p for _, p in list(window)[:keep]]
        yield ChunkResult(index, first, pts, out[:keep] if (wanted and out is not None) else None, is_last)
        if is_last:
            return
        for _ in range(plan.stride):
            window.popleft()
        first += plan.stride
        index += 1
        more = fill()
