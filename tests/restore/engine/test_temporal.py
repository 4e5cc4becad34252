import pytest
import torch

from restore.engine.temporal import ChunkPlan, stream_chunks


def _frames(n, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8), 100 + 3 * i) for i in range(n)]


def _per_frame(frames):
    """A model without temporal context: each output frame depends on its own input only."""
    x = torch.stack(frames).permute(0, 3, 1, 2).float() / 255
    return x.sqrt()


def _temporal(frames):
    """A model with temporal context: every output depends on the chunk's mean."""
    x = torch.stack(frames).permute(0, 3, 1, 2).float() / 255
    return 0.5 * x + 0.5 * x.mean(0, keepdim=True)


def _collect(results):
    frames, pts = [], []
    for r in results:
        frames.append(r.frames)
        pts += r.pts
    return torch.cat(frames), pts


@pytest.mark.parametrize("n", [1, 7, 8, 9, 23])
@pytest.mark.parametrize("chunk,overlap", [(1, 0), (4, 0), (4, 1), (6, 3), (8, 7)])
def test_chunked_equals_whole_clip_for_model_without_temporal_context(n, chunk, overlap):
    frames = _frames(n)
    out, pts = _collect(stream_chunks(frames, ChunkPlan(chunk, overlap), _per_frame))
    whole = _per_frame([f for f, _ in frames])
    assert out.shape == whole.shape
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    assert pts == [p for _, p in frames]


def test_overlap_frames_are_crossfaded_between_chunks():
    frames = _frames(10)
    plan = ChunkPlan(6, 2)  # chunks [0,6) and [4,10): overlap frames 4, 5
    out, _ = _collect(stream_chunks(frames, plan, _temporal))
    a = _temporal([f for f, _ in frames[0:6]])
    b = _temporal([f for f, _ in frames[4:10]])
    torch.testing.assert_close(out[:4], a[:4])
    torch.testing.assert_close(out[4], (2 / 3) * a[4] + (1 / 3) * b[0])
    torch.testing.assert_close(out[5], (1 / 3) * a[5] + (2 / 3) * b[1])
    torch.testing.assert_close(out[6:], b[2:])


@pytest.mark.parametrize("skip", [{0}, {0, 1}, {1}, {0, 1, 2, 3}])
def test_skipping_done_chunks_gives_the_same_remaining_frames(skip):
    """Resume: chunks already done are not re-yielded, the rest is identical to a full run."""
    frames = _frames(20)
    plan = ChunkPlan(6, 2)
    full = list(stream_chunks(frames, plan, _temporal))
    calls = []

    def counting(fs):
        calls.append(len(fs))
        return _temporal(fs)

    resumed = list(stream_chunks(frames, plan, counting, needs=lambda c: c not in skip))
    assert [r.index for r in resumed] == [r.index for r in full]
    for a, b in zip(full, resumed):
        assert a.pts == b.pts
        if b.index in skip:
            assert b.frames is None
        else:
            torch.testing.assert_close(a.frames, b.frames)
    # only chunks needed, plus the one right before each needed chunk, ran the model
    needed = {r.index for r in full} - skip
    expected = needed | {c - 1 for c in needed if c - 1 in skip}
    assert len(calls) == len(expected)


@pytest.mark.parametrize("chunk,overlap", [(6, 2), (6, 3), (6, 4), (5, 3), (8, 7)])
@pytest.mark.parametrize("first_needed", [1, 2, 3, 6])
def test_resume_is_identical_when_the_overlap_is_more_than_the_stride(chunk, overlap, first_needed):
    """With an overlap above half the chunk a frame is cross-faded from more than two chunks, so
    resume must run every chunk whose output reaches the first needed one (ceil(K/S) of them)."""
    frames = _frames(30)
    plan = ChunkPlan(chunk, overlap)
    full = list(stream_chunks(frames, plan, _temporal))
    resumed = list(stream_chunks(frames, plan, _temporal, needs=lambda c: c >= first_needed))
    assert [r.index for r in resumed] == [r.index for r in full]
    for a, b in zip(full[first_needed:], resumed[first_needed:]):
        torch.testing.assert_close(b.frames, a.frames, rtol=0, atol=0)


def test_chunks_without_overlap_need_no_chunk_before_them_on_resume():
    calls = []

    def counting(fs):
        calls.append(len(fs))
        return _temporal(fs)

    list(stream_chunks(_frames(20), ChunkPlan(4, 0), counting, needs=lambda c: c >= 3))
    assert len(calls) == 2  # chunks 3 and 4 only: nothing is cross-faded into chunk 3


def test_only_one_chunk_of_frames_is_held():
    held = []

    def source():
        for i, item in enumerate(_frames(50)):
            held.append(i)
            yield item

    consumed_when_processed = []

    def model(fs):
        consumed_when_processed.append(len(held))
        return _per_frame(fs)

    list(stream_chunks(source(), ChunkPlan(5, 1), model))
    # at each model call, at most chunk + 1 (lookahead) frames beyond those finalised were read
    for call, consumed in enumerate(consumed_when_processed):
        assert consumed <= call * 4 + 5 + 1


def test_invalid_plans_are_refused():
    with pytest.raises(ValueError, match="--chunk"):
        ChunkPlan(0)
    with pytest.raises(ValueError, match="--overlap"):
        ChunkPlan(4, 4)
