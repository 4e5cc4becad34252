"""Attention Specialization Routing (ASR): each head of an attention layer attends globally,
within its own frame, or within a local 3D window.

Tokens of a clip form a grid ``(t, h, w)`` flattened in raster order: token ``l`` sits at
``(l // (h*w), (l // w) % h, l % w)``. Every head belongs to one of :data:`HEAD_GROUPS`:

* ``global``: all ``t*h*w`` tokens of all frames;
* ``intra``: the ``h*w`` tokens of its own frame;
* ``window``: a 3D neighbourhood of ``window = (wt, wh, ww)`` tokens, **clamped at borders**: along
  each axis of size ``n`` a query at ``i`` sees keys ``[s, s + e)`` with ``e = min(w, n)`` and
  ``s = clamp(i - w // 2, 0, n - e)``. Near a border the window slides inwards instead of being
  cut, so every query sees exactly ``prod(e)`` keys (as in neighbourhood attention, NATTEN); for
  odd ``w`` away from borders the window is centred on the query.

The three groups are the same construct with different per-axis extents (``global`` = the whole
grid, ``intra`` = ``(1, h, w)``), which :func:`group_mask` and :func:`group_mask_rows` use.

Two implementations of :func:`routed_attention` give the same result (fp32: within 1e-5):

* ``reference``: dense attention with the boolean ``(L, L)`` mask of each group (tests only);
* ``fast``: ``global`` heads via SDPA; ``intra`` heads via SDPA with frames folded into the batch;
  ``window`` heads via *halo tiles*: queries are cut into tiles of ``tile`` tokens, the keys and
  values of each tile's halo (the union of its queries' windows, a box of at most
  ``tile + window - 1`` tokens per axis) are gathered into dense blocks, and SDPA runs on the tiles
  as a batch with a small per-tile additive bias (0 / -inf) that removes the halo keys outside each
  query's own window. No ``(L, L)`` matrix is ever built; the work is ``L * prod(tile + window - 1)``
  instead of ``L * L``, and every SDPA block is a dense block of real keys: there is no block-sparsity
  to look up and no mask function evaluated per element (as a FlexAttention ``mask_mod`` over
  raster tokens would be), only one bias add. CUDA runs all tiles in one SDPA call (halo length
  padded to a multiple of 16 for the memory-efficient kernel); CPU runs a few tiles per call so that
  the gathered blocks stay small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

HEAD_GROUPS = ("global", "intra", "window")
IMPLS = ("reference", "fast", "auto")

Grid = tuple[int, int, int]

# Query tile (t, h, w) of the window path. Larger tiles mean fewer, bigger SDPA blocks and less
# duplication of gathered keys, but a larger halo per query (work per query: prod(tile + window - 1)
# keys). CPU: the least CPU time in a sweep on the `restore bench attention` cpu preset
# (docs/BENCHMARKS.md). CUDA: 128 queries per tile (one flash/mem-efficient query block) with a
# 3 x 12 x 20 = 720-key halo, 2.2% of a dense head's keys at Wan size; not yet measured on a GPU.
DEFAULT_TILE_CPU: Grid = (1, 4, 4)
DEFAULT_TILE_CUDA: Grid = (1, 8, 16)
# bytes of gathered keys per SDPA call of the CPU window path (the tiles are processed in chunks)
CPU_CHUNK_BYTES = 1 << 22


def _check_grid(grid: Sequence[int], window: Sequence[int]) -> tuple[Grid, Grid]:
    grid = tuple(int(n) for n in grid)
    window = tuple(int(n) for n in window)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be 3 positive ints (t, h, w), got {grid}")
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"window must be 3 positive ints (t, h, w), got {window}")
    return grid, window  # type: ignore[return-value]


def group_extent(grid: Sequence[int], group: str, window: Sequence[int] = (3, 5, 5)) -> Grid:
    """Per-axis window ``(t, h, w)`` that ``group`` amounts to on ``grid`` (before clamping)."""
    grid, window = _check_grid(grid, window)
    if group == "global":
        return grid
    if group == "intra":
        return (1, grid[1], grid[2])
    if group == "window":
        return window
    raise ValueError(f"unknown head group {group!r} (expected one of {', '.join(HEAD_GROUPS)})")


def _window_starts(pos: Tensor, n: int, w: int) -> Tensor:
    """First key index of the clamped window of each query position ``pos`` on an axis of size n."""
    return (pos - w // 2).clamp(0, n - min(w, n))


def _axis_masks(grid: Grid, extent: Grid, rows: Tensor) -> list[Tensor]:
    """For flat query indices ``rows`` (S,): per axis a (S, n_axis) bool of keys in the window."""
    t, h, w = grid
    coords = (rows // (h * w), (rows // w) % h, rows % w)
    masks = []
    for pos, n, e in zip(coords, grid, extent):
        start = _window_starts(pos, n, e)[:, None]
        keys = torch.arange(n, device=rows.device)[None, :]
        masks.append((keys >= start) & (keys < start + min(e, n)))
    return masks


def group_mask_rows(
    grid: Sequence[int], group: str, rows: Tensor, window: Sequence[int] = (3, 5, 5)
) -> torch.BoolTensor:
    """Rows ``rows`` (S,) of :func:`group_mask`: (S, L) bool, True where query may attend key.

    Costs ``S * L``, so calibration can look at sampled queries of long clips.
    """
    grid, window = _check_grid(grid, window)
    mt, mh, mw = _axis_masks(grid, group_extent(grid, group, window), rows.long())
    return (mt[:, :, None, None] & mh[:, None, :, None] & mw[:, None, None, :]).reshape(len(rows), -1)


def group_mask(
    grid: Sequence[int], group: str, window: Sequence[int] = (3, 5, 5), device: torch.device | str | None = None
) -> torch.BoolTensor:
    """Dense (L, L) bool attention mask of ``group`` on ``grid``; True = query (row) attends key.

    ``L = t*h*w``: only for tests and small grids (the fast path never builds it).
    """
    L = math.prod(_check_grid(grid, window)[0])
    return group_mask_rows(grid, group, torch.arange(L, device=device), window)


def _reference(q: Tensor, k: Tensor, v: Tensor, grid: Grid, group: str, window: Grid, scale: float) -> Tensor:
    mask = group_mask(grid, group, window, device=q.device)
    logits = (q @ k.transpose(-1, -2)) * scale
    logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(dim=-1) @ v


def _intra(q: Tensor, k: Tensor, v: Tensor, grid: Grid, scale: float) -> Tensor:
    # Raster order keeps each frame contiguous, so frames fold into the batch as a reshape.
    b, n, L, _ = q.shape
    t, frame = grid[0], grid[1] * grid[2]

    def fold(x: Tensor) -> Tensor:
        return x.reshape(b, n * t, frame, x.shape[-1])

    return F.scaled_dot_product_attention(fold(q), fold(k), fold(v), scale=scale).reshape(b, n, L, v.shape[-1])


@lru_cache(maxsize=32)
def _halo_plan(grid: Grid, window: Grid, tile: Grid, align: int, device: torch.device, dtype: torch.dtype):
    """Index tensors for the halo-tile window path; cached per shape, device and dtype.

    Returns ``(query_index, key_index, bias, inverse)``:
    ``query_index`` (n_tiles, Q) flat token of every query slot (partial tiles at the far border
    repeat their last token, so all tiles have Q = prod(tile) slots);
    ``key_index`` (n_tiles, K) flat token of every halo slot, K = prod(min(tile + window - 1, n))
    rounded up to a multiple of ``align`` (padding slots repeat token 0 and are masked out);
    ``bias`` (n_tiles, Q, K) 0 inside the query's window, -inf outside;
    ``inverse`` (L,) slot (in ``query_index.flatten()``) holding each token's output.
    """
    q_axes, k_axes, m_axes = [], [], []
    for n, w, b in zip(grid, window, tile):
        b = min(b, n)
        n_tiles = -(-n // b)
        # query positions per tile, clamped so the last (partial) tile repeats its last token
        qpos = (torch.arange(n_tiles)[:, None] * b + torch.arange(b)[None, :]).clamp(max=n - 1)
        k_len = min(b + w - 1, n)
        # windows start monotonically in the query position, so a tile's windows are covered by
        # [start(first query), start(last query) + w), at most b + w - 1 long; shifting the halo
        # left to keep it inside the axis keeps that cover
        hstart = _window_starts(qpos[:, 0], n, w).clamp(max=n - k_len)
        kpos = hstart[:, None] + torch.arange(k_len)[None, :]
        qstart = _window_starts(qpos, n, w)
        inside = (kpos[:, None, :] >= qstart[:, :, None]) & (kpos[:, None, :] < qstart[:, :, None] + min(w, n))
        q_axes.append(qpos)
        k_axes.append(kpos)
        m_axes.append(inside)
    (qt, qh, qw), (kt, kh, kw), (mt, mh, mw) = q_axes, k_axes, m_axes
    _, H, W = grid

    def flat(t: Tensor, h: Tensor, w: Tensor) -> Tensor:
        # per-axis (tiles, slots) positions -> (tiles_t * tiles_h * tiles_w, slots_t * slots_h * slots_w)
        index = (
            t[:, None, None, :, None, None] * H * W
            + h[None, :, None, None, :, None] * W
            + w[None, None, :, None, None, :]
        )
        return index.reshape(len(t) * len(h) * len(w), -1)

    query, key = flat(qt, qh, qw), flat(kt, kh, kw)
    inside = (
        mt[:, None, None, :, None, None, :, None, None]
        & mh[None, :, None, None, :, None, None, :, None]
        & mw[None, None, :, None, None, :, None, None, :]
    ).reshape(query.shape[0], query.shape[1], key.shape[1])
    pad = -key.shape[1] % align
    key = F.pad(key, (0, pad))
    inside = F.pad(inside, (0, pad))
    bias = torch.zeros(inside.shape, dtype=dtype).masked_fill_(~inside, float("-inf"))
    # every token appears at least once among the query slots; any occurrence holds its output
    inverse = torch.empty(math.prod(grid), dtype=torch.long)
    inverse[query.reshape(-1)] = torch.arange(query.numel())
    return query.to(device), key.to(device), bias.to(device), inverse.to(device)


def _window(
    q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float, tile: Grid | None,
    align: int | None = None, chunk_bytes: int | None = None,
) -> Tensor:
    """Window heads by halo tiles. ``align``: halo slots rounded up to a multiple of it;
    ``chunk_bytes``: gathered keys per SDPA call (None: all tiles at once). Defaults per device."""
    b, n, L, d = q.shape
    if q.is_cuda:
        # one batched SDPA call; a halo length that is a multiple of 16 keeps the biased
        # memory-efficient kernel on its aligned path
        tile, align = tile or DEFAULT_TILE_CUDA, align or 16
    else:
        tile, align, chunk_bytes = tile or DEFAULT_TILE_CPU, align or 1, chunk_bytes or CPU_CHUNK_BYTES
    query, key, bias, inverse = _halo_plan(grid, window, tuple(tile), align, q.device, q.dtype)
    n_tiles, n_q, n_k = bias.shape

    # Token-major (L, B*heads, D): each gathered token is one contiguous row of B*heads*D values,
    # and the (tiles, B*heads, slots, D) layout lets the bias broadcast over B*heads with stride 0
    # (broadcast over a leading batch dim instead, CPU SDPA is several times slower).
    def token_major(x: Tensor) -> Tensor:
        return x.permute(2, 0, 1, 3).reshape(L, b * n, x.shape[-1]).contiguous()

    def tiles(x: Tensor, index: Tensor) -> Tensor:
        x = x.index_select(0, index.reshape(-1))
        return x.view(index.shape[0], index.shape[1], b * n, x.shape[-1]).transpose(1, 2)

    qt, kt, vt = token_major(q), token_major(k), token_major(v)
    # On CPU the gathered halos are processed a few tiles at a time: small buffers stay in cache
    # and are reused by the allocator, where one big gather costs fresh pages on every call.
    step = n_tiles if chunk_bytes is None else max(1, chunk_bytes // (n_k * b * n * d * q.element_size()))
    outs = []
    for s in range(0, n_tiles, step):
        e = min(s + step, n_tiles)
        out = F.scaled_dot_product_attention(
            tiles(qt, query[s:e]), tiles(kt, key[s:e]), tiles(vt, key[s:e]), attn_mask=bias[s:e, None], scale=scale
        )  # (tiles, B*heads, Q, Dv)
        outs.append(out.transpose(1, 2).reshape((e - s) * n_q, b * n, -1))
    out = torch.cat(outs).index_select(0, inverse)
    return out.view(L, b, n, -1).permute(1, 2, 0, 3)


def routed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    grid: tuple[int, int, int],
    routing: Sequence[str],
    window: tuple[int, int, int] = (3, 5, 5),
    impl: str = "auto",
    *,
    scale: float | None = None,
    tile: tuple[int, int, int] | None = None,
) -> Tensor:
    """Multi-head attention where each head attends as its group in ``routing`` says.

    Args:
        q, k, v: (B, heads, L, D) with ``L = t*h*w`` tokens in raster order (t, h, w)
            (``v`` may have its own last dimension).
        grid: token grid ``(t, h, w)``.
        routing: one of :data:`HEAD_GROUPS` per head.
        window: ``(t, h, w)`` window of ``window`` heads in tokens, clamped at borders (module doc).
        impl: ``"reference"`` (dense masked attention, tests only), ``"fast"`` or ``"auto"`` (fast).
        scale: softmax scale, default ``D ** -0.5`` as in SDPA.
        tile: query tile ``(t, h, w)`` of the fast window path; default per device.

    Returns:
        (B, heads, L, Dv), heads in the order of ``routing`` (ready for the output projection).
    """
    if q.dim() != 4 or k.shape[:3] != q.shape[:3] or v.shape[:3] != q.shape[:3]:
        shapes = ", ".join(str(tuple(x.shape)) for x in (q, k, v))
        raise ValueError(f"q, k, v must be (B, heads, L, D) alike, got {shapes}")
    grid, window = _check_grid(grid, window)
    if math.prod(grid) != q.shape[2]:
        raise ValueError(f"grid {grid} has {math.prod(grid)} tokens but q has L={q.shape[2]}")
    if len(routing) != q.shape[1]:
        raise ValueError(f"routing has {len(routing)} entries for {q.shape[1]} heads")
    unknown = set(routing) - set(HEAD_GROUPS)
    if unknown:
        raise ValueError(f"unknown head group(s) {sorted(unknown)} (expected {', '.join(HEAD_GROUPS)})")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale

    outputs, order = [], []
    for group in HEAD_GROUPS:
        heads = [i for i, g in enumerate(routing) if g == group]
        if not heads:
            continue
        # a contiguous run of heads is a view; scattered heads are gathered once
        sel = slice(heads[0], heads[-1] + 1) if heads == list(range(heads[0], heads[-1] + 1)) else heads
        qg, kg, vg = q[:, sel], k[:, sel], v[:, sel]
        if impl == "reference":
            out = _reference(qg, kg, vg, grid, group, window, scale)
        elif group == "global":
            out = F.scaled_dot_product_attention(qg, kg, vg, scale=scale)
        elif group == "intra":
            out = _intra(qg, kg, vg, grid, scale)
        else:
            out = _window(qg, kg, vg, grid, window, scale, tile)
        outputs.append(out)
        order.extend(heads)
    if len(outputs) == 1:
        return outputs[0]
    out = torch.cat(outputs, dim=1)
    if order == sorted(order):
        return out
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return out.index_select(1, inverse.to(out.device))
