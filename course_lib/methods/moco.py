"""MoCo on clips (He et al., *Momentum Contrast for Unsupervised Visual Representation
Learning*, CVPR 2020; the MLP head of MoCo v2, Chen et al. 2020).

The query clip goes through the backbone and projector; the key clip through a copy of
both whose weights follow the online ones by an exponential moving average (momentum m).
Negatives are the keys of earlier batches, kept in a queue, so their number does not
depend on the batch size. The default temperature 0.07 is MoCo v1's; v2 uses 0.2.

**Shuffling BN** (section 3.3 of the paper). With BatchNorm, a query and its positive key
computed in the same batch share batch statistics, a signal the model can exploit instead
of learning (the paper's "cheating"). The public code (``moco/builder.py``,
``_batch_shuffle_ddp``) gives each GPU's key encoder a random subset of the global batch.
``bn_groups`` does the same in one process: queries go through BatchNorm in ``bn_groups``
consecutive groups, keys in as many groups of a shuffled batch, so a key's statistics come
mostly from other videos than its query's. ``bn_groups=1`` turns it off (and is what a
SyncBatchNorm run, where the shuffle changes nothing, amounts to).

``debias`` adds a published fix for the static shortcut (``course_lib.debias``): BE and FAME
change the query clip, as both official codes do. With ``intra`` the query's intra-negative
is a key: it goes through the key encoder (no gradient, shuffled BN), like every negative
of MoCo's queue, and joins the logits as one more negative of its own query.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import debias as fixes
from ..augment import AugmentConfig, VideoAugment
from ..losses import MoCoQueue, moco_loss, momentum_update
from .common import accuracy, mlp, normalize, two_views
from ..settings import integer
from .registry import Method, register_method


def queue_length(paper: int, num_videos: int | None) -> int:
    """The queue when none is given: the paper's length, cut to half the training set.

    A queue longer than half the training set holds several keys of each video, which then
    act as false negatives, so on small datasets the queue is cut to fit.
    """
    if not num_videos:
        raise ValueError("MoCo needs num_videos (the size of the training set) to size its queue, or a queue length.")
    return min(paper, max(1, num_videos // 2))


@register_method("moco", augments=True)
class MoCo(Method):
    option_rules = {"bn_groups": integer(1), "debias": fixes.rule()}
    clips_per_video = 2

    def __init__(self, backbone: nn.Module, *, size: int = 112, augment: AugmentConfig = AugmentConfig(),
                 dim: int = 128, queue: int | None = None, momentum: float = 0.999, temperature: float = 0.07,
                 bn_groups: int = 2, num_videos: int | None = None, debias: str | list = "none"):
        super().__init__()
        if bn_groups < 1:
            raise ValueError(f"MoCo bn_groups must be >= 1, not {bn_groups}.")
        queue = queue or queue_length(65536, num_videos)
        self.backbone = backbone
        d = backbone.feature_dim
        self.projector = mlp([d, d, dim])
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.queue = MoCoQueue(queue, dim)
        self.augment = VideoAugment(augment, size=size)
        self.momentum, self.temperature, self.bn_groups = momentum, temperature, bn_groups
        self.debias = fixes.Debias(debias)

    def grouped(self, module: nn.Module, x: torch.Tensor, shuffle: bool = False) -> torch.Tensor:
        """``module`` on x (B x ...) in ``bn_groups`` groups, each with its own BatchNorm statistics; with
        ``shuffle`` the groups take a random permutation of x, and the output comes back in x's order."""
        if self.bn_groups == 1 or len(x) < 2:
            return module(x)
        perm = torch.randperm(len(x), device=x.device) if shuffle else torch.arange(len(x), device=x.device)
        out = torch.cat([module(part) for part in x[perm].chunk(self.bn_groups)])  # B x D, in perm's order
        return out[perm.argsort()]

    def query_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of the query clips x (B x C x T x H x W in [0, 1]), BatchNorm in groups."""
        return self.grouped(self.backbone, normalize(x))  # B x D

    def contrast(self, f1: torch.Tensor, x2: torch.Tensor, negative: torch.Tensor | None = None):
        """The MoCo loss of query features f1 (B x D, from the backbone) against keys of view x2; updates the queue.

        ``negative``: clips B x C x T x H x W whose keys are one more negative of each query (intra-negatives).
        Returns (loss, logits B x (1 + K) or B x (2 + K), key backbone features B x D). DualVar calls this with
        its own backbone features.
        """
        q = self.projector(f1)  # B x dim
        with torch.no_grad():
            momentum_update(self.key_backbone, self.backbone, self.momentum)
            momentum_update(self.key_projector, self.projector, self.momentum)
            kf = self.grouped(self.key_backbone, normalize(x2), shuffle=True)  # B x D, shuffled BN
            k = self.key_projector(kf)  # B x dim
            kn = None if negative is None else self.key_projector(
                self.grouped(self.key_backbone, normalize(negative), shuffle=True))  # B x dim
        loss, logits = moco_loss(q, k, self.queue.keys.clone(), self.temperature, negatives=kn)
        self.queue.enqueue(k)
        return loss, logits, kf

    def forward(self, batch: dict):
        x1, x2 = two_views(batch, self.augment, self.debias)  # B x C x T x H x W each, in [0, 1]
        x1, x2, xn = self.debias.seen(x1, x2, self.debias.negative(x1))
        loss, logits, _ = self.contrast(self.query_features(x1), x2, xn)
        logs = {"loss": loss.detach(), "acc": accuracy(logits, torch.zeros_like(logits[:, 0], dtype=torch.long))}
        if xn is not None:
            logs.update(self.debias.key_logs(logits, self.temperature))
        return loss, logs
