"""Region multi-head self-attention without an ``L x L`` mask.

Every token attends only to the tokens of its own region. The published RAT code runs full
attention plus a dense ``[L, L]`` additive mask, which costs ``O(L^2)`` memory and FLOPs whatever
the partition. Here tokens are sorted by region, which makes the attention pattern
block-diagonal, and only the diagonal blocks are computed:

* ``"bucketed"`` (CPU default): regions are padded to a few lengths (at most 25 % padding, four
  sizes per octave) and each group of equal-length regions is one batched
  ``scaled_dot_product_attention`` call with a key-padding mask. Cost ``~sum(n_i^2)``.
* ``"flex"`` (CUDA default): FlexAttention with a document mask over the region-sorted tokens;
  the compiled kernel skips the blocks outside the diagonal.
* ``"dense"``: the reference, SDPA with a dense boolean ``[L, L]`` mask (tests and benchmarks).

A ``RegionLayout`` holds the sort order and the buckets of one partition; build it once per
forward and reuse it in every layer that attends over the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "bucketed", "flex", "dense")


def _bucket_length(n: torch.Tensor) -> torch.Tensor:
    """Round region sizes up to ``{4, 5, 6, 7} * 2^k``: at most 25 % padding, few distinct sizes."""
    n = n.clamp(min=1)
    octave = torch.floor(torch.log2(n.double())).long()
    step = (2 ** (octave - 2)).clamp(min=1)
    return ((n + step - 1) // step) * step


@dataclass
class Bucket:
    """The ``n`` regions padded to one length ``P``.

    ``index``: ``(n * P,)`` rows of the flattened ``B * L`` tokens (padding points at row 0);
    ``valid``: ``(n, P)`` real (not padding) slots; ``rows``/``dest``: the real slots as flat
    positions in ``n * P`` and the token rows they belong to (for writing results back).
    """

    index: torch.Tensor
    valid: torch.Tensor
    rows: torch.Tensor
    dest: torch.Tensor


@dataclass
class RegionLayout:
    """Region structure of a batch of token label maps, shared by every attention layer.

    ``labels``: ``(B, L)`` int64 region id of each token (any non-negative ids, need not be
    contiguous). ``buckets``: one ``Bucket`` per padded length. ``order``/``segments``: per image,
    the stable sort of tokens by region and the sorted region ids (for the FlexAttention path).
    """

    labels: torch.Tensor
    buckets: list[Bucket]
    order: torch.Tensor
    segments: torch.Tensor
    _block_mask: object = field(default=None, repr=False)

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> "RegionLayout":
        """``labels``: ``(B, L)`` integer region ids -> layout on the same device."""
        if labels.dim() != 2:
            raise ValueError(f"labels must be (B, L), got {tuple(labels.shape)}")
        labels = labels.long()
        b, length = labels.shape
        order = torch.argsort(labels, dim=1, stable=True)
        segments = torch.gather(labels, 1, order)
        # one global id per (image, region): images never share a region
        num_ids = int(labels.max()) + 1
        flat_ids = (labels + torch.arange(b, device=labels.device)[:, None] * num_ids).reshape(-1)
        flat_order = torch.argsort(flat_ids, stable=True)
        _, counts = torch.unique_consecutive(flat_ids[flat_order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        padded = _bucket_length(counts)
        buckets = []
        for p in torch.unique(padded).tolist():
            sel = padded == p
            offsets = torch.arange(p, device=labels.device)
            valid = offsets[None, :] < counts[sel][:, None]
            pos = (starts[sel][:, None] + offsets[None, :]).clamp(max=flat_order.numel() - 1)
            index = torch.where(valid, flat_order[pos], torch.zeros_like(pos)).reshape(-1)
            rows = torch.nonzero(valid.reshape(-1)).squeeze(1)
            buckets.append(Bucket(index, valid, rows, index[rows]))
        return cls(labels=labels, buckets=buckets, order=order, segments=segments)

    @property
    def num_regions(self) -> int:
        return sum(int(bucket.valid.shape[0]) for bucket in self.buckets)

    def ideal_fraction(self) -> float:
        """``sum(n_i^2) / (B * L^2)``: the FLOPs of region attention relative to dense."""
        b, length = self.labels.shape
        total = sum(float(bucket.valid.sum(1).double().pow(2).sum()) for bucket in self.buckets)
        return total / (b * length * length)

    def block_mask(self):
        """FlexAttention ``BlockMask`` for the region-sorted tokens (built once per layout)."""
        from torch.nn.attention.flex_attention import create_block_mask

        if self._block_mask is None:
            seg = self.segments

            def same_region(b, h, q_idx, kv_idx):
                return seg[b, q_idx] == seg[b, kv_idx]

            b, length = seg.shape
            self._block_mask = create_block_mask(same_region, b, None, length, length, device=seg.device)
        return self._block_mask


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def dense_region_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reference: SDPA with a dense ``(B, 1, L, L)`` same-region mask. Shapes as ``region_attention``."""
    mask = labels[:, None, :, None] == labels[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _bucketed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: RegionLayout) -> torch.Tensor:
    b, h, length, d = q.shape
    # (B, H, L, d) x3 -> (B*L, 3, H, d): a region's tokens are rows of one table, gathered at once
    qkv = torch.stack([q, k, v], dim=1).permute(0, 3, 1, 2, 4).reshape(b * length, 3, h, d)
    out = q.new_empty(b * length, h, d)
    for bucket in layout.buckets:
        n, p = bucket.valid.shape
        qb, kb, vb = qkv.index_select(0, bucket.index).view(n, p, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        ob = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bucket.valid[:, None, None, :])  # (n, H, P, d)
        out.index_copy_(0, bucket.dest, ob.transpose(1, 2).reshape(n * p, h, d).index_select(0, bucket.rows))
    return out.view(b, length, h, d).transpose(1, 2)


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: RegionLayout, compiled: bool) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    order = layout.order[:, None, :, None]
    qs, ks, vs = (torch.gather(t, 2, order.expand(-1, t.shape[1], -1, t.shape[-1])) for t in (q, k, v))
    fn = _compiled_flex() if compiled else flex_attention
    os_ = fn(qs, ks, vs, block_mask=layout.block_mask())
    out = torch.empty_like(os_)
    out.scatter_(2, order.expand(-1, os_.shape[1], -1, os_.shape[-1]), os_)
    return out


def region_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: RegionLayout | torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention restricted to same-region tokens.

    ``q``, ``k``, ``v``: ``(B, H, L, d)``; ``layout``: a ``RegionLayout`` or ``(B, L)`` labels.
    Returns ``(B, H, L, d)``. Softmax scale is ``d ** -0.5`` (the published code's
    ``num_heads ** -0.5`` is a bug). ``backend``: ``"auto"`` picks ``"flex"`` (compiled) on CUDA
    and ``"bucketed"`` elsewhere.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown region-attention backend {backend!r} (known: {', '.join(BACKENDS)})")
    if not isinstance(layout, RegionLayout):
        layout = RegionLayout.from_labels(layout)
    if backend == "auto":
        backend = "flex" if q.is_cuda else "bucketed"
    if backend == "dense":
        return dense_region_attention(q, k, v, layout.labels)
    if backend == "flex":
        return _flex(q, k, v, layout, compiled=q.is_cuda)
    return _bucketed(q, k, v, layout)
