"""Which tokens of a clip a masked method hides: boolean masks B x N over a (t, h, w) token grid,
tokens in (t h w) order, True = masked (to be predicted), False = visible (the encoder's input).

* ``tube_mask``: VideoMAE's tube masking (Tong et al., 2022, section 3.3): one random spatial
  mask per clip, the same at every time step, so a masked patch cannot be copied from the
  frame before. Exactly ``int(ratio * h * w)`` patches per frame are masked
  (``TubeMaskingGenerator`` in MCG-NJU/VideoMAE ``masking_generator.py``).
* ``random_mask``: masking of ``int(ratio * N)`` tokens drawn anywhere in space-time (the
  VideoMAE ablation, table 1c).
* ``multiblock_mask``: V-JEPA's multi-block masking (Bardes et al., 2024, section 3.2): the
  union of ``blocks`` spatial rectangles, each of ``scale`` of the frame's area and an aspect
  ratio drawn from ``aspect``, each covering the whole clip in time; one block size per batch,
  a position per block and clip (``MaskCollator`` in facebookresearch/jepa
  ``src/masks/multiblock3d.py``). ``trimmed_indices`` cuts every clip to the batch's smallest
  context and target counts, so that a batch is one tensor.

``visible_and_masked(mask)`` turns a mask with the same count in every row into index tensors
(B x K visible, B x M masked) for ``torch.gather``.
"""
from __future__ import annotations

import math

import torch
from einops import repeat


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None,
              device=None) -> torch.Tensor:
    """B x (t h w): the same ``int(ratio * h * w)`` of the h x w patches masked at every time step."""
    t, h, w = grid
    hidden = int(ratio * h * w)
    order = torch.rand(batch, h * w, generator=generator).argsort(1)  # a random permutation per clip
    frame = torch.zeros(batch, h * w, dtype=torch.bool).scatter_(1, order[:, :hidden], True)  # B x (h w)
    return repeat(frame, "b hw -> b (t hw)", t=t).to(device)


def random_mask(batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """B x (t h w): ``int(ratio * N)`` tokens masked, drawn uniformly over space and time."""
    n = math.prod(grid)
    order = torch.rand(batch, n, generator=generator).argsort(1)
    return torch.zeros(batch, n, dtype=torch.bool).scatter_(1, order[:, :int(ratio * n)], True).to(device)


MASK_FNS = {"tube": tube_mask, "random": random_mask}


def block_size(grid: tuple[int, int, int], scale: float, aspect: tuple[float, float],
               generator: torch.Generator | None = None) -> tuple[int, int]:
    """(height, width) in tokens of one block, as jepa's ``_MaskGenerator._sample_block_size``
    (``src/masks/multiblock3d.py``): the token count ``int(h * w * scale)``, floored before the sides are
    taken, an aspect ratio (h / w) drawn uniformly from ``aspect``, each side rounded and at most the
    frame's; at least 1 (where the floored count is 0, which jepa would make an empty block)."""
    _, h, w = grid
    lo, hi = aspect
    ratio = lo + torch.rand(1, generator=generator).item() * (hi - lo)
    tokens = int(h * w * scale)
    bh = min(h, max(1, round(math.sqrt(tokens * ratio))))
    bw = min(w, max(1, round(math.sqrt(tokens / ratio))))
    return bh, bw


def multiblock_mask(batch: int, grid: tuple[int, int, int], *, blocks: int = 8, scale: float = 0.15,
                    aspect: tuple[float, float] = (0.75, 1.5), generator: torch.Generator | None = None,
                    device=None) -> torch.Tensor:
    """B x (t h w): True inside the union of ``blocks`` rectangles of one size (drawn per batch) at random
    positions (drawn per clip and block), each through every time step. Rows may differ in their counts;
    ``trimmed_indices`` evens them out."""
    t, h, w = grid
    bh, bw = block_size(grid, scale, aspect, generator)
    frame = torch.ones(batch, h, w, dtype=torch.bool)
    for i in range(batch):
        for _ in range(100):  # drawn again while the blocks leave no context (multiblock3d.py's loop)
            frame[i] = False
            for _ in range(blocks):
                top = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
                frame[i, top:top + bh, left:left + bw] = True
            if not frame[i].all():
                break
        else:
            raise ValueError(f"{blocks} blocks of {bh} x {bw} tokens leave no context in a {h} x {w} frame.")
    return repeat(frame, "b h w -> b (t h w)", t=t).to(device)


def trimmed_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context B x K, targets B x M): indices of the unmasked and the masked tokens of each clip, in increasing
    order, each row cut to the batch's smallest count (its first K and M), as jepa's collator does
    (``min_keep_enc``, ``min_keep_pred``); a token cut from a row is neither context nor target."""
    if bool(mask.all(1).any()):
        raise ValueError("a mask hides every token of a clip: no context is left.")
    if not bool(mask.any(1).all()):
        raise ValueError("a mask hides no token of a clip: nothing to predict.")
    context = [row.nonzero().flatten() for row in ~mask]
    targets = [row.nonzero().flatten() for row in mask]
    k, m = min(len(c) for c in context), min(len(x) for x in targets)
    return torch.stack([c[:k] for c in context]), torch.stack([x[:m] for x in targets])


def visible_and_masked(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B x K indices of the visible tokens, B x M indices of the masked ones), each in increasing order.
    Every row of ``mask`` must mask the same number of tokens."""
    counts = mask.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("every clip of a batch must have the same number of masked tokens.")
    b = mask.shape[0]
    visible = (~mask).nonzero()[:, 1].view(b, -1)
    masked = mask.nonzero()[:, 1].view(b, -1)
    return visible, masked
